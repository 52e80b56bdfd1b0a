"""CALRTrainer: FastReID's DefaultTrainer with calr-reid's datasets, seeding and loaders.

For ``MODEL.META_ARCHITECTURE Baseline`` it trains FastReID's supervised Baseline
(used for the supervised upper bound). The CALR stages are added by the CALR meta
architecture's hooks (see ``calr_plugin.hooks``).
"""
import logging
import os

from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data import build as data_build
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer
from fastreid.utils import comm

from .data.datasets import dataset_kwargs

logger = logging.getLogger(__name__)


def dataset_root():
    """$FASTREID_DATASETS, read now (FastReID reads it once, when fastreid.data is imported)."""
    return os.environ.get("FASTREID_DATASETS", data_build._root)


def load_dataset(cfg, name):
    """Instantiate a registered dataset with the keys our datasets read from the config."""
    return DATASET_REGISTRY.get(name)(root=dataset_root(), combineall=cfg.DATASETS.COMBINEALL,
                                      **dataset_kwargs(cfg))


def train_items(cfg):
    """FastReID train items ``(path, pid, camid)`` of every dataset in DATASETS.NAMES."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = load_dataset(cfg, name)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    return items


class CALRTrainer(DefaultTrainer):
    """DefaultTrainer whose loaders know ``DATASETS.FOLDER``/``SYNTHETIC`` and
    ``DATALOADER.NUM_WORKERS`` (FastReID's test loader hard-codes 4 workers)."""

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        train_set = CommDataset(train_items(cfg), build_transforms(cfg, is_train=True), relabel=True)
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        data = load_dataset(cfg, dataset_name)
        if comm.is_main_process():
            data.show_test()
        test_set = CommDataset(data.query + data.gallery, build_transforms(cfg, is_train=False),
                               relabel=False)
        return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                      num_query=len(data.query),
                                      num_workers=cfg.DATALOADER.NUM_WORKERS)


def setup_run(cfg, args):
    """FastReID's default_setup (logger, config dump) plus the calr-reid seed.

    With ``SEED >= 0`` every rank seeds python, numpy and torch with ``SEED + rank``;
    FastReID's samplers draw their shared seed from the seeded numpy RNG, so sampling,
    augmentation and training order repeat on CPU.
    """
    import torch
    from fastreid.engine import default_setup
    from fastreid.utils.env import seed_all_rng

    default_setup(cfg, args)
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED + comm.get_rank())
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
