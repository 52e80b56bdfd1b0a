#!/usr/bin/env python
"""Query time of tools/search.py's exact search on a large gallery (synthetic unit features).

    python bench/search_speed.py [--gallery 100000] [--dim 1280] [--queries 20]

Prints the seconds per query (one query at a time, as a user searching for one person, and
a block of queries), with and without leaving the query's camera out, and faiss's
IndexFlatIP on the same features as the reference measured in the same run.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--cameras", type=int, default=6)
    args = p.parse_args(argv)
    import faiss

    from calr_plugin.deploy.gallery_index import GalleryIndex

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.gallery, args.dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    queries = feats[rng.choice(args.gallery, args.queries, replace=False)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = GalleryIndex(tempfile.mkdtemp())
    index.items = [(f"g{i}.jpg", None, f"cam{i % args.cameras}") for i in range(args.gallery)]
    index.feats = feats
    rows = []

    def timed(name, fn, per):
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        rows.append((name, (time.perf_counter() - t0) / per))

    timed("search.py, one query at a time", lambda: [index.search(q[None], 10) for q in queries], args.queries)
    timed("search.py, one at a time, own camera left out",
          lambda: [index.search(q[None], 10, ["cam0"]) for q in queries], args.queries)
    timed(f"search.py, {args.queries} queries at once", lambda: index.search(queries, 10), args.queries)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(feats)
    timed("faiss IndexFlatIP, one query at a time (reference)", lambda: [flat.search(q[None], 10) for q in queries],
          args.queries)
    ref = rows[-1][1]
    print(f"gallery {args.gallery} x {args.dim}, {args.queries} queries, top 10, {faiss.omp_get_max_threads()} threads")
    print("| search | ms per query | vs faiss flat |")
    print("|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec * 1000:.1f} | {sec / ref:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
