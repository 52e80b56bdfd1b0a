"""Image checks at dataset load: one unreadable JPEG must not kill a run at epoch 37.

Every image is opened and fully decoded once (in threads; the result is cached per
path, size and modification time). ``DATASETS.IMAGE_CHECK``:
  "skip"   - unreadable or truncated files are left out, with a warning naming each
             (up to 10) and the count;
  "strict" - the first bad file stops the run with an error naming it;
  "off"    - no check (FastReID's behaviour: a bad file fails when it is first read).
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from ..errors import DataError

logger = logging.getLogger("fastreid." + __name__)

_cache = {}


def _readable(path):
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot stat ({e.strerror})"
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            with Image.open(path) as im:
                im.load()  # a full decode: truncated files fail here, not in a worker later
                ok = None if im.width > 0 and im.height > 0 else "empty image"
        except Exception as e:  # PIL raises many types for broken files
            ok = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        _cache[key] = ok
    return _cache[key]


def check_items(items, mode, what):
    """Drop (or reject) items whose image cannot be decoded.

    Args:
        items (list[tuple]): FastReID items ``(path, pid, camid)``.
        mode (str): "skip", "strict" or "off".
        what (str): a name for messages, e.g. "Market1501 train".
    Returns:
        list[tuple]: the items whose image is readable.
    Raises:
        DataError: mode "strict" and a file is unreadable.
    """
    if mode == "off" or not items:
        return items
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        problems = list(pool.map(_readable, [it[0] for it in items]))
    bad = [(it[0], p) for it, p in zip(items, problems) if p]
    if bad and mode == "strict":
        path, problem = bad[0]
        raise DataError(f"{path}: unreadable image ({problem}); remove or replace it, or set "
                        f"DATASETS.IMAGE_CHECK skip")
    if bad:
        for path, problem in bad[:10]:
            logger.warning(f"{what}: skipping unreadable image {path} ({problem})")
        logger.warning(f"{what}: skipped {len(bad)} unreadable image(s) of {len(items)}"
                       + (" (first 10 listed)" if len(bad) > 10 else ""))
    return [it for it, p in zip(items, problems) if not p]
