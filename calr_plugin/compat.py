"""Every workaround calr-reid needs to run FastReID 1.4.0 on torch 2.x / Python 3.11 / CPU.

FastReID 1.4.0 (the PyPI wheel) was written for torch 1.13. Under torch 2.x several
parts break; one of them silently (the default optimizer never updates the weights).
This module patches FastReID from the outside: no FastReID file is edited, so a user
can ``pip install fastreid==1.4.0 --no-deps`` and import ``calr_plugin`` first.

Each shim is a function registered in ``SHIMS`` under a short name, with the reason
next to it. ``apply()`` runs them all once; it is called by ``calr_plugin/__init__``
before anything imports ``fastreid.data``, ``fastreid.engine`` or
``fastreid.evaluation``. Setting ``CALR_COMPAT_SKIP=name1,name2`` skips shims: the
test suite uses it to prove that every shim is still needed (each test fails
without its shim).

Every patch of a third-party module is here, yacs included: ``yacs_auto_keys`` is the one
process-wide change to yacs (why it cannot be scoped is next to it); ``regnet_yaml`` changes
one config object of FastReID's, not yacs's class.
"""
import collections
import collections.abc
import os
import sys
import types


SHIMS = {}
_applied = []


def shim(name):
    def register(fn):
        SHIMS[name] = fn
        return fn

    return register


def apply():
    """Apply every shim once (idempotent). Returns the names applied."""
    if _applied:
        return list(_applied)
    skip = {s.strip() for s in os.environ.get("CALR_COMPAT_SKIP", "").split(",") if s.strip()}
    unknown = skip - set(SHIMS)
    if unknown:
        raise ValueError(f"CALR_COMPAT_SKIP names unknown shims {sorted(unknown)}; known: {sorted(SHIMS)}")
    for name, fn in SHIMS.items():
        if name not in skip:
            fn()
            _applied.append(name)
    return list(_applied)


# --- import-time shims: must run before fastreid.data/engine/evaluation are imported ---

@shim("torch_six")
def _torch_six():
    # fastreid/data/build.py (wheel only) does `from torch._six import string_classes`;
    # torch._six was removed in torch 2.0, so `import fastreid.data` fails.
    if "torch._six" not in sys.modules:
        mod = types.ModuleType("torch._six")
        mod.string_classes = (str, bytes)
        mod.int_classes = (int,)
        mod.container_abcs = collections.abc
        sys.modules["torch._six"] = mod


@shim("collections_abc")
def _collections_abc():
    # fastreid.data, fastreid.engine and fastreid.evaluation do `from collections import
    # Mapping`, which Python 3.10 removed (the ABCs live in collections.abc only).
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


@shim("no_download")
def _no_download():
    # With MODEL.BACKBONE.PRETRAIN True and no PRETRAIN_PATH, FastReID's backbones call
    # gdown.download(url, cached_file) when the file is not in $TORCH_HOME/checkpoints.
    # calr-reid never downloads at run time (offline machines, reproducibility), and
    # without gdown installed users got a bare ModuleNotFoundError. This stub turns the
    # download attempt into a one-line error that says where to put the file.
    mod = types.ModuleType("gdown")

    def download(url, output=None, *args, **kwargs):
        raise FileNotFoundError(
            f"pretrained weights not found at {output}: calr-reid never downloads; "
            f"put the file there (from {url}), or set MODEL.BACKBONE.PRETRAIN_PATH to a "
            f"local file, or MODEL.BACKBONE.PRETRAIN False"
        )

    mod.download = download
    mod.__calr_stub__ = True
    sys.modules["gdown"] = mod


# --- runtime shims: patch fastreid objects after importing them ---

