"""A trained model as a tracker's appearance embedder: ``CALRReID``.

Shape shorthand: N boxes or crops, D feature dims, H x W the model's input size
(INPUT.SIZE_TEST), F frames.

``CALRReID(weights, config_file=None, device=None)`` loads either

* a PyTorch checkpoint (``model_final.pth``) with its config (``config_file``, or the run's
  ``config.yaml`` next to the weights); every weight comes from the checkpoint, so the
  ImageNet file the config names for training is not read;
* an ONNX file from ``tools/export_onnx.py``: the tracker profile (input ``images``
  ImageNet-normalised RGB, output ``output``) or the FastReID profile (input 0-255 RGB,
  output ``features``); H x W come from the graph;
* ``weights=None`` with a config: the config's untrained model (its pretrained backbone),
  the "ImageNet features" reference.

Crops are cut and resized exactly as BoxMOT's ReID backends do (``boxmot/reid/core/crops.py``
and ``preprocessing.py``): box corners rounded and clipped to the frame, an empty box a black
crop, ``cv2.resize`` (bilinear, no letterbox) to W x H, BGR to RGB. So the PyTorch model, the
tracker ONNX graph in our embedder and the same graph in BoxMOT's ONNX backend see the same
pixels. Training and ``tools/search.py`` resize with FastReID's test transform (PIL bicubic):
on CUHK01's 160x60 crops and the demo model the two features of an image agree at cosine
0.963 (lowest) to 1.0 (median 0.988), and pair distances differ by up to 0.13, so a threshold
is calibrated on the features it will be used with (``tools/calibrate.py`` writes both).

What trackers call:

* ``get_features(xyxy, frame)``: BoxMOT's older ReID backend method and its ``reid_model=``
  hook: (N, 4+) boxes x1, y1, x2, y2 in pixels and a BGR uint8 (H, W, 3) frame in, (N, D)
  float32 unit rows out.
* ``encode(frames, detections)``, ``embedding_dim``, ``requirements``: BoxMOT 25's
  ``AppearanceEncoder`` protocol (``boxmot/reid/protocols.py``): ``Frame.image`` uint8
  (3, H, W) RGB, ``Detections.geometry.values`` (N, 4) xyxy; one float32 (N, D) CPU tensor
  per frame.
* ``__call__(crops)``: BGR arrays (as OpenCV gives) or image paths; deep-sort-realtime's
  ``update_tracks(dets, embeds=reid(crops))`` takes the rows as they are.
* ``match(queries, gallery, threshold)``: each query's nearest gallery row, or -1 ("no match")
  beyond a calibrated distance (``tools/calibrate.py``).
"""
import os

import numpy as np

from ..errors import CalrError
from .export import TRACKER_MEAN, TRACKER_STD

__all__ = ["CALRReID", "config_next_to", "crop_boxes"]


