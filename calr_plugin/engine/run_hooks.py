"""Run hooks that are not about labels: a progress bar, and the resume checkpoint of every epoch."""
import sys

from fastreid.engine.train_loop import HookBase
from tqdm import tqdm


class ProgressBar(HookBase):
    """A tqdm bar with ETA over each epoch's iterations, on the main process of an
    interactive terminal; in logs (CI, files) FastReID's metric lines do this job."""

    def __init__(self, desc):
        self.desc = desc
        self.bar = None

    def before_epoch(self):
        t = self.trainer
        if sys.stderr.isatty():
            self.bar = tqdm(total=t.iters_per_epoch, desc=f"{self.desc} epoch {t.epoch + 1}/{t.max_epoch}",
                            unit="it", leave=False)

    def after_step(self):
        if self.bar is not None:
            self.bar.update(1)

    def after_epoch(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ResumeCheckpointer(HookBase):
    """Saves ``model_last.pth`` (atomically) after every epoch, so ``--resume`` loses at
    most the epoch in progress, whatever SOLVER.CHECKPOINT_PERIOD is."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def after_epoch(self):
        self.checkpointer.save("model_last", epoch=self.trainer.epoch)
