"""Datasets for training and testing: instantiate, check images, check the test split.

Shape shorthand: FastReID items ``(img_path, pid, camid)``.

``load_dataset`` builds any registered dataset (FastReID's or ours) with the keys our
datasets read, decodes every image once (``DATASETS.IMAGE_CHECK``) and turns FastReID's
missing-folder RuntimeError into a one-line ``DataError``. A camera-folder dataset without
a labeled test split has empty query/gallery; ``NoTestSplit`` is what asking to evaluate
it raises.
"""
import logging
import os

from fastreid.data import build as data_build
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm

from ..errors import DataError
from .datasets import dataset_kwargs
from .images import check_items

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt


def dataset_root():
    """$FASTREID_DATASETS, read now (FastReID reads it once, when fastreid.data is imported)."""
    return os.environ.get("FASTREID_DATASETS", data_build._root)


def has_test_split(cfg, name):
    """Whether dataset ``name`` has a labeled query/gallery split (listing only, no decoding)."""
    data = DATASET_REGISTRY.get(name)(root=dataset_root(), combineall=False, **dataset_kwargs(cfg))
    return getattr(data, "has_test_split", True), data


def load_dataset(cfg, name):
    """Instantiate a registered dataset with the keys our datasets read from the config.

    Raises:
        DataError: FastReID's own datasets report a missing folder as a RuntimeError.
    """
    try:
        data = DATASET_REGISTRY.get(name)(root=dataset_root(), combineall=cfg.DATASETS.COMBINEALL,
                                          **dataset_kwargs(cfg))
    except RuntimeError as e:
        if "is not found" not in str(e):
            raise
        raise DataError(f"dataset {name}: {e}; put it under $FASTREID_DATASETS (now {dataset_root()!r}) "
                        f"in FastReID's layout") from None
    has_test = getattr(data, "has_test_split", True)
    present = {"train": getattr(data, "has_train_split", True), "query": has_test, "gallery": has_test}
    splits = [split for split, there in present.items() if there]
    for split in splits:
        items = check_items(getattr(data, split), cfg.DATASETS.IMAGE_CHECK, f"{name} {split}")
        if not items:
            raise DataError(f"dataset {name}: the {split} split has no readable image")
        setattr(data, "_" + split, items)
    return data


def check_test_split(name, query, gallery):
    """FastReID's Market protocol needs, per query, a gallery image of the same id from
    another camera (queries without one are left out of mAP/CMC; all of them missing is an
    assertion deep inside FastReID) and at least 10 gallery images (it reports Rank-10).

    Raises:
        DataError: no query can be evaluated, or the gallery is too small.
    """
    if len(gallery) < 10:
        raise DataError(f"dataset {name}: the gallery has {len(gallery)} images; FastReID's evaluation "
                        f"needs at least 10 (it reports Rank-10)")
    cams_of = {}
    for _, pid, cam in gallery:
        cams_of.setdefault(pid, set()).add(cam)
    missing = [q for q in query if not (cams_of.get(q[1], set()) - {q[2]})]
    if len(missing) == len(query):
        raise DataError(f"dataset {name}: no query id appears in the gallery under another camera "
                        f"(e.g. {os.path.basename(query[0][0])}); nothing can be evaluated")
    if missing:
        logger.warning(f"dataset {name}: {len(missing)} of {len(query)} queries have no gallery image of "
                       f"their id from another camera (e.g. {os.path.basename(missing[0][0])}); "
                       f"they are left out of mAP/CMC")


def train_items(cfg):
    """FastReID train items ``(path, pid, camid)`` of every dataset in DATASETS.NAMES."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = load_dataset(cfg, name)
        if not getattr(data, "has_train_split", True):
            raise DataError(f"dataset {name} ({data.data_dir}) holds only a labeled test split (query/, "
                            f"bounding_box_test/): training needs train/<camera>/ folders or bounding_box_train/")
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    return items


class NoTestSplit(DataError):
    """The dataset has no labeled query/gallery split to evaluate on."""


def no_test_split_message(name, data):
    return (f"dataset {name} ({data.data_dir}) has no labeled test split: mAP and Rank-k need query/ and "
            f"bounding_box_test/ with Market names (<person id>_c<camera>_...jpg) next to train/")
