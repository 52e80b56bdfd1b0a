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
from fastreid.data.datasets.msmt17 import MSMT17

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


def list_images(folder, recursive=False):
    """Sorted image paths in ``folder`` (and its sub-folders when ``recursive``)."""
    pattern = os.path.join(glob.escape(folder), "**", "*") if recursive else os.path.join(glob.escape(folder), "*")
    return sorted(p for p in glob.glob(pattern, recursive=recursive)
                  if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p))


def camera_folders(train_dir):
    """The unlabeled training images of a ``train/<camera>/**/*.jpg`` folder, by camera.

    Any folder name is a camera (``entrance``, ``Lobby 2``, ``cam07``); images may sit in
    nested sub-folders of their camera folder. No person id is read.

    Args:
        train_dir (str): the ``train/`` folder.
    Returns:
        dict[str, list[str]]: camera folder name -> sorted image paths, cameras in sorted
        order; empty camera folders and one-image cameras are left out with a warning.
    Raises:
        DataError: images directly under ``train/`` (no camera), or no camera with images.
    """
    loose = list_images(train_dir)
    if loose:
        raise DataError(f"{train_dir}: {len(loose)} images directly under train/ (e.g. "
                        f"{os.path.basename(loose[0])}); put each camera's images in its own sub-folder, "
                        f"train/<camera>/")
    cameras = {}
    for name in sorted(os.listdir(train_dir)):
        folder = os.path.join(train_dir, name)
        if not os.path.isdir(folder):
            continue
        files = list_images(folder, recursive=True)
        if not files:
            logger.warning(f"{folder}: camera folder has no images ({', '.join(IMAGE_EXTENSIONS)}); skipped")
        elif len(files) == 1:
            # Stage 1 clusters within a camera and the camera classifier needs a class with
            # more than one sample: one image is almost surely a stray file.
            logger.warning(f"{folder}: camera folder has a single image; a camera needs at least 2; skipped")
        else:
            cameras[name] = files
    if not cameras:
        raise DataError(f"{train_dir}: no camera sub-folder with at least 2 images; expected "
                        f"train/<camera>/*.jpg")
    return cameras