@shim("optimizer_contiguous")
def _optimizer_contiguous():
    # fastreid.solver.build_optimizer(contiguous=True), the default, wraps parameters in
    # ContiguousParams: the optimizer owns flat buffers whose .grad is a shared view.
    # SimpleTrainer calls optimizer.zero_grad(), which since torch 2.0 sets grads to
    # None, so the flat buffers never get a gradient again and Adam/SGD skip every
    # parameter: training runs, the loss is logged, and the weights never change.
    import fastreid.engine.defaults as defaults
    import fastreid.solver as solver
    import fastreid.solver.build as solver_build

    original = solver_build.build_optimizer

    def build_optimizer(cfg, model, contiguous=False):
        return original(cfg, model, contiguous=False)

    build_optimizer.__doc__ = original.__doc__
    solver_build.build_optimizer = build_optimizer
    solver.build_optimizer = build_optimizer
    defaults.build_optimizer = build_optimizer


@shim("cpu_dataloader")
def _cpu_dataloader():
    # DataLoaderX creates a torch.cuda.Stream and moves every batch to the GPU in a
    # prefetch thread: on a machine without CUDA every loader fails ("Found no NVIDIA
    # driver"). On CPU we substitute a plain DataLoader with the same signature.
    import torch
    from torch.utils.data import DataLoader

    if torch.cuda.is_available():
        return
    import fastreid.data.build as build
    import fastreid.data.data_utils as data_utils

    class CPUDataLoader(DataLoader):
        """DataLoaderX's interface (local_rank first, shutdown()) without CUDA."""

        def __init__(self, local_rank, **kwargs):
            kwargs["pin_memory"] = False  # nothing to pin for: avoids a warning per loader
            super().__init__(**kwargs)
            self.local_rank = local_rank

        def shutdown(self):
            pass

    build.DataLoaderX = CPUDataLoader
    data_utils.DataLoaderX = CPUDataLoader


@shim("evaluator_no_exit")
def _evaluator_no_exit():
    # ReidEvaluator.__init__ tries to compile the Cython ranking with `make` and calls
    # sys.exit(1) when that fails (no Cython, no compiler, read-only site-packages):
    # every evaluation killed the process. fastreid.evaluation.rank already falls back to
    # the (identical, slower) Python ranking, so never compile at run time: `make install`
    # builds the Cython module once when it can.
    from fastreid.evaluation.reid_evaluation import ReidEvaluator

    ReidEvaluator._compile_dependencies = lambda self: None


@shim("rerank_cpu")
def _rerank_cpu():
    # TEST.RERANK.ENABLED calls build_dist(metric="jaccard"), which hard-codes
    # compute_jaccard_distance(search_option=0): features.cuda() + faiss GPU. On a
    # machine without CUDA use search_option=3 (faiss CPU), same algorithm.
    import torch

    import fastreid.evaluation.reid_evaluation as reid_evaluation
    from fastreid.utils.compute_dist import compute_jaccard_distance

    original = reid_evaluation.build_dist

    def build_dist(feat_1, feat_2, metric="euclidean", **kwargs):
        if metric == "jaccard" and not torch.cuda.is_available():
            feat = torch.cat((feat_1, feat_2), dim=0)
            dist = compute_jaccard_distance(feat, k1=kwargs["k1"], k2=kwargs["k2"], search_option=3)
            return dist[: feat_1.size(0), feat_1.size(0):]
        return original(feat_1, feat_2, metric, **kwargs)

    reid_evaluation.build_dist = build_dist


@shim("checkpoint_load")
def _checkpoint_load():
    # torch >= 2.6 defaults torch.load(weights_only=True). FastReID checkpoints written
    # by older versions or other tools hold numpy scalars and other pickled objects, and
    # fail with "Weights only load failed". Checkpoints named in MODEL.WEIGHTS or found
    # in OUTPUT_DIR are the user's own files, so they are trusted.
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    def _load_file(self, f):
        return torch.load(f, map_location=torch.device("cpu"), weights_only=False)

    Checkpointer._load_file = _load_file


