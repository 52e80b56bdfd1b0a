"""Datasets registered with FastReID: a Market-layout folder and the embedded synthetic set.

FastReID's own Market1501/DukeMTMC/MSMT17/VeRi are reused unchanged. Both datasets
here yield FastReID's items ``(img_path, pid, camid)``: train pids/camids are strings
prefixed with the dataset name (FastReID relabels them), query/gallery ones are ints.
Cameras are renumbered 0..C-1 in sorted order of the numbers found in the file names,
the same mapping for every split, so cameras may be numbered from 0, from 1 or with gaps.
"""
import glob
import logging
import os
import re

import numpy as np

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from ..errors import DataError

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt

NAME_PATTERN = re.compile(r"^([-\d]+)_c(\d+)")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def parse_name(path):
    """(person id, camera number as written) from a Market-style file name.

    Args:
        path (str): a path whose basename starts with ``<pid>_c<cam>``, e.g.
            ``0001_c1s1_000151_01.jpg``.
    Returns:
        tuple[int, int]: pid (-1 marks junk), camera number (not yet 0-based).
    Raises:
        DataError: the name does not start with ``<pid>_c<cam>``.
    """
    m = NAME_PATTERN.match(os.path.basename(path))
    if m is None:
        raise DataError(f"{path}: file name does not match <person id>_c<camera>..., "
                        f"e.g. 0001_c1s1_000151_01.jpg")
    return int(m.group(1)), int(m.group(2))


def resolve_folder(folder, root):
    """The dataset folder: absolute, relative to the working directory, or to root."""
    for candidate in (folder, os.path.join(root, folder)):
        if candidate and os.path.isdir(candidate):
            return candidate
    raise DataError(f"DATASETS.FOLDER {folder!r} not found (looked in the working directory and in "
                    f"$FASTREID_DATASETS={root!r}); expected a folder holding "
                    f"{', '.join(s + '/' for s in SPLITS)}")


@DATASET_REGISTRY.register()
class ReIDFolder(ImageDataset):
    """Any Market-1501-layout folder: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

    Select it with ``DATASETS.NAMES ("ReIDFolder",)`` and/or ``DATASETS.TESTS
    ("ReIDFolder",)`` and point ``DATASETS.FOLDER`` at the folder. File names are
    ``<pid>_c<cam>...`` (pid -1 = junk, dropped); any number of cameras.
    """

    dataset_name = "reidfolder"
    _junk_pids = [0, -1]

    def __init__(self, root="datasets", folder="", **kwargs):
        self.data_dir = resolve_folder(folder, root)
        for split in SPLITS:
            if not os.path.isdir(os.path.join(self.data_dir, split)):
                raise DataError(f"{self.data_dir}: split folder {split}/ is missing; expected "
                                f"{', '.join(s + '/' for s in SPLITS)}")
        self._files = {split: self._list(split) for split in SPLITS}
        cams = sorted({parse_name(p)[1] for files in self._files.values() for p in files})
        self.cam_index = {c: i for i, c in enumerate(cams)}
        kwargs.pop("synthetic", None)
        super().__init__(lambda: self._items("bounding_box_train", True),
                         lambda: self._items("query", False),
                         lambda: self._items("bounding_box_test", False), **kwargs)

    def _list(self, split):
        d = os.path.join(self.data_dir, split)
        files = sorted(p for p in glob.glob(os.path.join(d, "*"))
                       if p.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"{d}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this split")
        return files

    def _items(self, split, is_train):
        items = []
        for path in self._files[split]:
            pid, cam = parse_name(path)
            if pid == -1:
                continue
            camid = self.cam_index[cam]
            if is_train:
                items.append((path, f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}"))
            else:
                items.append((path, pid, camid))
        if not items:
            raise DataError(f"{os.path.join(self.data_dir, split)}: every image is junk (pid -1)")
        return items


@DATASET_REGISTRY.register()
class CALRSynthetic(ReIDFolder):
    """The embedded default: a seeded multi-camera synthetic pedestrian set (no files shipped).

    Generated on first use into ``<root>/calr_synthetic/<hash of the spec>`` from the
    ``DATASETS.SYNTHETIC.*`` keys (see :mod:`calr_plugin.data.synthetic`), then read
    like any Market-layout folder.
    """

    dataset_name = "calrsynthetic"

    def __init__(self, root="datasets", synthetic=None, **kwargs):
        from . import synthetic as synthetic_data

        spec = synthetic_spec_from(synthetic or {})
        out_dir = synthetic_data.cache_dir_for(spec, root)
        synthetic_data.generate(spec, out_dir)
        kwargs.pop("folder", None)
        super().__init__(root=root, folder=out_dir, **kwargs)


def synthetic_spec_from(options):
    """SyntheticSpec from a dict of DATASETS.SYNTHETIC keys (upper-case) or spec fields."""
    from . import synthetic as synthetic_data

    fields = {k.lower(): v for k, v in dict(options).items()}
    return synthetic_data.SyntheticSpec(**fields)


def dataset_kwargs(cfg):
    """Keyword arguments our datasets need from the config (FastReID's ignore them)."""
    return {
        "folder": cfg.DATASETS.FOLDER,
        "synthetic": {k: v for k, v in cfg.DATASETS.SYNTHETIC.items()},
    }


class TrainSet:
    """The training images CALR clusters, in a fixed order (sorted by path).

    Attributes:
        paths (list[str]): N image paths.
        cams (ndarray): (N,) int64 camera index 0..C-1.
        gt (ndarray | None): (N,) int64 ground-truth ids, for reporting label quality
            only; training never reads them.
    """

    def __init__(self, items, keep_gt=True):
        items = sorted(items, key=lambda it: it[0])
        self.paths = [it[0] for it in items]
        cam_names = sorted({it[2] for it in items})
        cam_index = {c: i for i, c in enumerate(cam_names)}
        self.cams = np.array([cam_index[it[2]] for it in items], dtype=np.int64)
        if keep_gt:
            pid_names = sorted({it[1] for it in items})
            pid_index = {p: i for i, p in enumerate(pid_names)}
            self.gt = np.array([pid_index[it[1]] for it in items], dtype=np.int64)
        else:
            self.gt = None

    def __len__(self):
        return len(self.paths)

    @property
    def num_cameras(self):
        return int(self.cams.max(initial=-1)) + 1

    def subset(self, mask):
        """A TrainSet of the images where mask (N,) bool is true, order kept."""
        out = TrainSet.__new__(TrainSet)
        idx = np.flatnonzero(mask)
        out.paths = [self.paths[i] for i in idx]
        out.cams = self.cams[idx]
        out.gt = None if self.gt is None else self.gt[idx]
        return out
