"""One probe per compat shim: returns when FastReID behaves, raises when it is broken.

``tests/test_compat.py`` runs each probe twice: in the test process (every shim
applied: it must pass) and in a subprocess with ``CALR_COMPAT_SKIP=<shim>`` (it must
fail), which proves that each shim is still needed.

    CALR_COMPAT_SKIP=optimizer_contiguous python tests/compat_probes.py optimizer_contiguous
"""
import os
import stat
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(**over):
    from calr_plugin import load_config

    opts = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.HEADS.NUM_CLASSES", "4",
            "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2"]
    for k, v in over.items():
        opts += [k.replace("__", "."), str(v)]
    return load_config("", opts)


def _batch(n=8, classes=4):
    import torch

    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand(n, 3, 64, 32, generator=g) * 255,
            "targets": torch.arange(n) % classes, "camids": torch.zeros(n, dtype=torch.long)}


def probe_torch_six():
    import calr_plugin  # noqa: F401
    import fastreid.data  # noqa: F401  (fails with "No module named 'torch._six'")


def probe_collections_abc():
    import calr_plugin  # noqa: F401
    import fastreid.engine  # noqa: F401  (fails with "cannot import name 'Mapping'")


def probe_no_download():
    """PRETRAIN True, no PRETRAIN_PATH, empty cache: a clear error, no download attempt."""
    import calr_plugin  # noqa: F401
    from fastreid.modeling.backbones import build_backbone

    os.environ["TORCH_HOME"] = tempfile.mkdtemp()
    cfg = _cfg(MODEL__BACKBONE__PRETRAIN=True)
    try:
        build_backbone(cfg)
    except FileNotFoundError as e:
        assert "never downloads" in str(e) and "PRETRAIN_PATH" in str(e), e
        return
    raise AssertionError("expected a FileNotFoundError")


def probe_optimizer_contiguous():
    """The default optimizer must change the weights after one training step."""
    import calr_plugin  # noqa: F401
    import torch
    from fastreid.engine import DefaultTrainer
    from fastreid.engine.train_loop import SimpleTrainer
    from fastreid.utils.events import EventStorage

    cfg = _cfg()
    model = DefaultTrainer.build_model(cfg)
    optimizer, wrapper = DefaultTrainer.build_optimizer(cfg, model)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = SimpleTrainer(model, [_batch()] * 3, optimizer, wrapper)
    with EventStorage(0):
        for it in range(2):
            trainer.iter = it
            trainer.run_step()
    changed = sum(not torch.equal(before[k], v) for k, v in model.named_parameters())
    assert changed >= len(before) - 1, f"only {changed}/{len(before)} parameters changed"


def probe_cpu_dataloader():
    import calr_plugin  # noqa: F401
    import torch
    from fastreid.data import build_reid_test_loader

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"images": torch.zeros(3, 8, 4), "targets": i, "camids": 0, "img_paths": str(i)}

    loader, _ = build_reid_test_loader(test_set=Items(), test_batch_size=2, num_query=2, num_workers=0)
    assert len(list(loader)) == 2


def probe_evaluator_no_exit():
    """A machine where the Cython build fails: evaluation must not kill the process."""
    import calr_plugin  # noqa: F401
    import torch

    sys.modules["fastreid.evaluation.rank_cylib.rank_cy"] = None  # as if never built
    fake_bin = tempfile.mkdtemp()
    make = os.path.join(fake_bin, "make")
    with open(make, "w") as f:
        f.write("#!/bin/sh\nexit 1\n")
    os.chmod(make, os.stat(make).st_mode | stat.S_IEXEC)
    os.environ["PATH"] = fake_bin + os.pathsep + os.environ["PATH"]
    from fastreid.evaluation import ReidEvaluator

    evaluator = ReidEvaluator(_cfg(), num_query=2)
    # 2 queries, 12 gallery images; query i's match is gallery image i (other camera).
    pids = torch.tensor([0, 1] + list(range(12)))
    camids = torch.tensor([0, 0] + [1] * 12)
    feats = torch.cat([torch.eye(12)[:2], torch.eye(12)])
    evaluator.process({"targets": pids, "camids": camids}, feats)
    results = evaluator.evaluate()
    assert results["Rank-1"] == 100.0 and results["mAP"] == 100.0


def probe_rerank_cpu():
    import calr_plugin  # noqa: F401
    import torch
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    feats = torch.nn.functional.normalize(torch.randn(30, 16, generator=torch.Generator().manual_seed(0)))
    dist = reid_evaluation.build_dist(feats[:10], feats[10:], metric="jaccard", k1=6, k2=2)
    assert dist.shape == (10, 20) and np.isfinite(dist).all()


