"""CALRTrainer: FastReID's DefaultTrainer for CALR's two stages (and for Baseline).

``MODEL.META_ARCHITECTURE CALR``: ``train()`` runs stage 1 (one encoder per camera,
resumable camera by camera) unless refinement is off or ``CALR.STAGE1.LABELS`` points
to saved labels, then stage 2, whose pseudo labels a hook rebuilds every epoch.
``MODEL.META_ARCHITECTURE Baseline``: FastReID's supervised Baseline (used for the
supervised upper bound), with the same loaders, seeding and step.
"""
import logging
import os
import time

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer, hooks
from fastreid.engine.train_loop import SimpleTrainer, TrainerBase
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..data.build import check_test_split, has_test_split, load_dataset, no_test_split_message, train_items
from ..data.datasets import TrainSet, tracklets_of
from ..errors import CalrError, ConfigError, DataError
from ..modeling import build as modeling_build
from ..utils.dist import broadcast_buffers
from .checkpoint import check_head_matches
from .hooks import Stage1LabelHook, Stage2LabelHook
from .run_hooks import ProgressBar, ResumeCheckpointer
from .run_setup import save_config
from .stage1 import load_local_labels, run_stage1

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt


class TrainingDiverged(CalrError):
    """The loss became NaN or infinite."""


class StepRunner(SimpleTrainer):
    """One training step: optional AMP (torch.amp) and channels_last, a finite-loss check.

    Replaces FastReID's SimpleTrainer/AMPTrainer (whose AMP uses the deprecated
    ``torch.cuda.amp`` and whose NaN check runs on rank 0 only, after backward).
    """

    def __init__(self, model, data_loader, optimizer, param_wrapper, amp=False, channels_last=False):
        super().__init__(model, data_loader, optimizer, param_wrapper)
        self.amp = amp
        self.channels_last = channels_last
        self.grad_scaler = torch.amp.GradScaler("cuda") if amp else None

    def run_step(self):
        assert self.model.training, "[StepRunner] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.channels_last:
            data["images"] = data["images"].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", enabled=self.amp):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        if not torch.isfinite(losses):
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
            raise TrainingDiverged(f"loss is {losses.item()} at iteration {self.iter} ({terms})")
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()


