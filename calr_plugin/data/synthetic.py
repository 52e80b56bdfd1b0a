"""Embedded default dataset: a generated, seeded, multi-camera synthetic pedestrian set.

The dataset ships as code, not files. :func:`generate` draws it with PIL into a
Market-1501-layout folder, and :func:`cache_dir_for` gives the folder a deterministic
name derived from the spec. The drawing (``SyntheticSpec``, ``render_image``) is in
:mod:`calr_plugin.data.synthetic_render` and the identities and camera looks it draws are in
:mod:`calr_plugin.data.synthetic_looks`; this module writes and caches the set on disk. All
three import only numpy, PIL and the standard library, so data-preparation tools can use them
without torch or FastReID.

Layout (Market-1501 style)::

    out_dir/
      bounding_box_train/   every image of train ids 1 .. num_train_ids
      query/                the lowest-numbered image (k = 0) of each test id in each camera
      bounding_box_test/    every other image of the test ids (the gallery)
      SPEC.json             manifest, written LAST: spec, generator version, file counts

File names are ``PPPP_cCs1_FFFFFF_00.jpg`` (4-digit person id, 1-based camera, 6-digit
frame), JPEG quality ``spec.jpeg_quality``. Test ids are num_train_ids+1 ..
num_train_ids+num_test_ids, so they never overlap the train ids. Each test id has
``images_per_id_per_camera >= 2`` images in every camera, so every query has
gallery images of the same id in the other cameras (FastReID's Market evaluation
asserts this).

What varies per identity and per camera is described in
:mod:`calr_plugin.data.synthetic_looks`; what varies per image, and why the camera change is
so strong, in :mod:`calr_plugin.data.synthetic_render`.

Generation is idempotent and crash-safe. The set is built in a unique temporary
sibling directory and then renamed into place, and SPEC.json is written last. A
killed run never leaves a folder that looks complete. When several processes race
(DDP ranks), a lock (fcntl, where available) lets them wait for each other; if a
rename loses anyway, the winner's folder is accepted after its manifest is checked.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from typing import Dict, Iterator, List, Tuple

from .synthetic_looks import _camera, _identity
from .synthetic_render import SyntheticSpec, _background, _bg_pad, _render

try:  # POSIX only; without it we rely on the atomic rename alone.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "SyntheticSpec",
    "generate",
    "cache_dir_for",
    "is_complete",
    "iter_items",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
]

# Bump this whenever the drawing changes, so that cached sets are regenerated.
GENERATOR_VERSION = 1
MANIFEST_NAME = "SPEC.json"
SUBDIRS = ("bounding_box_train", "query", "bounding_box_test")
_NAME_RE = re.compile(r"^(\d{4})_c(\d+)s1_(\d{6})_00\.jpg$")


# --------------------------------------------------------------------------- layout


def _frame(pid: int, cam: int, k: int) -> int:
    # Looks like a video frame number; unique per (pid, cam) because k differs.
    return 100 * (k + 1) + (pid * 7 + cam * 13) % 100


def file_name(pid: int, cam: int, k: int) -> str:
    return "%04d_c%ds1_%06d_00.jpg" % (pid, cam, _frame(pid, cam, k))


def iter_items(spec: SyntheticSpec) -> Iterator[Tuple[str, int, int, int]]:
    """Yield (subdir, pid, cam, k) for every image of the set, in a fixed order."""
    for pid in range(1, spec.num_train_ids + 1):
        for cam in range(1, spec.num_cameras + 1):
            for k in range(spec.images_per_id_per_camera):
                yield "bounding_box_train", pid, cam, k
    for pid in range(spec.num_train_ids + 1, spec.num_train_ids + spec.num_test_ids + 1):
        for cam in range(1, spec.num_cameras + 1):
            for k in range(spec.images_per_id_per_camera):
                yield ("query" if k == 0 else "bounding_box_test"), pid, cam, k


def _counts(spec: SyntheticSpec) -> Dict[str, int]:
    n, c = spec.images_per_id_per_camera, spec.num_cameras
    return {
        "bounding_box_train": spec.num_train_ids * c * n,
        "query": spec.num_test_ids * c,
        "bounding_box_test": spec.num_test_ids * c * (n - 1),
    }


def _manifest(spec: SyntheticSpec) -> Dict:
    return {
        "generator": "calr_synthetic",
        "version": GENERATOR_VERSION,
        "spec": spec.to_dict(),
        "counts": _counts(spec),
    }


def spec_hash(spec: SyntheticSpec) -> str:
    blob = json.dumps({"version": GENERATOR_VERSION, "spec": spec.to_dict()}, sort_keys=True)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:12]


def cache_dir_for(spec: SyntheticSpec, root: str) -> str:
    """root/calr_synthetic/<short hash of the spec and generator version>; deterministic."""
    return os.path.join(root, "calr_synthetic", spec_hash(spec))


def _read_manifest(path: str):
    try:
        with open(os.path.join(path, MANIFEST_NAME), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(spec: SyntheticSpec, out_dir: str) -> bool:
    """True if out_dir holds a finished set for exactly this spec and generator version."""
    if _read_manifest(out_dir) != _manifest(spec):
        return False
    for sub, n in _counts(spec).items():
        try:
            names = os.listdir(os.path.join(out_dir, sub))
        except OSError:
            return False
        if sum(1 for x in names if x.endswith(".jpg")) != n:
            return False
    return True


def _is_ours(path: str) -> bool:
    """Whether an existing out_dir may be replaced: our manifest, or only our layout."""
    m = _read_manifest(path)
    if isinstance(m, dict) and m.get("generator") == "calr_synthetic":
        return True
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name not in SUBDIRS or not os.path.isdir(full):
            return False
        if any(not _NAME_RE.match(f) for f in os.listdir(full)):
            return False
    return True


@contextlib.contextmanager
def _lock(path: str):
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _write_all(spec: SyntheticSpec, tmp: str) -> None:
    for sub in SUBDIRS:
        os.makedirs(os.path.join(tmp, sub))
    idents: Dict[int, Dict] = {}
    cams = [_camera(spec.seed, c, spec.camera_strength) for c in range(spec.num_cameras)]
    W, H = spec.width * spec.supersample, spec.height * spec.supersample
    pad = _bg_pad(W)
    bgs = [_background(c, W + 2 * pad, H + 2 * pad) for c in cams]
    for sub, pid, cam, k in iter_items(spec):
        if pid not in idents:
            idents = {pid: _identity(spec.seed, pid)}
        img = _render(spec, idents[pid], cams[cam - 1], pid, cam, k, bgs[cam - 1])
        img.save(os.path.join(tmp, sub, file_name(pid, cam, k)), "JPEG", quality=spec.jpeg_quality)
    with open(os.path.join(tmp, MANIFEST_NAME + ".part"), "w", encoding="utf-8") as f:
        json.dump(_manifest(spec), f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(os.path.join(tmp, MANIFEST_NAME + ".part"), os.path.join(tmp, MANIFEST_NAME))


def generate(spec: SyntheticSpec, out_dir: str) -> str:
    """Write a Market-1501-layout folder at out_dir and return out_dir.

    Does nothing if out_dir already holds a complete set for the same spec (SPEC.json
    matches and the file counts agree). Otherwise it builds the set in a unique temporary
    sibling directory and renames that into place, so a killed run never leaves a
    half-written folder that looks complete. An existing out_dir that is incomplete or
    for another spec is replaced, but only if it looks like ours (our manifest, or only
    the three layout folders with Market-style jpgs); anything else raises
    FileExistsError rather than deleting someone's data.
    """
    spec.validate()
    out_dir = os.path.abspath(out_dir)
    if is_complete(spec, out_dir):
        return out_dir
    parent, base = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    with _lock(os.path.join(parent, "." + base + ".lock")):
        if is_complete(spec, out_dir):  # another process finished while we waited
            return out_dir
        if os.path.isdir(out_dir) and not _is_ours(out_dir):
            raise FileExistsError(
                "%s exists and is not a calr synthetic dataset; refusing to overwrite it" % out_dir)
        if fcntl is not None:  # we hold the lock: any tmp dir left over is from a dead run
            for name in os.listdir(parent):
                if name.startswith("." + base + ".tmp-") or name.startswith("." + base + ".old-"):
                    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        tmp = os.path.join(parent, ".%s.tmp-%d-%s" % (base, os.getpid(), uuid.uuid4().hex[:8]))
        try:
            _write_all(spec, tmp)
            _install(spec, tmp, out_dir)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _install(spec: SyntheticSpec, tmp: str, out_dir: str) -> None:
    parent, base = os.path.split(out_dir)
    for _ in range(3):
        try:
            os.rename(tmp, out_dir)  # atomic; fails if out_dir is a non-empty directory
            return
        except OSError:
            if is_complete(spec, out_dir):  # another process won the race: keep theirs
                return
            if not os.path.isdir(out_dir) or not _is_ours(out_dir):
                raise
            old = os.path.join(parent, ".%s.old-%d-%s" % (base, os.getpid(), uuid.uuid4().hex[:8]))
            try:
                os.rename(out_dir, old)  # move the stale/incomplete set aside, then retry
            except OSError:
                continue
            shutil.rmtree(old, ignore_errors=True)
    if not is_complete(spec, out_dir):
        raise RuntimeError("could not install synthetic dataset at %s" % out_dir)


def parse_name(name: str) -> Tuple[int, int, int]:
    """(pid, cam, frame) from a file name written by this module."""
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(name)
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def list_split(out_dir: str, sub: str) -> List[Tuple[str, int, int]]:
    """[(path, pid, cam)] for a split folder, sorted by file name."""
    d = os.path.join(out_dir, sub)
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".jpg"):
            pid, cam, _ = parse_name(name)
            out.append((os.path.join(d, name), pid, cam))
    return out
