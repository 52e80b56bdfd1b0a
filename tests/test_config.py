"""Config mistakes fail at start-up with one line that names the key and what to fix."""
import os
import subprocess
import sys

import pytest

from calr_plugin import ConfigError, load_config
from conftest import REPO, config_path

CPU = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"]


def error_of(config="", opts=()):
    with pytest.raises(ConfigError) as e:
        load_config(config, list(opts))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_typo_in_command_line_key_names_it_and_suggests():
    msg = error_of(opts=CPU + ["MODEL.BACKBONE.DEPHT", "18x"])
    assert "MODEL.BACKBONE.DEPHT" in msg and "did you mean MODEL.BACKBONE.DEPTH" in msg


def test_typo_in_config_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text(f"_BASE_: {config_path('Base-bagtricks.yml')}\nSOLVER:\n  MAX_EPOCHS: 3\n")
    msg = error_of(str(f))
    assert str(f) in msg and "SOLVER.MAX_EPOCHS" in msg and "SOLVER.MAX_EPOCH" in msg


def test_wrong_type_and_impossible_values():
    assert "SOLVER.MAX_EPOCH" in error_of(opts=CPU + ["SOLVER.MAX_EPOCH", "ten"])
    assert "SOLVER.MAX_EPOCH = -1" in error_of(opts=CPU + ["SOLVER.MAX_EPOCH", "-1"])
    msg = error_of(opts=CPU + ["DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler", "SOLVER.IMS_PER_BATCH", "30",
                               "DATALOADER.NUM_INSTANCE", "4"])
    assert "SOLVER.IMS_PER_BATCH" in msg and "NUM_INSTANCE" in msg


def test_missing_pretrain_path_says_what_to_do():
    msg = error_of(opts=CPU + ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", "/no/such.pth"])
    assert "MODEL.BACKBONE.PRETRAIN_PATH" in msg and "/no/such.pth" in msg and "convert_weights" in msg
    # check=False only merges (bench/real_data.py reads recipes before their files exist);
    # a key typo is still an error there.
    opts = CPU + ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", "/no/such.pth"]
    assert load_config("", opts, check=False).MODEL.BACKBONE.PRETRAIN_PATH == "/no/such.pth"
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.DEPHT"):
        load_config("", CPU + ["MODEL.BACKBONE.DEPHT", "18x"], check=False)


def test_cuda_on_a_cpu_machine_and_unknown_dataset():
    import torch

    if not torch.cuda.is_available():
        assert "MODEL.DEVICE" in error_of(opts=["MODEL.DEVICE", "cuda"])
    assert "did you mean Market1501" in error_of(opts=CPU + ["DATASETS.NAMES", '("Market",)'])
    assert "DATASETS.FOLDER" in error_of(opts=CPU + ["DATASETS.NAMES", '("ReIDFolder",)'])


def test_train_net_prints_one_line_and_exits_2():
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                          config_path("CALR/demo_synthetic_supervised.yml"), "SOLVER.BASE_LRR", "0.1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = [l for l in run.stderr.splitlines() if l.strip()]
    assert lines == ["error: command line: unknown config key SOLVER.BASE_LRR (did you mean SOLVER.BASE_LR?)"]


def test_seed_minus_one_draws_a_fresh_recorded_seed_per_run(tmp_path):
    from calr_plugin import load_config, setup_run

    class Args:
        config_file = ""
        eval_only = False

    seeds = []
    for i in range(2):
        cfg = load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "SEED", "-1",
                               "OUTPUT_DIR", str(tmp_path / str(i))])
        setup_run(cfg, Args())
        assert cfg.SEED >= 0
        assert f"SEED: {cfg.SEED}" in (tmp_path / str(i) / "config.yaml").read_text()
        seeds.append(cfg.SEED)
    assert seeds[0] != seeds[1]