@shim("checkpoint_atomic")
def _checkpoint_atomic():
    # Checkpointer.save writes model_XXXX.pth and last_checkpoint in place: a kill or a
    # full disk during the write leaves a truncated file that --resume then fails on.
    # Write to a temporary file in the same folder and os.replace() it into place, so a
    # checkpoint file is either the complete old one or the complete new one.
    from fastreid.utils.checkpoint import Checkpointer

    from .utils.atomic import atomic_torch_save, atomic_write_text

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    Checkpointer.save = save
    Checkpointer.tag_last_checkpoint = tag_last_checkpoint


@shim("ddp_cpu")
def _ddp_cpu():
    # DefaultTrainer wraps the model in DistributedDataParallel(model,
    # device_ids=[local_rank]); for a CPU module torch raises ValueError. Multi-process
    # CPU runs (gloo) need device_ids=None.
    import fastreid.engine.defaults as defaults
    from torch.nn.parallel import DistributedDataParallel

    def ddp(module, device_ids=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = None
        return DistributedDataParallel(module, device_ids=device_ids, **kwargs)

    defaults.DistributedDataParallel = ddp


@shim("launch_cpu")
def _launch_cpu():
    # launch()'s worker asserts CUDA and uses NCCL, so `--num-gpus 2` cannot run on CPU
    # (tests, CPU clusters). Without CUDA use gloo and skip torch.cuda.set_device; with
    # CUDA keep FastReID's worker unchanged.
    import importlib

    # fastreid.engine re-exports the function `launch`, which shadows the module name.
    launch_mod = importlib.import_module("fastreid.engine.launch")
    if launch_mod._distributed_worker is not _distributed_worker:
        _fastreid_worker[0] = launch_mod._distributed_worker
        launch_mod._distributed_worker = _distributed_worker


_fastreid_worker = [None]


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank,
                        dist_url, args):
    """launch()'s per-process entry (module level: mp.spawn pickles it by name)."""
    import torch
    import torch.distributed as dist
    from fastreid.utils import comm

    if torch.cuda.is_available():
        return _fastreid_worker[0](local_rank, main_func, world_size, num_gpus_per_machine,
                                   machine_rank, dist_url, args)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=global_rank)
    comm.synchronize()
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        pg = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    try:
        main_func(*args)
    finally:
        # Tear the group down so a failing rank makes the others fail fast instead of
        # waiting in the next collective.
        if dist.is_initialized():
            dist.destroy_process_group()


@shim("preprocess_out_of_place")
def _preprocess_out_of_place():
    # Baseline.preprocess_image normalises batched_inputs["images"] in place, so a batch
    # forwarded twice is normalised twice. FastReID's own TEST.FLIP path does exactly that
    # (it flips the already-normalised tensor and forwards it again), and any second pass
    # (feature extraction + training, two views) silently sees wrong pixels.
    import torch
    from fastreid.modeling.meta_arch.baseline import Baseline

    def preprocess_image(self, batched_inputs):
        if isinstance(batched_inputs, dict):
            images = batched_inputs["images"]
        elif isinstance(batched_inputs, torch.Tensor):
            images = batched_inputs
        else:
            raise TypeError(f"batched_inputs must be dict or torch.Tensor, got {type(batched_inputs)}")
        return (images.to(self.pixel_mean.device) - self.pixel_mean) / self.pixel_std

    Baseline.preprocess_image = preprocess_image


@shim("printer_same_iteration")
def _printer_same_iteration():
    # CommonMetricPrinter estimates the ETA from the time since its last write divided by
    # the iterations since then. Before IterationTimer has timed 3 iterations, two writes
    # at the same iteration (PeriodicWriter writes after a step and again after the
    # epoch) divide by zero: short epochs (tiny data, stage 1 of a small camera) crash.
    from fastreid.utils.events import CommonMetricPrinter, get_event_storage

    original = CommonMetricPrinter.write

    def write(self):
        last = getattr(self, "_last_write", None)
        if last is not None and last[0] == get_event_storage().iter:
            self._last_write = None  # no ETA estimate from a zero-iteration interval
        return original(self)

    CommonMetricPrinter.write = write


