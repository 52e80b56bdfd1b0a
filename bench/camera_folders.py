#!/usr/bin/env python
"""Rebuild a Market-layout set as unlabeled camera folders, as a user with no ids has it.

    python bench/camera_folders.py ../shared/data/cuhk01 output/camfolders/cuhk01 [--no-test]

Writes OUT/train/<camera>/<name>.jpg: one folder per camera, named like a user's
(``entrance``, ``Lobby 2``, ...; see CAMERA_NAMES), files renamed to a hash of the original
name so that neither the name nor the sorted order carries the person id. The labeled test
split (``query/``, ``bounding_box_test/``) is linked as it is unless ``--no-test``. Images
are hard-linked when the file system allows it, copied otherwise. The set's terms still
apply to the copy: keep it outside the repository.
"""
import argparse
import hashlib
import os
import re
import shutil
import sys

CAMERA_NAMES = ("entrance", "Lobby 2", "cam07", "car park", "lift", "stairs B", "gate 3", "hall")
NAME = re.compile(r"^([-\d]+)_c(\d+)")


def _place(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _digest(name):
    """The file name (without extension) a Market training image gets in camera folders."""
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def original_ids(src):
    """Person ids of the camera-folder files made from ``src``, for reporting label quality.

    Returns:
        dict[str, int]: file name without extension -> person id of the Market name it hides.
    """
    train = os.path.join(src, "bounding_box_train")
    return {_digest(f): int(NAME.match(f).group(1)) for f in os.listdir(train) if NAME.match(f)}


def make_camera_folders(src, out, test=True, nested=False):
    """Rebuild ``src`` (Market layout) as ``out/train/<camera>/`` folders without ids.

    Args:
        src (str): a folder with bounding_box_train/ (and query/, bounding_box_test/).
        out (str): the new folder (must not exist yet).
        test (bool): link the labeled test split too.
        nested (bool): put each camera's images in two sub-folders (``day1/``, ``day2/``)
            to exercise nested camera folders.
    Returns:
        dict[str, int]: images per camera folder.
    """
    if os.path.exists(out):
        raise FileExistsError(f"{out} exists; remove it first")
    train = os.path.join(src, "bounding_box_train")
    names = sorted(f for f in os.listdir(train) if NAME.match(f))
    cams = sorted({int(NAME.match(f).group(2)) for f in names})
    if len(cams) > len(CAMERA_NAMES):
        raise ValueError(f"{len(cams)} cameras; CAMERA_NAMES has {len(CAMERA_NAMES)}")
    folder_of = dict(zip(cams, CAMERA_NAMES))
    counts = {}
    for f in names:
        cam = folder_of[int(NAME.match(f).group(2))]
        digest = _digest(f)
        sub = (f"day{int(digest, 16) % 2 + 1}",) if nested else ()
        _place(os.path.join(train, f), os.path.join(out, "train", cam, *sub, digest + os.path.splitext(f)[1]))
        counts[cam] = counts.get(cam, 0) + 1
    if test:
        for split in ("query", "bounding_box_test"):
            for f in sorted(os.listdir(os.path.join(src, split))):
                _place(os.path.join(src, split, f), os.path.join(out, split, f))
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--no-test", action="store_true", help="leave the labeled test split out")
    args = p.parse_args(argv)
    try:
        counts = make_camera_folders(args.src, args.out, test=not args.no_test)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {sum(counts.values())} unlabeled training images to {args.out}/train/: "
          + ", ".join(f"{k!r} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
