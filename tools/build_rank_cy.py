#!/usr/bin/env python
"""Build FastReID's Cython ranking (rank_cy, roc_cy) in place, once, at install time.

FastReID evaluates 25x faster with it (~2 s instead of ~1 min at Market scale) and
otherwise falls back to identical Python code. FastReID itself tried to compile it at
every evaluation and killed the process when that failed (calr_plugin.compat disables
that). Failure here is not an error: it prints why and exits 0.
"""
import importlib.util
import os
import subprocess
import sys


def main():
    spec = importlib.util.find_spec("fastreid")
    if spec is None:
        print("build_rank_cy: fastreid is not installed; skipped")
        return 0
    lib = os.path.join(os.path.dirname(spec.origin), "evaluation", "rank_cylib")
    if any(f.startswith("rank_cy") and f.endswith(".so") for f in os.listdir(lib)):
        print(f"build_rank_cy: already built in {lib}")
        return 0
    try:
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=lib, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        err = getattr(e, "stderr", b"") or b""
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
        print(f"build_rank_cy: not built ({last[0]}); FastReID uses its Python ranking instead")
        return 0
    print(f"build_rank_cy: built the Cython ranking in {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