@DATASET_REGISTRY.register()
class ReIDFolder(ImageDataset):
    """A folder of camera crops, in either of two layouts (told apart by what it holds).

    * Market-1501: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``, file names
      ``<pid>_c<cam>...`` (pid -1 = junk, dropped); any number of cameras.
    * A labeled test split alone: ``query/`` and ``bounding_box_test/`` (Market names), for
      ``--eval-only`` and ``DATASETS.TESTS``; it cannot be trained on.
    * Unlabeled cameras: ``train/<camera>/**/*.jpg``, the camera being the sub-folder
      (any name); no person id is needed or read (train pids are None). An optional
      labeled test split, ``query/`` and ``bounding_box_test/`` with Market names, is
      evaluated with its own cameras; without one, ``query`` and ``gallery`` are empty.

    Select it with ``DATASETS.NAMES ("ReIDFolder",)`` and/or ``DATASETS.TESTS
    ("ReIDFolder",)`` and point ``DATASETS.FOLDER`` at the folder.
    """

    dataset_name = "reidfolder"
    _junk_pids = [0, -1]

    def __init__(self, root="datasets", folder="", **kwargs):
        self.data_dir = resolve_folder(folder, root)
        train_dir = os.path.join(self.data_dir, "train")
        market_train = os.path.join(self.data_dir, SPLITS[0])
        if os.path.isdir(train_dir) and os.path.isdir(market_train):
            raise DataError(f"{self.data_dir}: holds both train/ (camera folders) and bounding_box_train/ "
                            f"(Market names); keep one layout")
        tests_only = not os.path.isdir(market_train) and all(
            os.path.isdir(os.path.join(self.data_dir, s)) for s in SPLITS[1:])
        self.layout = "cameras" if os.path.isdir(train_dir) else "test" if tests_only else "market"
        kwargs.pop("synthetic", None)
        if self.layout == "test":
            # A labeled test split alone (query/, bounding_box_test/), for --eval-only and as
            # DATASETS.TESTS: FastReID reads `train` when it builds any dataset, so it is empty
            # here and `data.build.train_items` refuses it as a training set.
            self._files = {split: self._list(split) for split in SPLITS[1:]}
            train = list
        elif self.layout == "market":
            for split in SPLITS:
                if not os.path.isdir(os.path.join(self.data_dir, split)):
                    raise DataError(f"{self.data_dir}: split folder {split}/ is missing; expected "
                                    f"{', '.join(s + '/' for s in SPLITS)}, or train/<camera>/ folders")
            self._files = {split: self._list(split) for split in SPLITS}
            train = lambda: self._items("bounding_box_train", True)  # noqa: E731
        else:
            self.camera_names = camera_folders(train_dir)
            test_splits = [s for s in SPLITS[1:] if os.path.isdir(os.path.join(self.data_dir, s))]
            if len(test_splits) == 1:
                raise DataError(f"{self.data_dir}: has {test_splits[0]}/ but not "
                                f"{({*SPLITS[1:]} - {*test_splits}).pop()}/; a test split needs both")
            self._files = {s: self._list(s) for s in test_splits}
            train = self._camera_items
        # Market camera numbers of every listed split, renumbered 0..C-1 in their order.
        cams = sorted({parse_name(p)[1] for files in self._files.values() for p in files})
        self.cam_index = {c: i for i, c in enumerate(cams)}
        super().__init__(train, lambda: self._items("query", False), lambda: self._items("bounding_box_test", False),
                         **kwargs)

    @property
    def has_test_split(self):
        return "query" in self._files

    @property
    def has_train_split(self):
        return self.layout != "test"

    def _list(self, split):
        d = os.path.join(self.data_dir, split)
        files = list_images(d)
        if not files:
            raise DataError(f"{d}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this split")
        return files

    def _camera_items(self):
        return [(path, None, f"{self.dataset_name}_{cam}")
                for cam in self.camera_names for path in self.camera_names[cam]]

    def _items(self, split, is_train):
        if split not in self._files:
            return []  # camera-folder layout without a test split
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

    def show_train(self):
        if self.layout == "market":
            return super().show_train()
        counts = ", ".join(f"{name!r} {len(files)}" for name, files in self.camera_names.items())
        logger.info(f"=> Loaded {self.__class__.__name__}: {len(self.train)} unlabeled training images from "
                    f"{len(self.camera_names)} camera folders ({counts})")


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


@DATASET_REGISTRY.register()
class MSMT17TrainVal(MSMT17):
    """MSMT17 trained on ``list_train.txt`` + ``list_val.txt`` (32,621 images), as the paper
    and the authors' code do; FastReID's MSMT17 trains on list_train only (30,248), and its
    only switch, DATASETS.COMBINEALL, would also train on the query and gallery images.
    Query and gallery are MSMT17's. Use ``DATASETS.NAMES ("MSMT17TrainVal",)``.
    """

    def __init__(self, root="datasets", **kwargs):
        kwargs.pop("combineall", None)
        kwargs.pop("folder", None)
        kwargs.pop("synthetic", None)
        super().__init__(root=root, **kwargs)
        self._train = self.train + self.process_dir(self.train_dir, self.list_val_path)
        self.data = self._train


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


def relative_keys(paths):
    """Each path relative to the deepest folder holding all of them, '/'-separated.

    What saved per-image results (stage-1 labels, inferred cameras) are matched by: unlike
    the bare file name it tells ``cam1/000001.jpg`` from ``cam2/000001.jpg``, and unlike the
    full path it survives moving the dataset folder. For one camera-folder dataset the
    folder is its ``train/`` (keys ``<camera>/.../<name>``), for a Market layout its
    ``bounding_box_train/`` (keys are file names).

    Args:
        paths (list[str]): N image paths (absolute, or relative to the working directory).
    Returns:
        list[str]: N keys.
    """
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in absolute]


