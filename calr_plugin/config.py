"""calr-reid config keys (``add_calr_config``) and start-up validation (``load_config``).

Call ``add_calr_config(cfg)`` before ``merge_from_file`` for training and for
``--eval-only`` alike: yacs rejects keys it does not know. ``load_config`` does the
whole FastReID ``setup`` dance (defaults, our keys, file, command-line opts) and turns
every mistake into a one-line ``ConfigError`` naming the file and the key.
"""
import difflib
import functools
import os
import re

from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg

from .errors import ConfigError
from .labels.knn import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, KNN_METHODS
from .labels.pivots import MEAN_DIST_MODES, NEIGHBOUR_MODES, PIVOT_RULES
from .labels.refine import REFINE_MODES
from .labels.schedules import DECAY_KINDS
from .labels.signals import SIGNALS

# Keys that take "auto": the value is chosen from the unlabeled training features when
# training starts (calr_plugin.auto.settings; rules in calr_plugin/labels/auto.py). yacs
# lets such a key hold "auto" or a number through compat's shim "yacs_auto_keys".
AUTO_KEYS = ("CALR.CLUSTER.K", "CALR.CLUSTER.MIN_SIM", "CALR.CLUSTER.MIN_SIZE", "CALR.STAGE1.CLUSTER_RATIO",
             "CALR.STAGE1.NUM_INSTANCE", "DATALOADER.NUM_INSTANCE", "DATASETS.NUM_CAMERAS")

# CALR.EXTRACT.ENGINE's values (engine/extract_engines.py runs them).
ENGINES = ("auto", "torch", "onnxruntime")

# Checks of keys whose valid values only torch-side code knows (is there CUDA for MODEL.DEVICE,
# which CALR.ALIGN.HEAD names are registered): name -> check(cfg), raising ConfigError.
# modeling/build.py adds them when it is imported, which ``import calr_plugin`` does before any
# config can be loaded, so that this module validates every key without importing torch.
MODEL_CHECKS = {}


def is_auto(value):
    return isinstance(value, str) and value == "auto"