@shim("regnet_yaml")
def _regnet_yaml():
    # build_regnet_backbone and build_effnet_backbone merge 'fastreid/modeling/backbones/regnet/
    # <family>/<model>.yaml', a path relative to FastReID's source tree: the wheel ships those
    # files, but from any other working directory both builders fail with FileNotFoundError.
    # Resolve such a path against the installed fastreid package when it is not found as given.
    # Scoped: only the one config object both builders merge into (regnet.config.cfg) gets
    # this merge_from_file, as an instance attribute; yacs's CfgNode class is left alone.
    import fastreid
    from fastreid.modeling.backbones.regnet import config as regnet_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(fastreid.__file__)))
    node = regnet_config.cfg
    original = node.merge_from_file

    def merge_from_file(cfg_filename):
        if not os.path.isfile(cfg_filename) and cfg_filename.startswith("fastreid/"):
            cfg_filename = os.path.join(root, cfg_filename)
        return original(cfg_filename)

    # CfgNode.__setattr__ would store a config key (and refuses a function): set the attribute.
    object.__setattr__(node, "merge_from_file", merge_from_file)


@shim("yacs_auto_keys")
def _yacs_auto_keys():
    # yacs requires a merged value to keep its default's type, so an int key cannot take the
    # string "auto" (nor an "auto" key a number). The keys of config.AUTO_KEYS hold either.
    # yacs runs that check in a module-level function, yacs.config._check_and_coerce_cfg_value_type,
    # which every CfgNode merge calls; replacing it is the only hook, and it cannot be scoped
    # to load_config: users merge files into add_calr_config(cfg) themselves (README). The
    # replacement returns early only for an AUTO_KEYS key with "auto" on one side; every other
    # key and value goes to yacs's own check unchanged.
    import yacs.config

    from .config import AUTO_KEYS

    yacs_check = yacs.config._check_and_coerce_cfg_value_type

    def check_type_or_auto(replacement, original, key, full_key):
        if full_key in AUTO_KEYS and "auto" in (replacement, original) and isinstance(replacement, (str, int, float)):
            return replacement
        return yacs_check(replacement, original, key, full_key)

    yacs.config._check_and_coerce_cfg_value_type = check_type_or_auto


@shim("writers_per_key")
def _writers_per_key():
    # JSONWriter and TensorboardXWriter remember one "last written iteration" for all
    # scalars. EvalHook puts the test metrics after the last step of an epoch, at the
    # iteration the writers have just written, so they are skipped: the final
    # evaluation (and any that lands on a write) never reached metrics.json or
    # TensorBoard. Track the last written iteration per scalar instead.
    import json
    from collections import defaultdict

    from fastreid.utils.events import JSONWriter, TensorboardXWriter, get_event_storage

    def unwritten(writer):
        seen = writer.__dict__.setdefault("_written_per_key", {})
        out = {}
        for k, (v, it) in get_event_storage().latest_with_smoothing_hint(writer._window_size).items():
            if it > seen.get(k, -1):
                out[k] = (v, it)
                seen[k] = it
        return out

    def json_write(self):
        rows = defaultdict(dict)
        for k, (v, it) in unwritten(self).items():
            rows[it][k] = v
        for it in sorted(rows):
            self._file_handle.write(json.dumps(dict(rows[it], iteration=it), sort_keys=True) + "\n")
        self._file_handle.flush()
        os.fsync(self._file_handle.fileno())

    tb_original = TensorboardXWriter.write

    def tb_write(self):
        for k, (v, it) in unwritten(self).items():
            self._writer.add_scalar(k, v, it)
        # FastReID's own write still handles images and histograms; no scalar is newer
        # than this, so it adds none twice.
        last, self._last_write = self._last_write, float("inf")
        try:
            tb_original(self)
        finally:
            self._last_write = last

    JSONWriter.write = json_write
    TensorboardXWriter.write = tb_write
