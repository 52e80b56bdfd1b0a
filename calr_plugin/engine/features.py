"""Batched, eval-mode feature extraction of image files: the one path that training's label
step, the auto settings, the analysis tools and ``tools/search.py`` all go through.

Shape shorthand: N images, B batch, D feature dims, H x W = INPUT.SIZE_TEST.

Images go through FastReID's test transform, ``build_reid_test_loader`` (DATALOADER.NUM_WORKERS
workers, ``InferenceSampler``: each rank gets a contiguous shard) and the model's device (GPU
when the model is on one). ``Extractor`` holds one run's engine: it is chosen and built once
(a temporary ONNX export, or an ONNX Runtime session of an exported file) and reused by every
call, so a search that extracts its gallery in chunks and then its queries builds one ONNX
Runtime session. ``extract_features`` is one extraction with a fresh ``Extractor`` (training:
the weights change every epoch).

By default the shards are gathered on rank 0 only (``gather="main"``): the label step and the
auto settings compute on rank 0 and broadcast the result, so the other ranks get None instead
of an N x D copy they never read; ``gather="all"`` gives every rank the matrix.

Unreadable images (missing, truncated, not an image): training stops with one DataError line
naming them (``bad="raise"``), because its labels, cameras and checkpoints are kept by image
position and the training loader would read the same file later; search skips and names them
(``bad="skip"``), since one bad file in a folder of crops should not stop an index of the rest.

The label step re-extracts every training image each epoch, with the engine that
``CALR.EXTRACT.ENGINE`` picks (``torch``, ``onnxruntime`` or ``auto``):
:mod:`calr_plugin.engine.extract_engines` describes them and builds them.

Every extraction logs one INFO line (what, N images, engine, seconds) and leaves the engine it
used in ``features.last_engine`` ("torch" or "onnxruntime"), for the run to record.

With DDP, each rank's BatchNorm running statistics drift apart during training (the
trainer wraps the model with ``broadcast_buffers=False``), and a shard extracted with
rank r's statistics would differ from the same images on rank 0; on Market-style names
the shards are id ranges, so the offset would line up with identity.
``utils.dist.broadcast_buffers`` gives every rank rank 0's buffers first: the features (and
the evaluation) then equal a one-process run of rank 0's checkpoint.
"""
import collections
import logging
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.data import build_reid_test_loader
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import CalrError, DataError
from ..utils.dist import broadcast_buffers, gather_to, unwrap
from .extract_engines import (_has_onnxruntime, _NotUsable, _onnx_forward, _session_forward, _torch_forward,
                              resolve_engine)

__all__ = ["Extraction", "Extractor", "describe_unreadable", "extract_features", "last_engine", "read_rgb"]

logger = logging.getLogger("fastreid." + __name__)

# The engine the latest extraction in this process ran with ("torch" or "onnxruntime"; None
# before the first): what a run records next to its numbers.
last_engine = None


class _Progress:
    """A loader seen through a tqdm bar (main process, interactive terminal only)."""

    def __init__(self, loader, desc):
        self.loader, self.desc = loader, desc

    def __iter__(self):
        from tqdm import tqdm

        show = comm.is_main_process() and sys.stderr.isatty()
        return iter(tqdm(self.loader, desc=self.desc, unit="batch", leave=False, disable=not show))


def read_rgb(path):
    """An image file as an RGB PIL image, EXIF orientation applied.

    The same pixels as FastReID's ``read_image`` for RGB and greyscale files (what it reads
    correctly); palette, RGBA and CMYK files are converted to RGB instead of being passed on
    with other channel counts.
    """
    with Image.open(path) as img:
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001  (FastReID ignores a broken EXIF block the same way)
            pass
        return img.convert("RGB")  # decodes the whole file: a truncated one fails here


