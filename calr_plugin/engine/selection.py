"""The checkpoint a user should keep, chosen without labels (issue #22).

Shape shorthand: N training images, D feature dims.

A user has no labeled test split, so FastReID's ``model_best.pth`` (best test mAP) is not
theirs to pick, and training can end worse than the untrained model without anything in the
run noticing. Every stage-2 label step already extracts the training features of the model
as it stands (after e epochs; e = 0 is the untrained start); ``Selector`` scores them with
the label-free signal CALR.SELECT.SIGNAL (``labels/signals.py``), read on the held-out
images (CALR.SELECT.HOLDOUT, ``labels/holdout.py``). It keeps as ``OUTPUT_DIR/model_selected.pth``
the untrained start, unless a trained epoch beats the start by more than MARGIN_Z standard
errors of the paired gain, image by image against the start's and clustered by held-out
tracklet (``labels/signals.paired_gain``); then the highest-scoring such epoch. It writes
``OUTPUT_DIR/selection.json`` (every epoch's score, its gain over the start and that gain's
standard error, the pick) and warns while the gain is below minus that noise. Runs on rank 0
only; a resumed run reads the record back.
"""
import json
import logging
import os

import numpy as np
import torch

from ..labels.holdout import scored_units
from ..labels.signals import MARGIN_Z, SIGNALS, mean_of, paired_gain, replaces_kept
from ..utils.atomic import atomic_torch_save, atomic_write_text
from ..utils.dist import unwrap

logger = logging.getLogger("fastreid." + __name__)

SELECTED = "model_selected.pth"
RECORD = "selection.json"


