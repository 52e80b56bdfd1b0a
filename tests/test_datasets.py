"""ReIDFolder reads any Market-layout folder; CALRSynthetic generates the embedded set."""
import os

import pytest

from calr_plugin import DataError
from calr_plugin.data.datasets import ReIDFolder
from calr_plugin.data.build import load_dataset
from conftest import TINY_OPTS, shared_dataset


def make_folder(root, names_by_split):
    from PIL import Image

    for split in ("bounding_box_train", "query", "bounding_box_test"):
        os.makedirs(root / split, exist_ok=True)
        for name in names_by_split.get(split, []):
            Image.new("RGB", (8, 16)).save(root / split / name)
    return str(root)


@pytest.mark.parametrize("name, train, ids, query, gallery", [
    ("cuhk01", 1940, 485, 972, 972),
    ("pku_reid74", 992, 62, 24, 168),
])
def test_reads_the_real_sets_as_they_are(name, train, ids, query, gallery):
    data = ReIDFolder(root="/nonexistent", folder=shared_dataset(name))
    assert len(data.train) == train
    assert len({pid for _, pid, _ in data.train}) == ids
    assert {cam for _, _, cam in data.train} == {"reidfolder_0", "reidfolder_1"}
    assert (len(data.query), len(data.gallery)) == (query, gallery)
    assert {cam for _, _, cam in data.query} == {0, 1}


def test_camera_numbers_from_zero_or_with_gaps_become_0_to_c(tmp_path):
    folder = make_folder(tmp_path, {
        "bounding_box_train": ["0001_c0s1_000001_00.jpg", "0001_c7s1_000002_00.jpg", "0002_c3_x.png"],
        "query": ["0003_c0s1_000001_00.jpg"], "bounding_box_test": ["0003_c7s1_000001_00.jpg",
                                                                  "-1_c3s1_000001_00.jpg"]})
    data = ReIDFolder(root=str(tmp_path), folder=folder)
    cams = {os.path.basename(p)[:9]: c for p, _, c in data.train}
    assert cams == {"0001_c0s1": "reidfolder_0", "0001_c7s1": "reidfolder_2", "0002_c3_x": "reidfolder_1"}
    assert [c for _, _, c in data.query] == [0] and [c for _, _, c in data.gallery] == [2]  # junk -1 dropped


def test_malformed_file_name_names_the_file(tmp_path):
    folder = make_folder(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_00.jpg", "person7.jpg"],
                                    "query": ["0002_c1_a.jpg"], "bounding_box_test": ["0002_c2_b.jpg"]})
    with pytest.raises(DataError, match=r"person7\.jpg: file name does not match"):
        ReIDFolder(root=str(tmp_path), folder=folder)


def test_missing_split_and_missing_folder(tmp_path):
    folder = make_folder(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_00.jpg"],
                                    "query": ["0002_c1_a.jpg"]})
    os.rmdir(tmp_path / "bounding_box_test")
    with pytest.raises(DataError, match="bounding_box_test/ is missing"):
        ReIDFolder(root=str(tmp_path), folder=folder)
    with pytest.raises(DataError, match="DATASETS.FOLDER 'nope' not found"):
        ReIDFolder(root=str(tmp_path), folder="nope")


def test_a_test_split_alone_is_evaluated_and_refused_for_training(tmp_path):
    from calr_plugin import load_config
    from calr_plugin.data.build import has_test_split, train_items

    folder = make_folder(tmp_path, {"query": ["0002_c1_a.jpg"], "bounding_box_test": ["0002_c2_b.jpg", "0003_c1_c.jpg"]})
    os.rmdir(tmp_path / "bounding_box_train")
    data = ReIDFolder(root=str(tmp_path), folder=folder)
    assert data.train == [] and data.has_test_split and not data.has_train_split
    assert [(pid, c) for _, pid, c in data.query] == [(2, 0)]
    assert [(pid, c) for _, pid, c in data.gallery] == [(2, 1), (3, 0)]
    cfg = load_config("", TINY_OPTS + ["DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                                       "DATASETS.FOLDER", folder, "MODEL.DEVICE", "cpu"])
    assert has_test_split(cfg, "ReIDFolder")[0]
    load_dataset(cfg, "ReIDFolder")  # what evaluation loads: no error for the missing training split
    with pytest.raises(DataError, match=r"holds only a labeled test split .*training needs train/<camera>/"):
        train_items(cfg)


def test_empty_split_is_an_error(tmp_path):
    folder = make_folder(tmp_path, {"bounding_box_train": ["0001_c1s1_000001_00.jpg"], "query": ["0002_c1_a.jpg"]})
    with pytest.raises(DataError, match="bounding_box_test: no images"):
        ReIDFolder(root=str(tmp_path), folder=folder)


def test_synthetic_set_through_the_config(tmp_path):
    from calr_plugin import load_config

    cfg = load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"] + TINY_OPTS)
    data = load_dataset(cfg, "CALRSynthetic")
    assert len(data.train) == 8 * 2 * 3
    assert len({p for _, p, _ in data.train}) == 8
    assert len(data.query) == 6 * 2 and len(data.gallery) == 6 * 2 * 2


def test_msmt17_trains_on_train_plus_val_as_the_paper(tmp_path):
    """A synthetic MSMT17_V1 layout (list files only: the loader reads names, not pixels)."""
    from calr_plugin.data.datasets import MSMT17TrainVal
    from fastreid.data.datasets.msmt17 import MSMT17

    main = tmp_path / "MSMT17_V1"
    for d in ("train", "test"):
        os.makedirs(main / d)

    def write(name, n, offset=0):
        # <pid>/<pid>_<frame>_<camera 1-15>_<...>.jpg, as in the real list files
        lines = [f"{(i + offset) % 1041:04d}/{(i + offset) % 1041:04d}_{i:03d}_{i % 15 + 1:02d}_0303morning_0008_0.jpg "
                 f"{(i + offset) % 1041}\n" for i in range(n)]
        (main / name).write_text("".join(lines))

    write("list_train.txt", 30248)
    write("list_val.txt", 2373, offset=30248)
    write("list_query.txt", 20)
    write("list_gallery.txt", 40)
    assert len(MSMT17(root=str(tmp_path)).train) == 30248  # FastReID's: list_train only
    data = MSMT17TrainVal(root=str(tmp_path), combineall=False, folder="", synthetic={})
    assert len(data.train) == 32621 and len(data.query) == 20 and len(data.gallery) == 40


def test_combineall_is_refused_at_start_up():
    from calr_plugin import ConfigError, load_config

    with pytest.raises(ConfigError, match="DATASETS.COMBINEALL = True: expected False: FastReID's COMBINEALL also "
                                          "trains on the query and gallery"):
        load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "DATASETS.COMBINEALL", "True"])