class CALRTrainer(DefaultTrainer):
    """DefaultTrainer with calr-reid's datasets, loaders, step, seeding and the CALR stages.

    Args:
        cfg (CfgNode): a config from ``load_config``.
        train_set (TrainSet | None): the images to train on (default: DATASETS.NAMES).
        stage (int): 2 = the CALR run (stage 1 runs inside ``train()``); 1 = one
            camera's stage-1 encoder (built by ``calr_plugin.engine.stage1``).
    """

    def __init__(self, cfg, train_set=None, stage=2):
        TrainerBase.__init__(self)
        if not logging.getLogger("fastreid").isEnabledFor(logging.INFO):
            setup_logger()
        self.stage = stage
        self.skip_epoch = False
        self.is_calr = cfg.MODEL.META_ARCHITECTURE == "CALR"
        if self.is_calr:
            self.train_set = train_set or TrainSet(train_items(cfg))
            if train_set is None and cfg.DATASETS.TRACKLETS == "folder":
                tracklets_of(self.train_set)
            if stage == 2:
                from ..auto.settings import resolve

                cfg = resolve(cfg, self.train_set, self.build_model)
            if stage == 2 and self.train_set.num_cameras < 2:
                cfg = self.single_camera(cfg)
            world = comm.get_world_size()
            if (cfg.SOLVER.IMS_PER_BATCH // world) % cfg.DATALOADER.NUM_INSTANCE:
                raise ConfigError(f"SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH}: expected a multiple of "
                                  f"{world} processes x DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE}), "
                                  f"so that every process gets whole clusters")
            cfg = self.auto_scale_calr(cfg, self.train_set)
            data_loader = ()  # the label hook installs a loader before the first step
            iters_per_epoch = cfg.CALR.ITERS_PER_EPOCH or max(1, len(self.train_set) // cfg.SOLVER.IMS_PER_BATCH)
        else:
            data_loader = self.build_train_loader(cfg)
            cfg = self.auto_scale_hyperparams(cfg, data_loader.dataset.num_classes)
            iters_per_epoch = max(1, len(data_loader.dataset) // cfg.SOLVER.IMS_PER_BATCH)
        if cfg.MODEL.BN_CHUNK:
            from ..modeling.chunk_bn import check_chunk

            check_chunk(cfg.MODEL.BN_CHUNK, cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size(),
                        "CALR.STAGE1.IMS_PER_BATCH" if stage == 1 else "SOLVER.IMS_PER_BATCH")
        model = self.build_model(cfg)
        cuda = cfg.MODEL.DEVICE.startswith("cuda")
        channels_last = cfg.SOLVER.CHANNELS_LAST and cuda
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer, param_wrapper = self.build_optimizer(cfg, model)
        if comm.get_world_size() > 1:
            model = DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if cuda else None,
                                            broadcast_buffers=False)
        self._trainer = StepRunner(model, data_loader, optimizer, param_wrapper,
                                   amp=cfg.SOLVER.AMP.ENABLED and cuda, channels_last=channels_last)
        self.iters_per_epoch = iters_per_epoch
        self.scheduler = self.build_lr_scheduler(cfg, optimizer, iters_per_epoch)
        # The AMP loss scale is state too: without it a resumed GPU run restarts at 2^16 and
        # skips steps until it has found the scale again.
        scaler = {"grad_scaler": self._trainer.grad_scaler} if self._trainer.grad_scaler is not None else {}
        self.checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                         optimizer=optimizer, **self.scheduler, **scaler)
        self.start_epoch = 0
        self.max_epoch = cfg.SOLVER.MAX_EPOCH
        self.max_iter = self.max_epoch * iters_per_epoch
        self.warmup_iters = cfg.SOLVER.WARMUP_ITERS
        self.delay_epochs = cfg.SOLVER.DELAY_EPOCHS
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def single_camera(cfg):
        """One training camera: nothing to refine across cameras or to align.

        CALR.SINGLE_CAMERA "error" stops; "baseline" trains the Baseline preset instead.
        """
        if cfg.CALR.SINGLE_CAMERA == "error":
            raise DataError("the training set has a single camera: CALR refines and aligns across cameras. "
                            "Set CALR.SINGLE_CAMERA baseline to train the Baseline preset on it")
        logger.warning("the training set has a single camera: training the Baseline preset "
                       "(no stage 1, refinement, alignment or weighting), as CALR.SINGLE_CAMERA says")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.CALR.REFINE.ENABLED = False
        cfg.CALR.ALIGN.ENABLED = False
        cfg.CALR.WEIGHTING.ENABLED = False
        cfg.freeze()
        return cfg

    @staticmethod
    def auto_scale_calr(cfg, train_set):
        """Fill in what CALR reads from the data: the number of cameras (never the ids).

        The identity classifier of EmbeddingHead is unused by CALR: 1 class, not the
        ground-truth count FastReID would put there.
        """
        cfg = cfg.clone()
        cfg.defrost()
        if cfg.MODEL.HEADS.NUM_CLASSES == 0:
            cfg.MODEL.HEADS.NUM_CLASSES = 1
        if cfg.CALR.ALIGN.NUM_CAMERAS == 0:
            cfg.CALR.ALIGN.NUM_CAMERAS = train_set.num_cameras
        elif cfg.CALR.ALIGN.ENABLED and cfg.CALR.ALIGN.NUM_CAMERAS < train_set.num_cameras:
            # The camera classifier's targets are the camera ids: one out of range would stop
            # the first step with an index error inside the cross-entropy.
            raise ConfigError(f"CALR.ALIGN.NUM_CAMERAS = {cfg.CALR.ALIGN.NUM_CAMERAS}: below the "
                              f"{train_set.num_cameras} training cameras "
                              f"({'inferred' if cfg.DATASETS.CAMERAS == 'infer' else 'given'}); expected 0 "
                              f"(from the data) or at least {train_set.num_cameras}")
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            save_config(cfg)
        cfg.freeze()
        return cfg

    def build_hooks(self):
        if not self.is_calr:
            ret = super().build_hooks()
        elif self.stage == 1:
            ret = [Stage1LabelHook(self.cfg, self.train_set), hooks.IterationTimer(),
                   hooks.LRScheduler(self.optimizer, self.scheduler)]
            if comm.is_main_process():
                ret.append(hooks.PeriodicWriter(self.build_writers(), self.iters_per_epoch))
        else:
            # Local labels are attached in train(): stage 1 runs there, resumably.
            ret = [Stage2LabelHook(self.cfg, self.train_set, local_labels=None)]
            ret += super().build_hooks()
        if comm.is_main_process():
            ret.append(ProgressBar(f"stage {self.stage}" if self.is_calr else "train"))
            # After FastReID's PeriodicCheckpointer (so last_checkpoint names model_last),
            # before the writers.
            writer_at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret))
            ret.insert(writer_at, ResumeCheckpointer(self.checkpointer))
        return ret

    def run_step(self):
        if self.skip_epoch:
            return
        try:
            super().run_step()
        except TrainingDiverged as e:
            last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else None
            where = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
            raise TrainingDiverged(f"{e}, epoch {self.epoch}; training stopped ({where}); lower SOLVER.BASE_LR "
                                   f"or check the data, then rerun with --resume") from None

    def resume_or_load(self, resume=True):
        self.resume = resume  # stage 1 resumes camera by camera only when asked to
        if self.cfg.MODEL.WEIGHTS and not (resume and self.checkpointer.has_checkpoint()):
            check_head_matches(self.model, self.cfg.MODEL.WEIGHTS)
        super().resume_or_load(resume=resume)
        if resume and self.start_epoch > 0:
            logger.info(f"resuming at epoch {self.start_epoch} of {self.max_epoch}")

    def train(self):
        if self.is_calr and self.stage == 2:
            self._stage2_hook().local_labels = self._local_labels()
        if self.stage == 1:
            return TrainerBase.train(self, self.start_epoch, self.max_epoch, self.iters_per_epoch)
        if self.start_epoch >= self.max_epoch:
            logger.info("training already finished; evaluating the final model")
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results
        return super().train()

    def _stage2_hook(self):
        return next(h for h in self._hooks if isinstance(h, Stage2LabelHook))

    def _local_labels(self):
        """Stage-1 local labels: from CALR.STAGE1.LABELS, or by running (resuming) stage 1."""
        if not self.cfg.CALR.REFINE.ENABLED:
            return None
        if self.cfg.CALR.STAGE1.LABELS:
            return load_local_labels(self.cfg.CALR.STAGE1.LABELS, self.train_set)
        return run_stage1(self.cfg, self.train_set, type(self), resume=getattr(self, "resume", False))

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        items = train_items(cfg)
        if any(it[1] is None for it in items):
            raise DataError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} trains on person ids and the "
                            f"training images have none (train/<camera>/ folders); use CALR")
        train_set = CommDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_model(cls, cfg):
        """FastReID's model, with chunked BatchNorm when MODEL.BN_CHUNK > 0 (``modeling.build``)."""
        model = modeling_build.build_model(cfg)
        logger.info(f"Model:\n{model}")  # as DefaultTrainer.build_model logs it
        return model

    @classmethod
    def test(cls, cfg, model):
        """FastReID's evaluation of every DATASETS.TESTS dataset that has a labeled test split.

        Datasets without one (camera folders with no query/) are skipped with one line;
        with none left, the result is {} (``--eval-only`` turns that into an error).
        """
        broadcast_buffers(model)  # every rank evaluates rank 0's model, as --eval-only of its checkpoint
        names = []
        for name in cfg.DATASETS.TESTS:
            ok, data = has_test_split(cfg, name) if name == "ReIDFolder" else (True, None)
            if ok:
                names.append(name)
            elif comm.is_main_process():
                logger.info(no_test_split_message(name, data) + "; not evaluated")
        if not names:
            return {}
        if len(names) < len(cfg.DATASETS.TESTS):
            cfg = cfg.clone()
            cfg.defrost()
            cfg.DATASETS.TESTS = tuple(names)
            cfg.freeze()
        return super().test(cfg, model)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        data = load_dataset(cfg, dataset_name)
        check_test_split(dataset_name, data.query, data.gallery)
        if comm.is_main_process():
            data.show_test()
        test_set = CommDataset(data.query + data.gallery, build_transforms(cfg, is_train=False),
                               relabel=False)
        return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                      num_query=len(data.query),
                                      num_workers=cfg.DATALOADER.NUM_WORKERS)


__all__ = ["CALRTrainer", "StepRunner", "TrainingDiverged"]
