"""README.md's commands, run as written: every ```bash block, parsed at test time.

Shape shorthand: a block is the list of commands of one ```bash fence (continuation lines
joined, comments dropped); each test runs one block.

Each block runs in one bash process (``set -e``) in a sandbox that looks like the user's
checkout: ``tools/``, ``configs/``, ``calr_plugin/`` and ``bench/`` linked from the repository,
``python`` the test's interpreter, and what the README assumes the user has:

* ``/data/my_cameras`` (the user's camera folders) -> a generated tiny set: the embedded
  synthetic set as camera folders (8 ids x 2 cameras x 3 images) with its labeled test split;
* ``../shared/data/cuhk01`` (the recipes' data) -> the same tiny set;
* ``output/weights/mobilenetv2_imagenet.pth`` -> the offline ImageNet MobileNetV2;
* ``logs/cuhk01/model_final.pth`` and ``output/demo_synthetic`` -> one tiny CALR model trained
  once per session with configs/CALR/cuhk01_mobilenetv2.yml;
* ``crops/person1.jpg``, ``crops/person2.jpg`` -> two query images of the tiny set;
* ``/data/my_videos`` (the user's camera videos and detections) -> generated video of 2 cameras
  (``videos/c1.mp4``, ``dets/c1.txt``, ...; calr_plugin/data/synthetic_video.py).

Only ``/data/my_cameras`` and ``/data/my_videos`` are substituted in the text; training commands (tools/train_net.py)
get a tiny schedule appended (TINY_SCHEDULE). ``...`` abbreviates the block's first command
of the same tool: right after the script it stands for that command's ``--config-file`` and
KEY VALUE overrides (the model), anywhere later for its other flags that this command does
not give itself. A block fails on a non-zero exit or a Python traceback in its output.

A block that cannot run here (the Market data, several GPUs, ``make test`` itself) carries
``<!-- readme-test: skip: <reason> -->`` on the line before its fence in README.md; its test
is skipped with that reason. Blocks run in README order and share the sandbox (the search
block uses the ONNX file the export block wrote); a block run alone first runs the blocks
before it.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

README = os.path.join(REPO, "README.md")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
TINY_SCHEDULE = ["SOLVER.MAX_EPOCH", "1", "CALR.ITERS_PER_EPOCH", "2", "CALR.STAGE1.EPOCHS", "1",
                 "CALR.STAGE1.ITERS", "2", "DATALOADER.NUM_WORKERS", "0"]
LINKED = ("calr_plugin", "configs", "tools", "bench")
KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")  # a config key on a command line


def parse_readme(text):
    """The ```bash blocks of a README.

    Args:
        text (str): the README.
    Returns:
        list[dict]: per block, in order: ``line`` (1-based line of its fence), ``commands``
        (list[str], continuation lines joined, comment lines and trailing comments kept for
        shlex to drop), ``skip`` (the marker's reason, or None).
    Raises:
        ValueError: a readme-test marker that is malformed or not right before a ```bash fence.
    """
    lines = text.splitlines()
    blocks, i, pending = [], 0, None
    while i < len(lines):
        line = lines[i].strip()
        m = MARKER.match(line)
        if m:
            skip = re.match(r"^skip:\s*(\S.*)$", m.group("body"))
            if not skip:
                raise ValueError(f"README.md:{i + 1}: readme-test marker {line!r}: expected "
                                 f"'<!-- readme-test: skip: <reason> -->'")
            pending = (i + 1, skip.group(1))
            i += 1
            continue
        if line.startswith("```"):
            fence_line = i + 1
            if pending and line != "```bash":
                raise ValueError(f"README.md:{pending[0]}: readme-test marker before a {line!r} fence, "
                                 f"not a ```bash one")
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            if line == "```bash":
                commands, current = [], ""
                for raw in body:
                    current += raw.rstrip()
                    if current.endswith("\\"):
                        current = current[:-1] + " "
                        continue
                    if shlex.split(current, comments=True):
                        commands.append(current.strip())
                    current = ""
                blocks.append({"line": fence_line, "commands": commands,
                               "skip": pending[1] if pending else None})
            pending = None
            i += 1
            continue
        if pending and line:
            raise ValueError(f"README.md:{pending[0]}: readme-test marker not right before a ```bash fence")
        i += 1
    return blocks


def _groups(words):
    """A tool's words after the script as [(name, words)]: flags with their values
    (name ``--flag``), KEY VALUE overrides (name None), ``...`` (name ``...``)."""
    groups, i = [], 0
    while i < len(words):
        w = words[i]
        if w == "...":
            groups.append(("...", [w]))
            i += 1
        elif w.startswith("--"):
            j = i + 1
            while j < len(words) and not words[j].startswith("--") and not KEY.match(words[j]) and words[j] != "...":
                j += 1
            groups.append((w.split("=", 1)[0], words[i:j]))
            i = j
        else:
            groups.append((None, words[i:i + 2]))
            i += 2
    return groups


def expand_ellipsis(words, base):
    """Replace ``...`` in a command by what it abbreviates in ``base`` (see the module doc).

    Args:
        words (list[str]): the command, ``[python, script, ...]``.
        base (list[str] | None): the block's first command of the same script without ``...``.
    Returns:
        list[str]: the full command.
    """
    if "..." not in words:
        return words
    if base is None:
        raise AssertionError(f"{shlex.join(words)}: '...' but no earlier command of {words[1]} in its block")
    own = {name for name, _ in _groups(words[2:]) if name not in (None, "...")}
    base_groups = _groups(base[2:])
    model = [w for name, ws in base_groups if name in (None, "--config-file") for w in ws]
    rest = [w for name, ws in base_groups if name not in (None, "--config-file") and name not in own for w in ws]
    out = words[:2]
    for k, w in enumerate(words[2:]):
        if w != "...":
            out.append(w)
        elif k == 0:
            out += model
        else:
            out += rest
    return out


def prepare(commands, data):
    """The block's commands as they run in the sandbox.

    Args:
        commands (list[str]): as written in the README.
        data (str): the tiny camera-folder set standing in for /data/my_cameras (its folder
            stands in for /data: /data/my_videos is its sibling).
    Returns:
        list[str]: shell command lines.
    """
    out, first = [], {}
    for command in commands:
        words = shlex.split(command, comments=True)
        script = words[1] if len(words) > 1 and words[0] == "python" else None
        if script:
            words = expand_ellipsis(words, first.get(script))
            first.setdefault(script, words)
        root = os.path.dirname(data)  # the sandbox's /data
        words = [root + w[len("/data"):] if w.startswith(("/data/my_cameras", "/data/my_videos")) else w for w in words]
        if script == "tools/train_net.py":
            words = words + TINY_SCHEDULE
        out.append(shlex.join(words))
    return out


BLOCKS = parse_readme(open(README, encoding="utf-8").read())


def _id(block):
    first = block["commands"][0] if block["commands"] else "empty"
    return f"L{block['line']}-" + re.sub(r"[^A-Za-z0-9_.]+", "_", " ".join(first.split()[:2]))[:40]


def _run_tool(args, cwd, env, what):
    run = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{what} failed:\n{(run.stdout + run.stderr)[-3000:]}"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, mobilenet_weights):
    """A user's checkout with a tiny camera set, the offline weights and one tiny trained model."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from camera_folders import make_camera_folders

    from calr_plugin.data import synthetic

    root = tmp_path_factory.mktemp("readme")
    market = synthetic.generate(synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=2,
                                                        images_per_id_per_camera=3, height=64, width=32),
                                str(root / "market"))
    data = str(root / "data" / "my_cameras")
    make_camera_folders(market, data, nested=True)
    from calr_plugin.data.synthetic_video import camera_network, write_network

    write_network(camera_network(2, 6, cameras_per_person=(2, 2), seed=0, num_frames=60, width=320, height=180,
                                 speed=(0.01, 0.02)), str(root / "data" / "my_videos"))
    os.makedirs(root / "shared" / "data")
    os.symlink(data, root / "shared" / "data" / "cuhk01")  # the recipes' DATASETS.FOLDER ../shared/data/cuhk01
    work = root / "work"
    os.makedirs(work / "output" / "weights")
    for name in LINKED:
        os.symlink(os.path.join(REPO, name), work / name)
    shutil.copyfile(mobilenet_weights, work / "output" / "weights" / "mobilenetv2_imagenet.pth")
    os.makedirs(work / "crops")
    queries = sorted(os.listdir(os.path.join(data, "query")))
    for name, q in (("person1.jpg", queries[0]), ("person2.jpg", queries[-1])):
        shutil.copyfile(os.path.join(data, "query", q), work / "crops" / name)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               PYTHONUNBUFFERED="1")
    _run_tool(["tools/train_net.py", "--config-file", "configs/CALR/cuhk01_mobilenetv2.yml",
               "DATASETS.FOLDER", data, "OUTPUT_DIR", "logs/cuhk01", *TINY_SCHEDULE], str(work), env,
              "training the sandbox's tiny model")
    os.symlink(work / "logs" / "cuhk01", work / "output" / "demo_synthetic")
    return {"work": str(work), "data": data, "env": env, "results": {}}


