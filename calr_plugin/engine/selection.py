"""The checkpoint a user should keep, chosen without labels (issue #22).

Shape shorthand: N training images, D feature dims.

A user has no labeled test split, so FastReID's ``model_best.pth`` (best test mAP) is not
theirs to pick, and training can end worse than the untrained model without anything in the
run noticing. Every stage-2 label step already extracts the training features of the model
as it stands (after e epochs; e = 0 is the untrained start); ``Selector`` scores them with
the label-free signal CALR.SELECT.SIGNAL (``labels/signals.py``), read on the held-out
images (CALR.SELECT.HOLDOUT, ``labels/holdout.py``). It keeps as ``OUTPUT_DIR/model_selected.pth``
the untrained start, unless a trained epoch beats the start's score by more than the score's
noise (``Selector.margin``); then the highest-scoring such epoch. It writes
``OUTPUT_DIR/selection.json`` (every epoch's score, the start, the margin, the pick) and warns
while a score is below the start's by more than the noise. Runs on rank 0 only; a resumed run
reads the record back.
"""
import json
import logging
import os

import numpy as np
import torch

from ..labels.signals import SHARES, SIGNALS
from ..utils.atomic import atomic_torch_save, atomic_write_text
from ..utils.dist import unwrap

logger = logging.getLogger("fastreid." + __name__)

SELECTED = "model_selected.pth"
RECORD = "selection.json"
MARGIN_Z = 2.0


class Selector:
    """Scores each epoch's features and keeps the best-scoring model (rank 0).

    Args:
        cfg (CfgNode): OUTPUT_DIR and CALR.SELECT.SIGNAL (a key of ``SIGNALS``).
        cams (ndarray): (N,) int camera ids of the training images.
        held_out (ndarray | None): (N,) bool, the images never trained on
            (``labels/holdout.py``); the signal is read on them, or on all images if none.
        groups (ndarray | None): (N,) int tracklet ids (-1: in none), with tracklets: a hit
            anywhere in the scored image's tracklet counts (``labels/signals.py``).
    """

    def __init__(self, cfg, cams, held_out=None, groups=None):
        self.name = cfg.CALR.SELECT.SIGNAL
        self.cams = cams
        self.groups = groups
        self.rows = np.flatnonzero(held_out) if held_out is not None and held_out.any() else None
        self.dir = cfg.OUTPUT_DIR
        self.record = None

    def _load(self, trained_epochs):
        """The record so far: empty at the start; read back (file, then the checkpoint's own
        copy of the pick, written first) when a run resumes at a later epoch."""
        empty = {"signal": self.name, "start": None, "history": {}, "selected": None}
        path = os.path.join(self.dir, RECORD)
        if trained_epochs == 0 or not os.path.isfile(path):
            return empty
        with open(path) as f:
            record = json.load(f)
        if record.get("signal") != self.name:
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
        score = float(SIGNALS[self.name](feats, self.cams, self.rows, groups=self.groups))
        rec["history"][str(trained_epochs)] = score
        if trained_epochs == 0:
            rec["start"] = score
        best, margin = rec["selected"], self.margin(rec["start"])
        rec["margin"] = margin
        # A trained epoch replaces the start only when it beats it by more than the score's
        # noise, and then whatever the best epoch so far is. (No start: a run begun before
        # selection existed, resumed; its best epoch since the resume is kept.)
        bar = max(best["score"], rec["start"] + margin if rec["start"] is not None else -np.inf) if best else None
        if best is None or trained_epochs == 0 or score > bar:
            rec["selected"] = {"epoch": trained_epochs, "score": score}
            # The checkpoint first, with its own copy of the pick: a kill between the two
            # writes leaves a record that _load corrects from the checkpoint.
            atomic_torch_save({"model": unwrap(model).state_dict(), "selection": rec["selected"]},
                              os.path.join(self.dir, SELECTED))
        atomic_write_text(os.path.join(self.dir, RECORD), json.dumps(rec, indent=1))
        start, sel = rec["start"], rec["selected"]
        if start is not None and trained_epochs > 0 and score < start - margin:
            logger.warning(f"after {trained_epochs} stage-2 epoch(s) the label-free quality signal {self.name} is "
                           f"{score:.4f}, below the untrained start's {start:.4f} by more than its noise "
                           f"({margin:.4f}): training is making the features worse by this measure; {SELECTED} "
                           f"keeps the model after {sel['epoch']} epoch(s) ({sel['score']:.4f})")
        return {f"signal/{self.name}": score}

    def margin(self, start):
        """How far a score must move from the start's to count: for a share of the R scored
        images, MARGIN_Z standard errors of a difference of two shares, z sqrt(2 p (1 - p) / R)
        at the start's share p; 0 for other signals. z = 2 is a round value, not tuned on mAP."""
        if self.name not in SHARES or start is None:
            return 0.0
        r = len(self.rows) if self.rows is not None else len(self.cams)
        p = min(max(start, 1.0 / r), 1 - 1.0 / r)
        return float(MARGIN_Z * np.sqrt(2 * p * (1 - p) / r))

    def summary(self):
        """One line for the end of training: what model_selected.pth holds and why."""
        rec = self.record
        if not rec or rec["selected"] is None:
            return None
        sel, start = rec["selected"], rec["start"]
        last = max(rec["history"], key=int)
        # Measured wrong on video crops held out frame by frame (docs/RESULTS.md 2g): the start
        # kept in six runs whose final models were 15-21 mAP better; say so where a user reads
        # the pick. With tracklets (whole tracklets held out) it is not known to fail.
        video = ("" if self.groups is not None else
                 " (on crops cut from video without DATASETS.TRACKLETS folder this signal kept the start where "
                 "training helped, docs/RESULTS.md 2g: check model_final.pth on a few labeled images before "
                 "discarding it)")
        what = ("the untrained start: no epoch scored above it by more than the noise" + video) \
            if sel["epoch"] == 0 else f"the model after {sel['epoch']} stage-2 epoch(s)"
        start = "not scored (resumed from an older run)" if start is None else f"{start:.4f}"
        return (f"{os.path.join(self.dir, SELECTED)}: {what} ({self.name} {sel['score']:.4f}; the start "
                f"{start}, the final model {rec['history'][last]:.4f}); every epoch's score is in {RECORD}")