class TrainSet:
    """The training images CALR clusters, in a fixed order (sorted by path).

    Attributes:
        paths (list[str]): N image paths.
        keys (list[str]): N paths relative to the folder holding all of them
            (``relative_keys``): how saved stage-1 labels are matched to the images.
        cams (ndarray): (N,) int64 camera index 0..C-1.
        cam_names (list[str]): C camera names (folder names, or numbers as written).
        gt (ndarray | None): (N,) int64 ground-truth ids, for reporting label quality
            only; training never reads them. None without ids (camera folders).
        given_cams (ndarray | None): (N,) the folders' or names' cameras when ``cams``
            holds inferred pseudo-cameras (``DATASETS.CAMERAS infer``), for reporting.
        groups (ndarray | None): (N,) int64 tracklet of each image (``tracklet_groups``;
            -1: in none), with ``DATASETS.TRACKLETS folder``; None otherwise.
        frames (ndarray | None): (N,) int64 frame number of each image, read from its file
            name (``tracklet_frames``; -1: not a number), alongside ``groups``.
    """

    given_cams = None
    groups = None
    frames = None

    def __init__(self, items, keep_gt=True):
        items = sorted(items, key=lambda it: it[0])
        self.paths = [it[0] for it in items]
        self.keys = relative_keys(self.paths)
        cam_names = sorted({it[2] for it in items})
        cam_index = {c: i for i, c in enumerate(cam_names)}
        self.cams = np.array([cam_index[it[2]] for it in items], dtype=np.int64)
        # "reidfolder_Lobby 2" -> "Lobby 2": the camera folder's (or number's) own name.
        self.cam_names = [str(c).split("_", 1)[-1] for c in cam_names]
        if keep_gt and all(it[1] is not None for it in items):
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
        out.keys = [self.keys[i] for i in idx]  # the whole set's keys, not the subset's own
        out.cams = self.cams[idx]
        out.cam_names = self.cam_names
        out.gt = None if self.gt is None else self.gt[idx]
        out.given_cams = None if self.given_cams is None else self.given_cams[idx]
        out.groups = None if self.groups is None else self.groups[idx]
        out.frames = None if self.frames is None else self.frames[idx]
        return out


def tracklet_groups(paths, cameras):
    """(N,) int64 tracklet of each image of camera folders: the images of one folder below a
    camera folder (``.../train/<camera>/<tracklet>/.../<file>``, the leaf folder) share one id;
    images directly in a camera folder, and any image not in that layout (Market names), get -1.

    Args:
        paths (list[str]): N image paths. cameras (list[str]): N camera folder names.
    """
    ids, out = {}, np.full(len(paths), -1, dtype=np.int64)
    for i, (path, camera) in enumerate(zip(paths, cameras)):
        parts = os.path.abspath(path).split(os.sep)
        inside = any(parts[j] == "train" and parts[j + 1] == camera for j in range(len(parts) - 3))
        if inside and parts[-2] != camera:
            out[i] = ids.setdefault(os.sep.join(parts[:-1]), len(ids))
    return out


def tracklet_frames(paths):
    """(N,) int64 frame number of each image: its file name without the extension
    (``tools/video_to_crops.py`` writes ``<tracklet>/<frame>.jpg``); -1 where that is not a number.

    Args:
        paths (list[str]): N image paths.
    """
    stems = (os.path.splitext(os.path.basename(p))[0] for p in paths)
    return np.array([int(s) if s.isdigit() else -1 for s in stems], dtype=np.int64)


def tracklets_of(train_set):
    """Sets ``groups`` and ``frames`` of a TrainSet (``tracklet_groups``, ``tracklet_frames``)
    and logs them; DATASETS.TRACKLETS folder with no tracklet folder is a DataError (the
    layout is wrong, and the must-links would silently do nothing).

    Returns:
        TrainSet: ``train_set``.
    """
    groups = tracklet_groups(train_set.paths, [train_set.cam_names[c] for c in train_set.cams])
    inside = int((groups >= 0).sum())
    if not inside:
        raise DataError("DATASETS.TRACKLETS folder: no training image is in a tracklet folder; expected "
                        "train/<camera>/<tracklet>/<image> (tools/video_to_crops.py writes that layout)")
    frames = tracklet_frames(train_set.paths)
    numbered = int(((frames >= 0) & (groups >= 0)).sum())
    logging.getLogger("fastreid." + __name__).info(
        f"tracklets: {int(groups.max()) + 1} tracklet folders hold {inside} of {len(groups)} training images; "
        f"stage 1 keeps each in one local cluster"
        + (f"; tracklets of one camera seen at the same time are cannot-links ({numbered} tracklet images named "
           f"by frame number)" if numbered else
           "; no image is named by its frame number (<frame>.jpg), so no cannot-links: K_c from the cluster ratio"))
    train_set.groups, train_set.frames = groups, frames
    return train_set