def crop_boxes(xyxy, frame):
    """BGR crops of ``frame`` inside the boxes, as BoxMOT cuts them.

    Args:
        xyxy (ndarray): (N, >=4) x1, y1, x2, y2 pixels (extra columns ignored).
        frame (ndarray): (H, W, 3) uint8 BGR.
    Returns:
        list[ndarray]: N crops (h, w, 3) uint8; a box outside the frame gives a (1, 1, 3) black one.
    """
    boxes = np.asarray(xyxy, dtype=np.float64)
    if boxes.size == 0:
        return []  # a frame without detections
    boxes = boxes.reshape(len(boxes), -1)
    if boxes.shape[1] < 4:
        raise CalrError(f"boxes of shape {boxes.shape}: expected (N, 4) x1, y1, x2, y2")
    fh, fw = frame.shape[:2]
    crops = []
    for x1, y1, x2, y2 in boxes[:, :4].round().astype(int):
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(fw, x2), min(fh, y2)
        crops.append(frame[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else np.zeros((1, 1, 3), np.uint8))
    return crops


def config_next_to(weights):
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    if not os.path.isfile(path):
        raise CalrError(f"{weights}: no config_file given and no config.yaml next to it (a training run "
                        f"writes one to OUTPUT_DIR); pass config_file=")
    return path


class CALRReID:
    """L2-normalised appearance features of boxes in frames, for trackers.

    Args:
        weights (str | None): a ``.pth`` checkpoint, an exported ``.onnx`` file, or None (the
            config's untrained model).
        config_file (str | None): the model's config (needed for ``.pth`` unless the run's
            ``config.yaml`` is next to it, and for None; not used for ``.onnx``).
        device (str | None): "cpu", "cuda", "cuda:1"; None: CUDA when there is one.
        batch_size (int): crops per forward pass.
        opts (list[str]): KEY VALUE config overrides (``.pth`` and None).
    Attributes:
        size (tuple[int, int]): H x W the crops are resized to.
        cfg (CfgNode): the model's config (PyTorch models only).
        embedding_dim (int): D.
        engine (str): "torch" or "onnxruntime".
    """

    def __init__(self, weights, config_file=None, device=None, batch_size=64, opts=()):
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = str(device)
        self.batch_size = int(batch_size)
        self.weights = weights
        if weights is not None and not os.path.isfile(weights):
            raise CalrError(f"{weights}: weights file not found")
        if weights is not None and weights.endswith(".onnx"):
            self._load_onnx(weights)
        else:
            if weights is None and config_file is None:
                raise CalrError("CALRReID: give weights (.pth or .onnx) or a config_file")
            self._load_torch(weights, config_file or config_next_to(weights), opts)

    # ------------------------------------------------------------------ loading
    def _load_torch(self, weights, config_file, opts):
        from ..engine.checkpoint import load_inference_model

        overrides = list(opts) + (["MODEL.WEIGHTS", weights] if weights else [])
        cfg, model = load_inference_model(config_file, overrides)
        self.cfg = cfg
        self.model = model.to(self.device).eval()
        self.size = tuple(int(v) for v in cfg.INPUT.SIZE_TEST)
        self.engine = "torch"
        self.normalised_input = False  # the model subtracts MODEL.PIXEL_MEAN itself, on 0-255
        self._dim = int(cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM)

    def _load_onnx(self, path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CalrError("ONNX Runtime is not installed: pip install -e .[deploy]") from None
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path, providers=providers)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if out.name not in ("output", "features") or len(inp.shape) != 4:
            raise CalrError(f"{path}: not a tools/export_onnx.py graph (input {inp.name} {inp.shape}, output "
                            f"{out.name}); expected output 'output' (tracker profile) or 'features' (fastreid)")
        h, w = inp.shape[2:]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise CalrError(f"{path}: input {inp.name} has no fixed height and width ({inp.shape})")
        self.size = (h, w)
        self.engine = "onnxruntime"
        self.normalised_input = out.name == "output"  # the tracker profile
        self._input, self._output = inp.name, out.name
        dim = out.shape[1]
        self._dim = dim if isinstance(dim, int) else int(self._forward(np.zeros((1, 3, h, w), np.float32)).shape[1])

    # ------------------------------------------------------------------ protocol
    @property
    def embedding_dim(self):
        """D, the width of every row (BoxMOT's ``AppearanceEncoder``)."""
        return self._dim

    @property
    def requirements(self):
        """BoxMOT's ``EncoderRequirements()``: boxes only, no masks."""
        from boxmot.reid.protocols import EncoderRequirements

        return EncoderRequirements()

    # ------------------------------------------------------------------ features
    def _batch(self, crops):
        """(n, 3, H, W) float32 RGB: 0-255, or ImageNet-normalised for the tracker graph."""
        import cv2

        h, w = self.size
        batch = np.empty((len(crops), 3, h, w), np.float32)
        for i, crop in enumerate(crops):
            if crop.ndim != 3 or crop.shape[2] != 3:
                raise CalrError(f"crop {i} of shape {crop.shape}: expected (h, w, 3) BGR")
            rgb = cv2.cvtColor(cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
            batch[i] = rgb.transpose(2, 0, 1)
        if self.normalised_input:
            batch /= 255.0
            batch -= np.asarray(TRACKER_MEAN, np.float32)[:, None, None]
            batch /= np.asarray(TRACKER_STD, np.float32)[:, None, None]
        return batch

    def _forward(self, batch):
        if self.engine == "onnxruntime":
            return self.session.run([self._output], {self._input: batch})[0]
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def embed_crops(self, crops):
        """(N, D) float32 unit rows of BGR crops (N = 0 gives (0, D))."""
        out = np.empty((len(crops), self._dim), np.float32)
        for s in range(0, len(crops), self.batch_size):
            f = self._forward(self._batch([np.asarray(c) for c in crops[s:s + self.batch_size]]))
            norms = np.linalg.norm(f, axis=1, keepdims=True)
            out[s:s + len(f)] = f / np.maximum(norms, 1e-12)
        return out

    def __call__(self, crops):
        """(N, D) float32 unit rows of BGR uint8 crops or image paths."""
        import cv2

        arrays = []
        for c in crops:
            if isinstance(c, (str, os.PathLike)):
                img = cv2.imread(os.fspath(c), cv2.IMREAD_COLOR)
                if img is None:
                    raise CalrError(f"{c}: not a readable image")
                c = img
            arrays.append(c)
        return self.embed_crops(arrays)

    def get_features(self, xyxy, img):
        """(N, D) float32 unit rows of the boxes ``xyxy`` (N, >=4 pixels) in a BGR frame."""
        return self.embed_crops(crop_boxes(xyxy, img))

    @staticmethod
    def match(queries, gallery, threshold):
        """Each query's nearest gallery row, or -1 ("no match") beyond ``threshold``.

        Args:
            queries (ndarray): (Q, D) unit rows. gallery (ndarray): (N, D) unit rows.
            threshold (float): a cosine distance, e.g. ``calibrate.load_threshold(
                "calibration.json", kind="open_set")``.
        Returns:
            tuple: (Q,) int64 gallery index or -1, (Q,) float32 distance to the nearest row.
        """
        queries, gallery = np.asarray(queries, np.float32), np.asarray(gallery, np.float32)
        if not len(gallery):
            return np.full(len(queries), -1, np.int64), np.full(len(queries), np.inf, np.float32)
        dist = 1.0 - queries @ gallery.T
        best = dist.argmin(1)
        nearest = dist[np.arange(len(queries)), best]
        return np.where(nearest <= threshold, best, -1).astype(np.int64), nearest.astype(np.float32)

    def encode(self, frames, detections):
        """BoxMOT 25 ``AppearanceEncoder.encode``: one float32 (N, D) CPU tensor per frame.

        Args:
            frames (Sequence[boxmot.structures.Frame]): ``image`` uint8 (3, H, W) RGB.
            detections (Sequence[boxmot.structures.Detections]): ``geometry.values`` (N, 4) xyxy.
        """
        import torch

        frames, detections = list(frames), list(detections)
        if len(frames) != len(detections):
            raise CalrError(f"encode: {len(frames)} frames but {len(detections)} detection sets")
        crops, counts = [], []
        for frame, dets in zip(frames, detections):
            bgr = np.ascontiguousarray(frame.image.permute(1, 2, 0).flip(-1).cpu().numpy())
            boxes = dets.geometry.values.cpu().numpy()
            if boxes.ndim != 2 or (len(boxes) and boxes.shape[1] != 4):
                raise CalrError(f"encode: boxes of shape {boxes.shape}; only axis-aligned x1, y1, x2, y2 boxes "
                                f"(BoxMOT Boxes) are supported, not oriented ones")
            crops += crop_boxes(boxes, bgr)
            counts.append(len(boxes))
        rows = torch.from_numpy(self.embed_crops(crops))
        return [part.contiguous() for part in torch.split(rows, counts)]
