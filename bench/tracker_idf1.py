"""Benchmark: tracking scores (IDF1, MOTA, ID switches) of real trackers with our embedder (not a test).

Generated video with true tracks (``calr_plugin/data/synthetic_video.py``): people of the
synthetic set (ids 1001.., never seen in training) walk, stop and turn back across camera 3's
scene, hiding each other; the detections are the true boxes with jitter, misses and false
positives. Trackers: BoxMOT's BoT-SORT (``use_cmc`` off: a fixed camera) and
deep-sort-realtime, each with

* no appearance (BoT-SORT ``use_embeddings=False``; deep-sort-realtime needs embeddings, so it
  has no such row),
* the ImageNet features (``--config``'s untrained model: its pretrained backbone),
* each CALR run of ``--runs`` (``model_final.pth`` and ``config.yaml``),

and each appearance model twice: with the tracker's default gate (BoT-SORT
``appearance_thresh`` 0.25, deep-sort-realtime ``max_cosine_distance`` 0.2) and with the
model's own threshold calibrated at 1 % false matches on the synthetic set's labeled test split
(people 49-72, not in the video; ``calr_plugin/deploy/calibrate.py``, all pairs). Scores
are means over ``--videos`` generated videos (and over the runs for CALR), with the standard
deviation.

    python bench/tracker_idf1.py --runs output/tracker/calr_s1 output/tracker/calr_s2 output/tracker/calr_s3
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import calr_plugin  # noqa: E402,F401
from calr_plugin import CALRReID, load_config  # noqa: E402
from calr_plugin.data.build import load_dataset  # noqa: E402
from calr_plugin.data.synthetic_video import VideoSpec, frames  # noqa: E402
from calr_plugin.deploy.calibrate import calibrate, pair_distances  # noqa: E402
from calr_plugin.deploy.tracking import idf1, track_boxmot, track_deepsort  # noqa: E402

# The regime: 10 people in 150 frames, 1.5-3 % of the width a frame (a low frame rate),
# 15 % missed detections; chosen so that motion alone swaps identities (BoT-SORT without
# appearance: IDF1 0.55-0.71 on videos 0-2 at the commit that added this file).
VIDEO = dict(num_people=10, num_frames=150, speed=(0.015, 0.03), miss_rate=0.15, camera=3)
DEFAULT_GATE = {"botsort": 0.25, "deepsort": 0.2}


class Cached:
    """An embedder's rows per (frame, boxes), so every tracker run on a video reuses them."""

    def __init__(self, reid):
        self.reid, self.memo = reid, {}

    def __call__(self, xyxy, frame):
        key = (id(frame), np.asarray(xyxy, np.float32).tobytes())
        if key not in self.memo:
            self.memo[key] = self.reid.get_features(xyxy, frame)
        return self.memo[key]

    get_features = __call__


def calibrated_gate(reid, items):
    same, diff = pair_distances(reid([p for p, _, _ in items]), [i[1] for i in items], [i[2] for i in items])
    return calibrate(same, diff, (0.01,))["thresholds"]["0.01"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="*", default=[], help="CALR run folders (model_final.pth, config.yaml)")
    p.add_argument("--config", default="configs/CALR/demo_synthetic.yml", help="the ImageNet reference's config")
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--out", default="output/tracker/idf1.json")
    args = p.parse_args()
    from boxmot import BotSort

    cfg = load_config(os.path.join(ROOT, args.config), [])
    data = load_dataset(cfg, "CALRSynthetic")
    items = [(path, pid, str(cam)) for path, pid, cam, *_ in data.query + data.gallery]
    models = [("ImageNet", CALRReID(None, config_file=os.path.join(ROOT, args.config), device="cpu"))]
    models += [(f"CALR {os.path.basename(r.rstrip('/'))}", CALRReID(os.path.join(r, "model_final.pth"), device="cpu"))
               for r in args.runs]
    gates = {name: calibrated_gate(reid, items) for name, reid in models}
    print(f"{platform.processor() or platform.machine()}; calibrated gates (1 % false matches on the synthetic "
          f"test split): " + ", ".join(f"{k} {v:.3f}" for k, v in gates.items()))
    results = []  # (tracker, appearance, gate kind, video, scores)
    t0 = time.time()
    for v in range(args.videos):
        spec = VideoSpec(seed=v, **VIDEO)
        fr = list(frames(spec))
        gt = np.concatenate([np.c_[np.full(len(g), t), g] for t, _, g, _ in fr])
        seq = [(t, img, d) for t, img, _, d in fr]
        res = idf1(gt, track_boxmot(seq, BotSort(use_embeddings=False, use_cmc=False)))
        results.append(("BoT-SORT", "none", "-", v, res))
        for name, reid in models:
            cached = Cached(reid)
            kind = "ImageNet" if name == "ImageNet" else "CALR"
            for gate_kind in ("default", "calibrated"):
                bs = DEFAULT_GATE["botsort"] if gate_kind == "default" else gates[name]
                ds = DEFAULT_GATE["deepsort"] if gate_kind == "default" else gates[name]
                res = idf1(gt, track_boxmot(seq, BotSort(reid_model=cached, use_cmc=False, appearance_thresh=bs)))
                results.append(("BoT-SORT", kind, gate_kind, v, res))
                res = idf1(gt, track_deepsort(seq, cached, max_cosine_distance=ds))
                results.append(("deep-sort-realtime", kind, gate_kind, v, res))
        print(f"video {v}: {len(gt)} true boxes, {time.time() - t0:.0f} s", flush=True)
    print(f"\n{'tracker':20s} {'appearance':10s} {'gate':10s} {'n':>3s} {'IDF1':>14s} {'MOTA':>14s} {'ID sw':>6s}")
    table = []
    for key in dict.fromkeys((r[0], r[1], r[2]) for r in results):
        rows = [r[4] for r in results if (r[0], r[1], r[2]) == key]
        f = np.array([r["idf1"] for r in rows]) * 100
        m = np.array([r["mota"] for r in rows]) * 100
        sw = np.mean([r["id_switches"] for r in rows])
        table.append({"tracker": key[0], "appearance": key[1], "gate": key[2], "n": len(rows),
                      "idf1": [round(f.mean(), 2), round(f.std(ddof=1) if len(f) > 1 else 0, 2)],
                      "mota": [round(m.mean(), 2), round(m.std(ddof=1) if len(m) > 1 else 0, 2)], "id_switches": sw})
        print(f"{key[0]:20s} {key[1]:10s} {key[2]:10s} {len(rows):3d} {f.mean():7.2f} +- {table[-1]['idf1'][1]:4.2f} "
              f"{m.mean():7.2f} +- {table[-1]['mota'][1]:4.2f} {sw:6.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"video": VIDEO, "videos": args.videos, "gates": gates, "table": table,
                   "runs": [{"tracker": r[0], "appearance": r[1], "gate": r[2], "video": r[3], **r[4]}
                            for r in results]}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