def add_calr_config(cfg):
    """Add every calr-reid key to a FastReID config, with the paper's defaults.

    Keys where the paper and the authors' code disagree follow the paper; the
    official-code preset (``configs/CALR/Base-CALR-official.yml``) switches them.
    """
    _C = cfg
    # Top-level seed. FastReID seeds every run at random; with SEED >= 0, sampling,
    # clustering, augmentation and training order are fixed on CPU.
    _C.SEED = -1

    # A folder for DATASETS.NAMES/TESTS ("ReIDFolder",), in Market layout
    # (bounding_box_train/, query/, bounding_box_test/) or as unlabeled camera folders
    # (train/<camera>/**/*.jpg, optional labeled query/ and bounding_box_test/).
    # Absolute, or relative to the working directory, or to $FASTREID_DATASETS.
    _C.DATASETS.FOLDER = ""
    # Training cameras: "given" (folder or file names) or "infer" (pseudo-cameras by
    # spectral clustering of the untrained model's features; evaluation keeps the test
    # split's own cameras). NUM_CAMERAS: how many to infer, or "auto" (eigengap).
    _C.DATASETS.CAMERAS = "given"
    _C.DATASETS.NUM_CAMERAS = "auto"
    # What "infer" groups by: "style" (channel mean and std of the map CAMERA_LAYER names;
    # "auto" = the backbone's stride-8 output, auto/camera_style.py) or "embedding" (the output).
    # The count (NUM_CAMERAS auto) always comes from the embedding's eigengap.
    _C.DATASETS.CAMERA_FEATURES = "style"
    _C.DATASETS.CAMERA_LAYER = "auto"
    # The largest count NUM_CAMERAS auto considers (a warning says when the eigengap lands
    # on it: raise it for a larger network), and the share of the images below which an
    # inferred group is not a camera (black or duplicate frames): it joins the nearest one.
    _C.DATASETS.MAX_CAMERAS = 16
    _C.DATASETS.MIN_CAMERA_SHARE = 0.01
    # "folder": in camera folders, the images of one sub-folder of a camera folder
    # (train/<camera>/<tracklet>/, what tools/video_to_crops.py writes) are one person's
    # tracklet: stage 1 never splits it across local clusters (a must-link). "": off.
    _C.DATASETS.TRACKLETS = ""
    # Decode every image once at load: "skip" unreadable/truncated files with a warning,
    # "strict" stop at the first one, "off" (FastReID: fail when first read in training).
    _C.DATASETS.IMAGE_CHECK = "skip"
    # The embedded synthetic multi-camera set ("CALRSynthetic"), generated on first use
    # into $FASTREID_DATASETS/calr_synthetic/<hash of these values>.
    _C.DATASETS.SYNTHETIC = CN()
    _C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 48
    _C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 24
    _C.DATASETS.SYNTHETIC.NUM_CAMERAS = 3
    _C.DATASETS.SYNTHETIC.IMAGES_PER_ID_PER_CAMERA = 4
    _C.DATASETS.SYNTHETIC.HEIGHT = 128
    _C.DATASETS.SYNTHETIC.WIDTH = 64
    _C.DATASETS.SYNTHETIC.SEED = 0
    # Scales every camera effect (colour cast, blur, background, geometry); 0 = only
    # the viewpoint differs between cameras.
    _C.DATASETS.SYNTHETIC.CAMERA_STRENGTH = 1.0

    # Images per BatchNorm statistic: every BN layer normalises contiguous chunks of this
    # many images (synchronised over processes when a chunk spans them), the same on 1, 2,
    # 4 or 8 GPUs; 0 = over each process's batch (FastReID). The authors' 4-GPU
    # DataParallel recipe normalised 64-image chunks (Base-CALR-official.yml). See modeling/chunk_bn.py.
    _C.MODEL.BN_CHUNK = 0
    # The timm model of MODEL.BACKBONE.NAME build_timm_backbone (calr_plugin/modeling/timm_backbone.py).
    _C.MODEL.BACKBONE.TIMM_MODEL = ""

    # channels_last memory format on CUDA (faster convolutions with AMP).
    _C.SOLVER.CHANNELS_LAST = False

    _C.CALR = CN()
    # Stage-2 iterations per epoch (the authors: 400; Market 200). 0 = len(train) // batch.
    _C.CALR.ITERS_PER_EPOCH = 400
    # PK sampler over pseudo labels: "pk" (K random members per cluster) or
    # "cross_camera" (the authors': an anchor, then members from other cameras first).
    _C.CALR.SAMPLER = "pk"
    # What to do with a training set of a single camera (nothing to refine or align):
    # "error" or "baseline" (train the Baseline preset with a warning).
    _C.CALR.SINGLE_CAMERA = "error"
    # Log label quality against ground-truth ids (reporting only, never used to train).
    _C.CALR.GT_METRICS = True

    # Checkpoint selection by a label-free quality signal (calr_plugin/labels/signals.py).
    _C.CALR.SELECT = CN()
    # Development: write each stage-2 epoch's training features (float16) to
    # OUTPUT_DIR/features/epoch_<e>.npy, e = epochs trained (0 = the untrained start), so
    # that candidate signals can be scored against test mAP offline (bench/quality_signal.py).
    _C.CALR.SELECT.SAVE_FEATURES = False
    # The label-free signal that picks OUTPUT_DIR/model_selected.pth among the untrained start
    # and every stage-2 epoch (engine/selection.py); "" = no selection.
    _C.CALR.SELECT.SIGNAL = "cross_camera_mutual"
    # Share of the training images (drawn per camera from SEED) that stage 2 clusters but
    # never trains on; the signal is read on them (labels/holdout.py says why). 0 = read it
    # on every image.
    _C.CALR.SELECT.HOLDOUT = 0.1

    # Stage 1: one encoder per camera, intra-camera clustering (paper Sec. III-B).
    _C.CALR.STAGE1 = CN()
    _C.CALR.STAGE1.EPOCHS = 20
    _C.CALR.STAGE1.ITERS = 100
    _C.CALR.STAGE1.IMS_PER_BATCH = 64
    _C.CALR.STAGE1.NUM_INSTANCE = 4
    _C.CALR.STAGE1.BASE_LR = 0.00035
    _C.CALR.STAGE1.K1 = 15
    _C.CALR.STAGE1.K2 = 4
    # Clusters per camera = floor(N_c * CLUSTER_RATIO) (paper: N_c / 5); NUM_CLUSTERS > 0
    # fixes the count instead (the authors' shipped Market/Duke labels: 600). "auto" here,
    # for STAGE1.NUM_INSTANCE, CLUSTER.K/MIN_SIM/MIN_SIZE and DATALOADER.NUM_INSTANCE:
    # chosen from the unlabeled training features at start-up (calr_plugin/labels/auto.py).
    _C.CALR.STAGE1.CLUSTER_RATIO = 0.2
    _C.CALR.STAGE1.NUM_CLUSTERS = 0
    # With DATASETS.TRACKLETS folder and crops named by frame (<tracklet>/<frame>.jpg): two
    # tracklets of one camera seen at the same time are two people (a cannot-link), and
    # each camera is cut at the highest merge that joins at most this share of such pairs,
    # so K_c comes from the tracklets (labels/tracklet_links.py); cameras with no such pair
    # keep CLUSTER_RATIO. CANNOT_LINKS False: must-links only.
    _C.CALR.STAGE1.CANNOT_LINKS = True
    _C.CALR.STAGE1.CANNOT_LINK_SHARE = 0.01
    # Which clustering becomes the local labels: "final" epoch (paper) or best
    # "silhouette" (authors' code).
    _C.CALR.STAGE1.SELECT = "final"
    # Existing stage-1 labels (.npz written by a previous run) to skip stage 1.
    _C.CALR.STAGE1.LABELS = ""

    # Stage 2, global clustering: kNN graph + Infomap (defaults: the authors' code).
    _C.CALR.CLUSTER = CN()
    _C.CALR.CLUSTER.K = 15  # neighbours, self included
    _C.CALR.CLUSTER.MIN_SIM = 0.5
    # > 0 (beyond the paper): every epoch, MIN_SIM becomes this quantile of the epoch's kNN
    # edge similarities (0.5: Infomap keeps the stronger half of the graph); MIN_SIM is
    # then ignored. 0 = the fixed MIN_SIM.
    _C.CALR.CLUSTER.MIN_SIM_QUANTILE = 0.0
    # Collapse guard (beyond the paper): while more than this share of the images are
    # outliers, the epoch halves MIN_SIZE (down to 2), then lowers MIN_SIM, and says so in
    # the log (labels/pipeline.py). 1.0 = off. 0.333 was set knowing the development sets'
    # epoch-0 outlier shares (at most 33 %, docs/RESULTS.md 2d): in sample.
    _C.CALR.CLUSTER.MAX_OUTLIERS = 0.333
    _C.CALR.CLUSTER.MIN_SIZE = 5  # smaller clusters become outliers
    # exact | hnsw | ivf. exact is the reference and the default (deterministic). hnsw is the
    # fast mode: at MSMT17 size (N 32,621, D 2048, 2 cores) the whole label step takes 8.5 s
    # instead of 67 s, recall@15 0.971, clusters -0.8 %, pairwise F vs ids within 0.004 of
    # exact (docs/SCALING.md); its parallel graph build makes labels reproducible only with
    # one OpenMP thread. Larger N needs a larger EF_CONSTRUCTION for the same recall.
    _C.CALR.CLUSTER.KNN = "exact"
    _C.CALR.CLUSTER.HNSW_M = HNSW_M  # graph degree (32)
    _C.CALR.CLUSTER.HNSW_EF_CONSTRUCTION = HNSW_EF_CONSTRUCTION  # beam width while building (24)
    _C.CALR.CLUSTER.HNSW_EF_SEARCH = HNSW_EF_SEARCH  # beam width while searching (24; >= K is enforced)
    # ivf: IndexIVFFlat. NLIST 0 = 4 sqrt(N), at most N / 39. NPROBE 0 = half the lists: on
    # CUHK01 / PKU-Reid ImageNet features recall@15 is 0.981-0.994 there, 0.953 at the old
    # 16 of 49 lists (docs/BENCHMARKS.md, bench/knn_recall.py). At that recall IVF is slower
    # than exact search on CPU (2-4x at these sizes); it exists for comparison, use hnsw for speed.
    _C.CALR.CLUSTER.IVF_NLIST = 0
    _C.CALR.CLUSTER.IVF_NPROBE = 0
    _C.CALR.CLUSTER.CAMERA_CENTRE = False  # beyond the paper: subtract each camera's mean
    _C.CALR.CLUSTER.INFOMAP_TRIALS = 1

    # Feature extraction for the label step (calr_plugin/engine/features.py): torch (the
    # default: the same on every install, and it scored at least as well end to end,
    # docs/RESULTS.md section 1) | onnxruntime (CPU; 1.8x torch's extraction speed at N ~ 2k,
    # same features to 1e-6, but a run with it is another draw, not the same number) | auto
    # (onnxruntime on CPU when installed, torch otherwise).
    _C.CALR.EXTRACT = CN()
    _C.CALR.EXTRACT.ENGINE = "torch"

    # Pivots (Eq. 4).
    _C.CALR.PIVOT = CN()
    # one_per_cluster_max (default: the highest-scoring member of each cluster, if above
    # the mean) | all_above_mean (the paper, literally) | one_per_cluster_last (the code).
    # The paper's reading lets pivots of different people discard each other; see
    # docs/PRESETS.md for the measurement behind the default.
    _C.CALR.PIVOT.RULE = "one_per_cluster_max"
    _C.CALR.PIVOT.MEAN_DIST = "all_pairs"  # | knn (code)
    _C.CALR.PIVOT.NEIGHBOURS = "topk"  # | edges (code)

    # Refinement (Eq. 5) with self-paced decay of the discard probability p (Table IV).
    _C.CALR.REFINE = CN()
    _C.CALR.REFINE.ENABLED = True
    _C.CALR.REFINE.MODE = "each"  # each (Alg. 1 literally) | union
    _C.CALR.REFINE.DECAY = "cosine"  # none | linear | poly | exp | cosine
    _C.CALR.REFINE.P_END = 0.75  # p at the last epoch; cosine + 0.75 = the authors' formula
    _C.CALR.REFINE.DECAY_POWER = 2.0  # for "poly"

    # Camera-entropy cluster weights (Eq. 6).
    _C.CALR.WEIGHTING = CN()
    _C.CALR.WEIGHTING.ENABLED = True
    # Epochs trained unweighted first (paper silent; the authors: 5). Eq. 6 gives
    # single-camera clusters weight 0, and early clusters are mostly single-camera.
    _C.CALR.WEIGHTING.WARMUP_EPOCHS = 5

    # Camera alignment (Eq. 7-9).
    _C.CALR.ALIGN = CN()
    _C.CALR.ALIGN.ENABLED = True
    _C.CALR.ALIGN.BETA = 1.0
    _C.CALR.ALIGN.LAMBDA = 1.0  # gradient reversal scale
    # "constant" (the authors' code) or "dann": lambda * (2 / (1 + exp(-10 e / E)) - 1),
    # rising from 0 (Ganin & Lempitsky; commented out in the authors' code).
    _C.CALR.ALIGN.LAMBDA_SCHEDULE = "constant"
    _C.CALR.ALIGN.EPOCHS = 0  # > 0: beta only for the first EPOCHS epochs (the authors: 3)
    _C.CALR.ALIGN.LOSS = "ce"  # ce (paper) | softmax_ce (the authors' double softmax)
    _C.CALR.ALIGN.HEAD = "MLPDomainClassifier"
    _C.CALR.ALIGN.HIDDEN_DIM = 100
    _C.CALR.ALIGN.DROPOUT = 0.5
    _C.CALR.ALIGN.NUM_CAMERAS = 0  # 0 = number of training cameras (set by the trainer)

    # Cluster memory (Eq. 1-2).
    _C.CALR.MEMORY = CN()
    _C.CALR.MEMORY.TEMP = 0.1  # the authors' code: 0.05
    _C.CALR.MEMORY.MOMENTUM = 0.2  # the authors' code: 0.1
    return cfg


