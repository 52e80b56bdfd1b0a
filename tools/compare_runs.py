#!/usr/bin/env python
"""Compare the final evaluation of FastReID runs, from each OUTPUT_DIR's metrics.json.

    python tools/compare_runs.py output/demo_synthetic_baseline output/demo_synthetic

Prints a table (one row per run) and one line comparing the last run with the first.
"""
import argparse
import json
import os
import sys

KEYS = ("mAP", "Rank-1", "Rank-5", "Rank-10")


def final_metrics(output_dir):
    """The last evaluation logged in OUTPUT_DIR/metrics.json (keys mAP, Rank-1, ...), or the
    eval_results.json that `train_net.py --eval-only` writes."""
    path = os.path.join(output_dir, "metrics.json")
    evaluated = os.path.join(output_dir, "eval_results.json")
    if not os.path.isfile(path) and os.path.isfile(evaluated):
        with open(evaluated) as f:
            return {k: v for k, v in json.load(f).items() if k in KEYS}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics.json (has this run finished?)")
    last = None
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            found = {k: v for k, v in row.items() if k.split("/")[-1] in KEYS}
            if found:
                last = {k.split("/")[-1]: v for k, v in found.items()}
    if last is None:
        raise ValueError(f"{path}: no evaluation results in it")
    return last


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="OUTPUT_DIRs; the first is the reference")
    args = p.parse_args(argv)
    try:
        rows = [(run, final_metrics(run)) for run in args.runs]
    except (OSError, ValueError) as e:
        print(f"compare_runs.py: error: {e}", file=sys.stderr)
        return 2
    print("| run | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 1) + "|")
    for run, m in rows:
        print(f"| {run} | " + " | ".join(f"{m[k]:.2f}" for k in KEYS) + " |")
    if len(rows) > 1:
        (ref, a), (new, b) = rows[0], rows[-1]
        print(f"{os.path.basename(new.rstrip('/'))} vs {os.path.basename(ref.rstrip('/'))} on the same data: "
              f"mAP {b['mAP']:.2f} vs {a['mAP']:.2f} ({b['mAP'] - a['mAP']:+.2f}), "
              f"Rank-1 {b['Rank-1']:.2f} vs {a['Rank-1']:.2f} ({b['Rank-1'] - a['Rank-1']:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