def run_block(sandbox, index):
    """Run block ``index`` once per session (and the runnable blocks before it first).

    Returns:
        tuple[int, str, list[str]]: exit status, output, the commands as run.
    """
    results = sandbox["results"]
    for j in range(index + 1):
        block = BLOCKS[j]
        if j in results or block["skip"] or not block["commands"]:
            continue
        commands = prepare(block["commands"], sandbox["data"])
        script = "set -e -o pipefail\ntrap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n"
        script += "".join(f"echo {shlex.quote('$ ' + c)}\n{c}\n" for c in commands)
        run = subprocess.run(["bash", "-c", script], cwd=sandbox["work"], env=sandbox["env"],
                             capture_output=True, text=True, timeout=900)
        results[j] = (run.returncode, run.stdout + run.stderr, commands)
    return results[index]


def test_readme_has_runnable_blocks_for_export_and_search():
    """The export and search commands are tested as written: they must not be skipped."""
    runnable = [c for b in BLOCKS if not b["skip"] for c in b["commands"]]
    for script in ("tools/train_net.py", "tools/export_onnx.py", "tools/search.py"):
        assert any(script in c for c in runnable), f"no runnable README command of {script}"


def test_markers_must_sit_right_before_a_bash_fence():
    with pytest.raises(ValueError, match="README.md:1: readme-test marker"):
        parse_readme("<!-- readme-test: skip because -->\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="not right before"):
        parse_readme("<!-- readme-test: skip: slow -->\nsome prose\n```bash\nls\n```\n")
    blocks = parse_readme("x\n<!-- readme-test: skip: slow -->\n```bash\nls \\\n  -l   # long\n# note\necho\n```\n")
    assert blocks == [{"line": 3, "commands": ["ls    -l   # long", "echo"], "skip": "slow"}]


def test_ellipsis_stands_for_the_first_commands_model_and_other_flags():
    base = shlex.split("python tools/search.py --config-file c.yml MODEL.WEIGHTS w.pth --gallery /g "
                       "--query a.jpg b.jpg --out s/ --topk 10")
    assert expand_ellipsis(shlex.split("python tools/search.py ... --gallery /g --evaluate --out e/"), base) == \
        shlex.split("python tools/search.py --config-file c.yml MODEL.WEIGHTS w.pth --gallery /g --evaluate --out e/")
    assert expand_ellipsis(shlex.split("python tools/search.py ... --onnx m.onnx ..."), base) == \
        shlex.split("python tools/search.py --config-file c.yml MODEL.WEIGHTS w.pth --onnx m.onnx "
                    "--gallery /g --query a.jpg b.jpg --out s/ --topk 10")


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[_id(b) for b in BLOCKS])
def test_readme_block_runs_as_written(request, index):
    block = BLOCKS[index]
    if block["skip"]:
        pytest.skip(f"README.md:{block['line']}: {block['skip']}")
    code, output, commands = run_block(request.getfixturevalue("sandbox"), index)
    shown = "\n".join(commands)
    assert code == 0, \
        f"README.md:{block['line']}: a command failed (exit {code}):\n{shown}\n--- output ---\n{output[-4000:]}"
    assert "Traceback (most recent call last)" not in output, \
        f"README.md:{block['line']}: a traceback in the output:\n{shown}\n--- output ---\n{output[-4000:]}"