def _close_key(cfg, full_key):
    """The existing key most similar to a misspelt one, for the error message."""
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, CN):
                walk(v, name + ".")
            else:
                keys.append(name)

    walk(cfg, "")
    match = difflib.get_close_matches(full_key, keys, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _yacs_error(cfg, where, err):
    msg = str(err).strip("'\"")
    m = re.match(r"Non-existent (?:config )?key: (\S+)", msg)
    if m:
        key = m.group(1)
        return ConfigError(f"{where}: unknown config key {key}{_close_key(cfg, key)}")
    return ConfigError(f"{where}: {msg}")


def load_config(config_file="", opts=(), freeze=True, check=True):
    """FastReID config with calr-reid keys, merged from a file and ``KEY VALUE`` opts.

    Args:
        config_file (str): a yacs yml (``_BASE_`` supported); "" for defaults only.
        opts (list[str]): command-line overrides, alternating keys and values.
        freeze (bool): freeze the returned config.
        check (bool): run ``validate``; False only merges (to read a config written for
            another machine, e.g. one naming CUDA or files that are not here).
    Returns:
        CfgNode: the merged config, validated if ``check``.
    Raises:
        ConfigError: a missing file, unknown key, wrong type or impossible value.
    """
    cfg = get_cfg()
    add_calr_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise _yacs_error(cfg, config_file, e) from None
        except Exception as e:  # YAML syntax errors, a missing _BASE_ file
            raise ConfigError(f"{config_file}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"command-line options must be KEY VALUE pairs, got an odd list: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise _yacs_error(cfg, "command line", e) from None
    if check:
        validate(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _need(cfg, cond, key, expected):
    if not cond:
        raise ConfigError(f"{key} = {_get(cfg, key)!r}: expected {expected}")


def validate(cfg):
    """Reject impossible values at start-up, naming the key.

    Raises:
        ConfigError
    """
    need = functools.partial(_need, cfg)

    for check in MODEL_CHECKS.values():
        check(cfg)
    need(not (cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda")), "SOLVER.AMP.ENABLED",
         "False when MODEL.DEVICE is cpu (AMP needs CUDA)")
    need(cfg.SOLVER.MAX_EPOCH >= 1, "SOLVER.MAX_EPOCH", "an integer >= 1")
    need(cfg.SOLVER.IMS_PER_BATCH >= 1, "SOLVER.IMS_PER_BATCH", "an integer >= 1")
    need(cfg.SOLVER.BASE_LR > 0, "SOLVER.BASE_LR", "a positive learning rate")
    need(cfg.MODEL.BN_CHUNK >= 0, "MODEL.BN_CHUNK", "an integer >= 0 (images per BN statistic; 0 = the batch)")
    need(cfg.TEST.EVAL_PERIOD >= 1, "TEST.EVAL_PERIOD", "an integer >= 1 (epochs between evaluations)")
    need(cfg.TEST.IMS_PER_BATCH >= 1, "TEST.IMS_PER_BATCH", "an integer >= 1")
    need(cfg.DATALOADER.NUM_WORKERS >= 0, "DATALOADER.NUM_WORKERS", "an integer >= 0")
    for key in AUTO_KEYS:
        value = _get(cfg, key)
        need(is_auto(value) or (isinstance(value, (int, float)) and not isinstance(value, bool)), key,
             "a number or auto")
    if cfg.MODEL.META_ARCHITECTURE != "CALR":
        need(not is_auto(cfg.DATALOADER.NUM_INSTANCE), "DATALOADER.NUM_INSTANCE",
             "a number (auto is chosen by CALR's training; this meta-architecture is " + cfg.MODEL.META_ARCHITECTURE + ")")
    one_of_cameras = ("given", "infer")
    need(cfg.DATASETS.CAMERAS in one_of_cameras, "DATASETS.CAMERAS", "one of " + ", ".join(one_of_cameras))
    need(is_auto(cfg.DATASETS.NUM_CAMERAS) or cfg.DATASETS.NUM_CAMERAS >= 2, "DATASETS.NUM_CAMERAS",
         "auto or an integer >= 2 (cameras to infer)")
    need(isinstance(cfg.DATASETS.MAX_CAMERAS, int) and cfg.DATASETS.MAX_CAMERAS >= 2, "DATASETS.MAX_CAMERAS",
         "an integer >= 2 (the largest camera count NUM_CAMERAS auto considers)")
    need(cfg.DATASETS.TRACKLETS in ("", "folder"), "DATASETS.TRACKLETS", "'' (off) or 'folder'")
    need(0 <= cfg.DATASETS.MIN_CAMERA_SHARE < 0.5, "DATASETS.MIN_CAMERA_SHARE",
         "a share of the images in [0, 0.5) (0 = every inferred group is a camera)")
    need(cfg.DATASETS.CAMERA_FEATURES in ("style", "embedding"), "DATASETS.CAMERA_FEATURES", "style or embedding")
    need(isinstance(cfg.DATASETS.CAMERA_LAYER, str) and cfg.DATASETS.CAMERA_LAYER != "", "DATASETS.CAMERA_LAYER",
         "auto or a module name under the model, e.g. backbone.layer2")
    if cfg.DATALOADER.SAMPLER_TRAIN in ("NaiveIdentitySampler", "BalancedIdentitySampler"):
        if not is_auto(cfg.DATALOADER.NUM_INSTANCE):
            need(cfg.DATALOADER.NUM_INSTANCE >= 1, "DATALOADER.NUM_INSTANCE", "an integer >= 1 or auto")
            need(cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE == 0, "SOLVER.IMS_PER_BATCH",
                 f"a multiple of DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE})")
    if cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.BACKBONE.PRETRAIN_PATH:
        need(os.path.isfile(cfg.MODEL.BACKBONE.PRETRAIN_PATH), "MODEL.BACKBONE.PRETRAIN_PATH",
             "an existing weights file (convert one with tools/convert_weights.py, or set "
             "MODEL.BACKBONE.PRETRAIN False)")
    if cfg.MODEL.WEIGHTS:
        need(os.path.isfile(cfg.MODEL.WEIGHTS), "MODEL.WEIGHTS", "an existing checkpoint file")
    need(cfg.DATASETS.IMAGE_CHECK in ("skip", "strict", "off"), "DATASETS.IMAGE_CHECK", "one of skip, strict, off")
    need(not cfg.DATASETS.COMBINEALL, "DATASETS.COMBINEALL",
         "False: FastReID's COMBINEALL also trains on the query and gallery images (the test set); for MSMT17's "
         "train + val (the paper's 32,621 images) use DATASETS.NAMES (\"MSMT17TrainVal\",)")
    from fastreid.data.datasets import DATASET_REGISTRY

    registered = sorted(DATASET_REGISTRY._obj_map)
    for key in ("DATASETS.NAMES", "DATASETS.TESTS"):
        for name in cfg.DATASETS[key.split(".")[1]]:
            if name not in registered:
                match = difflib.get_close_matches(name, registered, n=1)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise ConfigError(f"{key}: unknown dataset {name!r}{hint}")
    for name in tuple(cfg.DATASETS.NAMES) + tuple(cfg.DATASETS.TESTS):
        if name == "ReIDFolder":
            need(bool(cfg.DATASETS.FOLDER), "DATASETS.FOLDER",
                 "the folder of a Market-layout dataset when DATASETS uses ReIDFolder")
    syn = cfg.DATASETS.SYNTHETIC
    for key in ("NUM_TRAIN_IDS", "NUM_TEST_IDS", "HEIGHT", "WIDTH"):
        need(syn[key] >= 1, f"DATASETS.SYNTHETIC.{key}", "an integer >= 1")
    need(syn.NUM_CAMERAS >= 2, "DATASETS.SYNTHETIC.NUM_CAMERAS", "an integer >= 2")
    need(syn.IMAGES_PER_ID_PER_CAMERA >= 2, "DATASETS.SYNTHETIC.IMAGES_PER_ID_PER_CAMERA",
         "an integer >= 2 (one query image plus gallery images)")
    validate_calr(cfg)


def validate_calr(cfg):
    """Reject impossible CALR.* values at start-up, naming the key (CALR.ALIGN.HEAD: ``MODEL_CHECKS``).

    Raises:
        ConfigError
    """
    c = cfg.CALR
    need = functools.partial(_need, cfg)

    def one_of(key, choices):
        need(_get(cfg, key) in choices, key, "one of " + ", ".join(choices))

    one_of("CALR.SAMPLER", ("pk", "cross_camera"))
    one_of("CALR.SINGLE_CAMERA", ("error", "baseline"))
    need(c.ITERS_PER_EPOCH >= 0, "CALR.ITERS_PER_EPOCH", "an integer >= 0 (0 = len(train) // batch)")
    s1 = c.STAGE1
    for key in ("EPOCHS", "ITERS", "IMS_PER_BATCH"):
        need(s1[key] >= 1, f"CALR.STAGE1.{key}", "an integer >= 1")
    if not is_auto(s1.NUM_INSTANCE):
        need(s1.NUM_INSTANCE >= 1, "CALR.STAGE1.NUM_INSTANCE", "an integer >= 1 or auto")
        need(s1.IMS_PER_BATCH % s1.NUM_INSTANCE == 0, "CALR.STAGE1.IMS_PER_BATCH",
             f"a multiple of CALR.STAGE1.NUM_INSTANCE ({s1.NUM_INSTANCE})")
    need(s1.BASE_LR > 0, "CALR.STAGE1.BASE_LR", "a positive learning rate")
    need(s1.K1 >= 2, "CALR.STAGE1.K1", "an integer >= 2")
    need(1 <= s1.K2 <= s1.K1, "CALR.STAGE1.K2", f"an integer in [1, K1={s1.K1}]")
    need(is_auto(s1.CLUSTER_RATIO) or 0 < s1.CLUSTER_RATIO <= 1, "CALR.STAGE1.CLUSTER_RATIO",
         "a fraction in (0, 1] or auto")
    need(s1.NUM_CLUSTERS >= 0, "CALR.STAGE1.NUM_CLUSTERS", "an integer >= 0 (0 = use CLUSTER_RATIO)")
    need(0 <= s1.CANNOT_LINK_SHARE < 1, "CALR.STAGE1.CANNOT_LINK_SHARE", "a share in [0, 1)")
    one_of("CALR.STAGE1.SELECT", ("final", "silhouette"))
    need(0 <= c.SELECT.HOLDOUT < 0.5, "CALR.SELECT.HOLDOUT", "a share of the training images in [0, 0.5)")
    need(c.SELECT.SIGNAL in ("",) + tuple(SIGNALS), "CALR.SELECT.SIGNAL",
         "one of " + ", ".join(SIGNALS) + ' or "" (no selection)')
    if s1.LABELS:
        need(os.path.exists(s1.LABELS), "CALR.STAGE1.LABELS",
             "an existing stage-1 labels file (local_labels.npz) or a folder of cam<k>/pseudo_label.npy")
    cl = c.CLUSTER
    need(is_auto(cl.K) or cl.K >= 2, "CALR.CLUSTER.K", "an integer >= 2 (neighbours, self included) or auto")
    need(is_auto(cl.MIN_SIM) or -1 <= cl.MIN_SIM <= 1, "CALR.CLUSTER.MIN_SIM",
         "a cosine similarity in [-1, 1] or auto")
    need(0 < cl.MAX_OUTLIERS <= 1, "CALR.CLUSTER.MAX_OUTLIERS", "a share of the images in (0, 1] (1 = no guard)")
    need(0 <= cl.MIN_SIM_QUANTILE < 1, "CALR.CLUSTER.MIN_SIM_QUANTILE",
         "a quantile in [0, 1) (0 = use the fixed MIN_SIM)")
    need(is_auto(cl.MIN_SIZE) or cl.MIN_SIZE >= 1, "CALR.CLUSTER.MIN_SIZE", "an integer >= 1 or auto")
    one_of("CALR.CLUSTER.KNN", KNN_METHODS)
    for key in ("HNSW_M", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH"):
        need(cl[key] >= 1, f"CALR.CLUSTER.{key}", "an integer >= 1")
    need(cl.IVF_NPROBE >= 0, "CALR.CLUSTER.IVF_NPROBE", "an integer >= 0 (0 = half of the lists)")
    need(cl.IVF_NLIST >= 0, "CALR.CLUSTER.IVF_NLIST", "an integer >= 0 (0 = 4 sqrt(N))")
    need(cl.INFOMAP_TRIALS >= 1, "CALR.CLUSTER.INFOMAP_TRIALS", "an integer >= 1")
    one_of("CALR.EXTRACT.ENGINE", ENGINES)
    one_of("CALR.PIVOT.RULE", PIVOT_RULES)
    one_of("CALR.PIVOT.MEAN_DIST", MEAN_DIST_MODES)
    one_of("CALR.PIVOT.NEIGHBOURS", NEIGHBOUR_MODES)
    one_of("CALR.REFINE.MODE", REFINE_MODES)
    one_of("CALR.REFINE.DECAY", DECAY_KINDS)
    need(0 <= c.REFINE.P_END <= 1, "CALR.REFINE.P_END", "a probability in [0, 1]")
    need(c.REFINE.DECAY_POWER > 0, "CALR.REFINE.DECAY_POWER", "a positive exponent")
    need(c.WEIGHTING.WARMUP_EPOCHS >= 0, "CALR.WEIGHTING.WARMUP_EPOCHS", "an integer >= 0")
    a = c.ALIGN
    need(a.BETA >= 0, "CALR.ALIGN.BETA", "a weight >= 0")
    need(a.LAMBDA >= 0, "CALR.ALIGN.LAMBDA", "a gradient reversal scale >= 0")
    need(a.EPOCHS >= 0, "CALR.ALIGN.EPOCHS", "an integer >= 0 (0 = every epoch)")
    one_of("CALR.ALIGN.LOSS", ("ce", "softmax_ce"))
    one_of("CALR.ALIGN.LAMBDA_SCHEDULE", ("constant", "dann"))
    need(a.HIDDEN_DIM >= 1, "CALR.ALIGN.HIDDEN_DIM", "an integer >= 1")
    need(0 <= a.DROPOUT < 1, "CALR.ALIGN.DROPOUT", "a probability in [0, 1)")
    need(a.NUM_CAMERAS >= 0, "CALR.ALIGN.NUM_CAMERAS", "an integer >= 0 (0 = from the data)")
    need(c.MEMORY.TEMP > 0, "CALR.MEMORY.TEMP", "a positive temperature")
    need(0 <= c.MEMORY.MOMENTUM < 1, "CALR.MEMORY.MOMENTUM", "a momentum in [0, 1)")
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        need(cfg.MODEL.HEADS.CLS_LAYER == "Linear", "MODEL.HEADS.CLS_LAYER",
             "Linear for CALR (the identity classifier is unused; margin layers need true ids)")
        if not is_auto(cfg.DATALOADER.NUM_INSTANCE):
            need(cfg.DATALOADER.NUM_INSTANCE >= 1, "DATALOADER.NUM_INSTANCE", "an integer >= 1 or auto")
            need(cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE == 0, "SOLVER.IMS_PER_BATCH",
                 f"a multiple of DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE})")
