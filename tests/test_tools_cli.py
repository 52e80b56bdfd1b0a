"""Command lines of tools/*.py: flags before or after the KEY VALUE overrides (calr_plugin/utils/cli.py),
and tools/export_onnx.py decoding only the images it checks on."""
import argparse
import glob
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from calr_plugin.utils.cli import parse_args, split_argv
from conftest import REPO, TINY_OPTS, config_path
from tiny_calr import CPU_CALR, calr_cfg


def _parser():
    """A parser like tools/search.py's: required flags, a list flag, a switch, FastReID's opts."""
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--config-file", required=True)
    p.add_argument("--query", nargs="*", default=[])
    p.add_argument("--evaluate", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("opts", nargs=argparse.REMAINDER)
    return p


@pytest.mark.parametrize("argv", [
    ["--config-file", "c.yml", "MODEL.WEIGHTS", "w.pth", "--out", "o"],  # the README's order
    ["--config-file", "c.yml", "--out", "o", "MODEL.WEIGHTS", "w.pth"],  # FastReID's order
    ["MODEL.WEIGHTS", "w.pth", "--out=o", "--config-file", "c.yml"],
])
def test_flags_anywhere(argv):
    args = parse_args(_parser(), argv)
    assert (args.config_file, args.out, args.opts) == ("c.yml", "o", ["MODEL.WEIGHTS", "w.pth"])


def test_values_that_look_like_flags_and_lists_that_end_at_a_key():
    args = parse_args(_parser(), ["--config-file", "c", "--query", "a.jpg", "b.jpg", "SEED", "-1", "--out", "o",
                                  "--tolerance", "-1", "MODEL.PIXEL_MEAN", "[1, 2, 3]", "--evaluate"])
    assert args.query == ["a.jpg", "b.jpg"] and args.tolerance == -1.0 and args.evaluate
    assert args.opts == ["SEED", "-1", "MODEL.PIXEL_MEAN", "[1, 2, 3]"]


def test_a_query_file_named_like_a_key_stays_a_query(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "IMG_0001.JPG").write_bytes(b"")
    args = parse_args(_parser(), ["--config-file", "c", "--query", "IMG_0001.JPG", "--out", "o"])
    assert args.query == ["IMG_0001.JPG"] and args.opts == []


@pytest.mark.parametrize("argv, message", [
    (["--config-file", "c", "--out", "o", "--outt", "x"],
     "unknown flag '--outt' (flags: --config-file, --evaluate, --help, --out, --query, --tolerance; "
     "anything else is a KEY VALUE config override)"),
    (["--config-file", "c", "--out", "o", "MODEL.WEIGHTS"],
     "config override 'MODEL.WEIGHTS' has no value (overrides are KEY VALUE pairs)"),
    (["--config-file", "c", "MODEL.WEIGHTS", "--out", "o"],
     "config override 'MODEL.WEIGHTS' has no value: the next word is the flag '--out' "
     "(overrides are KEY VALUE pairs)"),
    (["--config-file", "c", "MODEL.WEIGHTS", "w"], "the following arguments are required: --out"),
])
def test_errors_name_the_word(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(_parser(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"tool: error: {message}", err


def test_fastreid_parser_resume_eval_only_num_gpus_after_the_overrides():
    from fastreid.engine import default_argument_parser

    args = parse_args(default_argument_parser(), ["--config-file", "c.yml", "MODEL.WEIGHTS", "w.pth", "--eval-only",
                                                  "SEED", "3", "--resume", "--num-gpus", "2"])
    assert args.eval_only and args.resume and args.num_gpus == 2
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "SEED", "3"]


def test_a_second_positional_is_a_programming_error():
    p = _parser()
    p.add_argument("source")
    with pytest.raises(ValueError, match="positional argument 'source'"):
        split_argv(p, ["x"])


def test_every_tool_with_overrides_parses_them_with_the_shared_helper():
    """A tool with FastReID's REMAINDER opts and no shared helper would swallow the flags after them."""
    tools = sorted(glob.glob(os.path.join(REPO, "tools", "*.py")))
    with_opts = [t for t in tools if "REMAINDER" in open(t).read() or "default_argument_parser" in open(t).read()]
    assert {os.path.basename(t) for t in with_opts} >= {"export_onnx.py", "extract_features.py", "search.py",
                                                          "train_net.py"}
    for t in with_opts:
        src = open(t).read()
        assert "from calr_plugin.utils.cli import parse_args" in src, f"{t}: KEY VALUE overrides without the helper"
        assert ".parse_args(" not in src and "parse_known_args" not in src, f"{t}: parses without the helper"


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tool, flags", [
    ("export_onnx", ["--out", "x.onnx"]),
    ("extract_features", ["--out", "feats"]),
    ("search", ["--gallery", "g", "--query", "q.jpg", "--out", "s"]),
])
def test_each_tool_reads_flags_after_the_overrides(tool, flags, capsys):
    """Parsing passes and the tool gets as far as the (missing) config file."""
    code = _load_tool(tool).main(["--config-file", "missing.yml", "MODEL.WEIGHTS", "w.pth", *flags])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: config file not found: missing.yml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A Market-layout synthetic set and a random-weight CALR checkpoint for it."""
    from calr_plugin import CALRTrainer
    from calr_plugin.data import synthetic

    root = tmp_path_factory.mktemp("cli")
    folder = synthetic.generate(synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=2,
                                                        images_per_id_per_camera=3, height=64, width=32),
                                str(root / "data"))
    torch.manual_seed(0)
    model = CALRTrainer.build_model(calr_cfg(root, "CALR.ALIGN.NUM_CAMERAS", "2")).eval()
    weights = str(root / "model_final.pth")
    torch.save({"model": model.state_dict()}, weights)
    opts = CPU_CALR + TINY_OPTS + ["DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                                   "DATASETS.FOLDER", folder, "OUTPUT_DIR", str(root / "out")]
    return folder, weights, opts


def _run(tool, *args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_export_and_search_as_the_readme_writes_them(tiny_model, tmp_path):
    """``--config-file C MODEL.WEIGHTS W --out X`` and ``... MODEL.WEIGHTS W --gallery G --query Q --out S``."""
    pytest.importorskip("onnxruntime", reason="make install installs the deploy extra")
    folder, weights, opts = tiny_model
    config = config_path("CALR/Base-CALR.yml")
    run = _run("export_onnx.py", "--config-file", config, *opts, "MODEL.WEIGHTS", weights,
               "--out", str(tmp_path / "calr.onnx"), "--check-images", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "calr.onnx").is_file() and "ONNX Runtime vs PyTorch on 2 real images" in run.stdout
    query = os.path.join(folder, "query", sorted(os.listdir(os.path.join(folder, "query")))[0])
    run = _run("search.py", "--config-file", config, *opts, "MODEL.WEIGHTS", weights, "--gallery", folder,
               "--query", query, "--out", str(tmp_path / "search"), "--topk", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "search" / "matches.csv") as f:
        assert len(f.read().splitlines()) == 1 + 3  # header + top 3 of the one query


def test_train_net_eval_only_after_the_overrides(tmp_path):
    out = tmp_path / "eval"
    run = _run("train_net.py", "--config-file", config_path("CALR/Base-CALR.yml"), *CPU_CALR, *TINY_OPTS,
               "OUTPUT_DIR", str(out), "--eval-only")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "eval_results.json").is_file()


def test_export_decodes_only_the_images_it_checks_on(tiny_model, monkeypatch, capsys):
    """7c: 3 of the 36 test images are opened, and an unreadable pick is replaced by another image."""
    from PIL import Image

    from calr_plugin import load_config
    from calr_plugin.data.build import has_test_split

    folder, _, opts = tiny_model
    cfg = load_config(config_path("CALR/Base-CALR.yml"), opts)
    _, data = has_test_split(cfg, "ReIDFolder")
    items = data.query + data.gallery
    assert len(items) == 36
    bad = items[0][0]
    with open(bad, "rb") as f:
        original = f.read()
    opened = []
    real_open = Image.open

    def counting_open(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    export_tool = _load_tool("export_onnx")
    monkeypatch.setattr(Image, "open", counting_open)
    try:
        with open(bad, "wb") as f:
            f.write(original[:200])  # a truncated JPEG
        images = export_tool.check_images(cfg, 3)
    finally:
        with open(bad, "wb") as f:
            f.write(original)
    assert images.shape == (3, 3, 64, 32) and images.dtype == torch.float32
    assert len(opened) == 4 and opened[0] == bad  # the 3 evenly spaced picks and one replacement
    assert f"warning: {bad}: unreadable image" in capsys.readouterr().err