class Selector:
    """Scores each epoch's features and keeps the best-scoring model (rank 0).

    Args:
        cfg (CfgNode): OUTPUT_DIR and CALR.SELECT.SIGNAL (a key of ``SIGNALS``).
        cams (ndarray): (N,) int camera ids of the training images.
        held_out (ndarray | None): (N,) bool, the images never trained on
            (``labels/holdout.py``); the signal is read on them, or on all images if none.
        groups (ndarray | None): (N,) int tracklet ids (-1: in none), with tracklets: a hit
            anywhere in the scored image's tracklet counts (``labels/signals.py``), and the
            gain's noise is counted over tracklets.
    """

    def __init__(self, cfg, cams, held_out=None, groups=None):
        self.name = cfg.CALR.SELECT.SIGNAL
        self.cams = cams
        self.groups = groups
        self.rows = np.flatnonzero(held_out) if held_out is not None and held_out.any() else None
        # The unit of the gain's noise: a scored image's tracklet; an image in none is its own.
        self.units = scored_units(np.arange(len(cams)) if self.rows is None else self.rows, groups)
        self.dir = cfg.OUTPUT_DIR
        self.record = None

    def _load(self, trained_epochs):
        """The record so far: empty at the start; read back (file, then the checkpoint's own
        copy of the pick, written first) when a run resumes at a later epoch."""
        empty = {"signal": self.name, "start": None, "start_values": None, "history": {}, "paired": {},
                 "selected": None}
        path = os.path.join(self.dir, RECORD)
        if trained_epochs == 0 or not os.path.isfile(path):
            return empty
        with open(path) as f:
            record = json.load(f)
        if record.get("signal") != self.name or "paired" not in record:  # another signal, or an older rule
            return empty
        selected = os.path.join(self.dir, SELECTED)
        if os.path.isfile(selected):
            record["selected"] = torch.load(selected, map_location="cpu", weights_only=False).get("selection")
        return record

    def __call__(self, model, feats, trained_epochs):
        """Score the model after ``trained_epochs`` epochs from its training features.

        Args:
            model (nn.Module): the model the features came from (saved when it scores best).
            feats (ndarray): (N, D) float32 features of the training images.
            trained_epochs (int): stage-2 epochs behind this model (0 = untrained).
        Returns:
            dict: {"signal/<name>": score} for metrics.json.
        """
        if self.record is None:
            self.record = self._load(trained_epochs)
        rec = self.record
        values = np.asarray(SIGNALS[self.name](feats, self.cams, self.rows, groups=self.groups), dtype=np.float64)
        score = mean_of(values)
        e = str(trained_epochs)
        rec["history"][e] = score
        if trained_epochs == 0:
            rec["start"] = score
            rec["start_values"] = [None if np.isnan(v) else float(v) for v in values]
        start, best = rec["start"], rec["selected"]
        gain, se = float("nan"), float("inf")
        if trained_epochs > 0 and rec["start_values"] is not None:
            gain, se = paired_gain(np.array(rec["start_values"], dtype=np.float64), values, self.units)
            rec["paired"][e] = {"gain": gain, "se": se}
        # A trained epoch replaces the start only when its gain over the start, image by image,
        # is above its noise, and then whatever the best epoch so far is. (No start: a run begun
        # before selection existed, resumed; its best epoch since the resume is kept.)
        if best is None or trained_epochs == 0 or (replaces_kept(gain, se, score, best["score"]) if start is not None
                                                   else score > best["score"]):
            rec["selected"] = {"epoch": trained_epochs, "score": score}
            # The checkpoint first, with its own copy of the pick: a kill between the two
            # writes leaves a record that _load corrects from the checkpoint.
            atomic_torch_save({"model": unwrap(model).state_dict(), "selection": rec["selected"]},
                              os.path.join(self.dir, SELECTED))
        atomic_write_text(os.path.join(self.dir, RECORD), json.dumps(rec, indent=1))
        sel = rec["selected"]
        if gain < -MARGIN_Z * se:
            logger.warning(f"after {trained_epochs} stage-2 epoch(s) the label-free quality signal {self.name} is "
                           f"{score:.4f}, below the untrained start's {start:.4f} by more than its noise "
                           f"({gain:+.4f}, {MARGIN_Z:g} x {se:.4f} over {self._units()}): training is making the "
                           f"features worse by this measure; {SELECTED} keeps the model after {sel['epoch']} "
                           f"epoch(s) ({sel['score']:.4f})")
        return {f"signal/{self.name}": score}

    def _units(self):
        held = "held-out " if self.rows is not None else ""
        return f"{len(np.unique(self.units))} {held}{'tracklets' if self.groups is not None else 'images'}"

    def summary(self):
        """One line for the end of training: what model_selected.pth holds and why."""
        rec = self.record
        if not rec or rec["selected"] is None:
            return None
        sel, start = rec["selected"], rec["start"]
        last = max(rec["history"], key=int)
        # Measured on video (docs/RESULTS.md 2g): held out frame by frame, the signal kept the
        # start in six runs whose final models were 15-21 mAP better; with whole tracklets held
        # out, 11-15 of them showed a gain past its noise in 1 of 4 runs that gained 19-32 mAP.
        # Say so where a user reads the pick.
        check = "check model_final.pth on a few labeled images before discarding it"
        video = (f" (with few held-out tracklets only a large gain shows: on generated video this kept the start "
                 f"in 3 of 4 runs that gained, docs/RESULTS.md 2g; {check})" if self.groups is not None else
                 f" (on crops cut from video without DATASETS.TRACKLETS folder this signal kept the start where "
                 f"training helped, docs/RESULTS.md 2g: {check})")
        if sel["epoch"] == 0:
            what = (f"the untrained start: no epoch's gain over it was above {MARGIN_Z:g} standard errors "
                    f"over {self._units()}")
            told = {e: p for e, p in rec["paired"].items() if np.isfinite(p["gain"]) and np.isfinite(p["se"])}
            if told:  # how close the nearest epoch came: with few units only large gains show
                e, p = max(told.items(), key=lambda kv: kv[1]["gain"] / max(kv[1]["se"], 1e-12))
                what += f" (closest: epoch {e}, {p['gain']:+.4f} against {MARGIN_Z:g} x {p['se']:.4f})"
            what += video
        else:
            what = f"the model after {sel['epoch']} stage-2 epoch(s)"
        start = "not scored (resumed from an older run)" if start is None else f"{start:.4f}"
        return (f"{os.path.join(self.dir, SELECTED)}: {what} ({self.name} {sel['score']:.4f}; the start "
                f"{start}, the final model {rec['history'][last]:.4f}); every epoch's score is in {RECORD}")