class _ImageFiles(Dataset):
    """Test-transformed images of files; an unreadable file gives a blank image and its error."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        try:
            img, error = read_rgb(self.paths[index]), ""
        except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ... by format)
            # the reason without the path (the caller names the file)
            reason = str(e).replace(f" '{self.paths[index]}'", "").replace("\n", " ")
            img, error = Image.new("RGB", (8, 16)), f"{type(e).__name__}: {reason}"
        return {"images": self.transform(img), "index": index, "error": error}


def describe_unreadable(bad, first=3):
    """One line naming unreadable images: their count and the first few with the reason.

    Args:
        bad (list[tuple[str, str]]): (path, reason).
    """
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:first])
    return f"{len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: {shown}" + ("; ..." if len(bad) > first else "")


Extraction = collections.namedtuple("Extraction", ["feats", "ok", "bad"])
Extraction.__doc__ = """One extraction's result.

feats: (M, D) float32 L2-normalised rows of the M readable images, in path order.
ok: (N,) bool, which paths those rows are. bad: list of (path, reason) of the unreadable ones.
"""


class Extractor:
    """One run's extraction machinery: loader, engine (chosen and built once), gathering.

    Args:
        cfg (CfgNode): INPUT.SIZE_TEST (transform), TEST.IMS_PER_BATCH, DATALOADER.NUM_WORKERS,
            SOLVER.AMP.ENABLED and CALR.EXTRACT.ENGINE (with a model).
        model (nn.Module | None): the (possibly DDP-wrapped) model; (B, D) in eval mode. Its
            mode, parameters and memory format are left as they were. Its weights are read
            when the engine is built (the first batch): make a new Extractor after training.
        onnx (str | None): an exported graph (tools/export_onnx.py) instead of a model: one
            ONNX Runtime session for the Extractor's life.
    Raises:
        CalrError: an engine that cannot run here (see ``resolve_engine``), an ONNX file that
        ONNX Runtime cannot load.
    """

    def __init__(self, cfg, model=None, onnx=None):
        if (model is None) == (onnx is None):
            raise ValueError("give a model or an ONNX file")
        self.cfg, self.model, self.onnx = cfg, model, onnx
        self.transform = build_transforms(cfg, is_train=False)
        self._forward, self._cleanup = None, None
        if onnx is not None:
            if not _has_onnxruntime():
                raise CalrError(f"{onnx}: ONNX Runtime is not installed (pip install -e .[deploy])")
            self.module, self.engine = None, "onnxruntime"
            self._forward = _session_forward(onnx)  # the one session of this Extractor
        else:
            self.module = unwrap(model)
            self.engine = resolve_engine(cfg.CALR.EXTRACT.ENGINE, next(self.module.parameters()).device)

    def _start(self, probe):
        """Build the engine at the first batch (the ONNX check needs real images)."""
        if self.engine == "onnxruntime":
            try:
                self._forward, self._cleanup = _onnx_forward(self.module, self.cfg, probe[:3].cpu())
                return
            except _NotUsable as e:
                if self.cfg.CALR.EXTRACT.ENGINE == "onnxruntime":
                    raise CalrError(f"CALR.EXTRACT.ENGINE onnxruntime: {e}") from e
                logger.warning(f"feature extraction: {e}; using PyTorch")
                self.engine = "torch"
        self._forward, self._cleanup = _torch_forward(self.module, self.cfg)

    def close(self):
        """Remove the temporary ONNX export, if any. The Extractor cannot be used after."""
        if self._cleanup is not None:
            self._cleanup()
        self._forward = self._cleanup = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, paths, desc="features", bad="raise", gather="main"):
        """Features of ``paths``, sharded over ranks.

        Args:
            paths (list[str]): N image paths.
            desc (str): what is extracted (progress bar and log line).
            bad (str): "raise": an unreadable image stops with a DataError (on the rank that
                read it); "skip": it is left out and named in ``Extraction.bad``.
            gather (str): "main": the result on rank 0, None on the others; "all": on every rank.
        Returns:
            Extraction | None: see ``Extraction``; None on ranks other than 0 with gather="main".
        Raises:
            DataError: an unreadable image with bad="raise" (one line naming the first few).
        """
        global last_engine
        if bad not in ("raise", "skip") or gather not in ("main", "all"):
            raise ValueError(f"bad={bad!r}, gather={gather!r}")
        if self.model is not None:
            broadcast_buffers(self.model)
        t0 = time.perf_counter()
        loader, _ = build_reid_test_loader(test_set=_ImageFiles(list(paths), self.transform),
                                           test_batch_size=self.cfg.TEST.IMS_PER_BATCH, num_query=0,
                                           num_workers=self.cfg.DATALOADER.NUM_WORKERS)
        index, feats, unreadable = [], [], []
        for batch in _Progress(loader, desc):
            # On CUDA, FastReID's DataLoaderX has moved every tensor of the batch to the GPU already.
            rows = batch["index"].cpu()
            ok = torch.tensor([not e for e in batch["error"]], dtype=torch.bool)
            unreadable += [(int(i), e) for i, e in zip(rows, batch["error"]) if e]
            if not ok.any():
                continue
            images = batch["images"] if ok.all() else batch["images"][ok.to(batch["images"].device)]
            if self._forward is None:
                self._start(images)
            feats.append(self._forward(images))
            index.append(rows[ok])
        unreadable = [(paths[i], e) for i, e in unreadable]
        for rows, f in zip(index, feats):
            finite = torch.isfinite(f).all(1)
            if not finite.all():  # a diverged model: NaN rows would cluster and rank silently
                raise CalrError(f"{desc}: {int((~finite).sum())} features are not finite (NaN or inf), the first "
                                f"of {paths[int(rows[~finite][0])]}; the model's weights or its input are broken")
        if unreadable and bad == "raise":
            raise DataError(f"{describe_unreadable(unreadable)}; every training image is needed (labels and "
                            f"cameras are kept by image position): fix or remove them")
        last_engine = self.engine  # on every rank, before rank 0 alone goes on
        local = (torch.cat(index) if index else torch.zeros(0, dtype=torch.long),
                 torch.cat(feats) if feats else torch.zeros(0), unreadable)
        # With gather="main" only rank 0 reads the features (the label step and auto settings
        # broadcast what they compute from them): the others send their shard and keep nothing.
        shards = gather_to(local, gather)
        if shards is None:
            return None
        index = torch.cat([s[0] for s in shards]).numpy()
        feats = torch.cat([s[1] for s in shards if s[1].numel()]) if index.size else torch.zeros(0, 0)
        unreadable = [b for s in shards for b in s[2]]
        if len(index) + len(unreadable) != len(paths) or len(np.unique(index)) != len(index):
            raise RuntimeError(f"extracted {len(index)} features and {len(unreadable)} unreadable images "
                               f"for {len(paths)} images")
        order = np.argsort(index, kind="stable")  # the sampler's shards are in order already; cheap insurance
        ok = np.zeros(len(paths), dtype=bool)
        ok[index] = True
        feats = F.normalize(feats[torch.from_numpy(order)].float(), dim=1).numpy().astype(np.float32, copy=False) \
            if index.size else np.zeros((0, 0), np.float32)
        logger.info(f"{desc}: {len(paths)} images in {time.perf_counter() - t0:.1f} s with {self.engine}"
                    + (f", {len(unreadable)} unreadable" if unreadable else ""))
        return Extraction(feats, ok, unreadable)


def extract_features(model, paths, cfg, desc="features", gather="main"):
    """L2-normalised eval features of images (rank 0's buffers), for training and analysis.

    Args:
        model (nn.Module): the (possibly DDP-wrapped) model; returns (B, D) in eval mode.
            Its mode, parameters and memory format are left as they were.
        paths (list[str]): N image paths; every one must be readable.
        cfg (CfgNode): for INPUT.SIZE_TEST, TEST.IMS_PER_BATCH, DATALOADER.NUM_WORKERS,
            SOLVER.AMP.ENABLED and CALR.EXTRACT.ENGINE.
        desc (str): what is extracted (progress bar, log line).
        gather (str): "main" (the default): the features on rank 0, None on other ranks;
            "all": on every rank.
    Returns:
        ndarray | None: (N, D) float32; None on ranks other than 0 with gather="main". The
        engine used is in ``features.last_engine``.
    Raises:
        DataError: an image cannot be read (one line naming it).
    """
    with Extractor(cfg, model=model) as extractor:
        result = extractor.run(paths, desc=desc, bad="raise", gather=gather)
    return None if result is None else result.feats
