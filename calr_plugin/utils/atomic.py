"""Crash-safe file writes: a file is either the complete old version or the complete new one.

Every artefact a run resumes from (checkpoints, stage-1 labels, per-epoch labels) goes
through these helpers: write a temporary file in the same folder, flush and fsync it,
then ``os.replace`` it over the target (atomic on POSIX within one file system). A kill
or a full disk during the write leaves the previous file untouched and at most a stray
``.tmp`` file, which is removed on failure when possible.
"""
import io
import os
import tempfile

import numpy as np


def _atomic_write(path, write_fn, mode="wb"):
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (a run's
        # outputs and converted weights are read by other users and tools).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path, data: bytes):
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str):
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj, path):
    """torch.save(obj, path), atomically. Serialises to memory first so a failure while
    pickling never touches the disk."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path, array):
    """np.save(path, array), atomically (path should end in .npy)."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_savez(path, **arrays):
    """np.savez(path, **arrays), atomically (path should end in .npz)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