def probe_checkpoint_load():
    """A trusted checkpoint holding a numpy scalar (older FastReID / other tools) loads."""
    import calr_plugin  # noqa: F401
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    path = os.path.join(tempfile.mkdtemp(), "old.pth")
    torch.save({"model": model.state_dict(), "metric": np.float64(0.5)}, path)
    extra = Checkpointer(torch.nn.Linear(2, 2)).load(path)
    assert float(extra["metric"]) == 0.5


def probe_checkpoint_atomic():
    """A failure while writing must leave the previous checkpoint intact."""
    import calr_plugin  # noqa: F401
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    d = tempfile.mkdtemp()
    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer(model, d)
    ckpt.save("model_final")
    good = open(os.path.join(d, "model_final.pth"), "rb").read()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):  # a full disk halfway through the write
        real_save(obj, f, *a, **k)
        if hasattr(f, "truncate"):
            f.truncate(7)
        raise OSError(28, "No space left on device")

    torch.save = failing_save
    try:
        ckpt.save("model_final")
    except OSError:
        pass
    finally:
        torch.save = real_save
    assert open(os.path.join(d, "model_final.pth"), "rb").read() == good, "checkpoint corrupted"


def probe_ddp_cpu():
    """DefaultTrainer's DDP wrap of a CPU model (gloo, world size 1)."""
    import calr_plugin  # noqa: F401
    import torch
    import torch.distributed as dist
    import fastreid.engine.defaults as defaults

    dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", world_size=1, rank=0)
    try:
        wrapped = defaults.DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0],
                                                   broadcast_buffers=False)
        assert wrapped(torch.zeros(1, 2)).shape == (1, 2)
    finally:
        dist.destroy_process_group()


def _report_rank(world):
    import torch.distributed as dist
    from fastreid.utils import comm

    assert dist.get_world_size() == world and comm.get_local_rank() == dist.get_rank()


def probe_launch_cpu():
    """fastreid's launch() with 2 processes on a machine without CUDA."""
    import calr_plugin  # noqa: F401
    from fastreid.engine import launch

    launch(_report_rank, 2, dist_url="auto", args=(2,))


def probe_preprocess_out_of_place():
    """A batch forwarded twice (TEST.FLIP, two passes) must give the same features."""
    import calr_plugin  # noqa: F401
    import torch
    from fastreid.modeling import build_model

    model = build_model(_cfg()).eval()
    batch = _batch(2)
    with torch.no_grad():
        a, b = model(batch), model(batch)
    assert torch.allclose(a, b), "second pass saw re-normalised images"


def probe_printer_same_iteration():
    """Two writes at one iteration before the timer warm-up must not divide by zero."""
    import calr_plugin  # noqa: F401
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    printer = CommonMetricPrinter(max_iter=10)
    with EventStorage(0) as storage:
        storage.iter, storage.epoch = 1, 0
        storage.put_scalar("total_loss", 1.0)
        printer.write()
        printer.write()


def probe_writers_per_key():
    """A metric put after a write at the same iteration (the final evaluation) is written."""
    import json

    import calr_plugin  # noqa: F401
    from fastreid.utils.events import EventStorage, JSONWriter

    path = os.path.join(tempfile.mkdtemp(), "metrics.json")
    writer = JSONWriter(path)
    with EventStorage(0) as storage:
        storage.iter = 9
        storage.put_scalar("total_loss", 1.0)
        writer.write()  # PeriodicWriter after the last step
        storage.put_scalar("mAP", 50.0)  # EvalHook after the epoch, same iteration
        writer.write()
    writer.close()
    rows = [json.loads(line) for line in open(path)]
    assert any("mAP" in r for r in rows), rows
    assert sum("total_loss" in r for r in rows) == 1, rows


def probe_regnet_yaml():
    """RegNet and FastReID's EfficientNet build from the installed wheel, in any directory."""
    import calr_plugin  # noqa: F401
    from fastreid.modeling.backbones import build_backbone

    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp())  # not FastReID's source tree
    try:
        for name, depth in (("build_regnet_backbone", "200x"), ("build_effnet_backbone", "b0")):
            build_backbone(_cfg(MODEL__BACKBONE__NAME=name, MODEL__BACKBONE__DEPTH=depth))
    finally:
        os.chdir(cwd)


def probe_yacs_auto_keys():
    """A key of config.AUTO_KEYS takes "auto" (an int default) or a number (an "auto" default)."""
    assert _cfg(CALR__CLUSTER__K="auto").CALR.CLUSTER.K == "auto"
    assert _cfg(DATASETS__NUM_CAMERAS=3).DATASETS.NUM_CAMERAS == 3


PROBES = {name[len("probe_"):]: fn for name, fn in globals().items() if name.startswith("probe_")}

if __name__ == "__main__":
    PROBES[sys.argv[1]]()
    print("PROBE_OK")
