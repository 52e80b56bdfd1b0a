"""One training or evaluation command of a benchmark, run once and recorded.

Benchmarks that train several runs (bench/video_end_to_end.py, bench/grid_end_to_end.py)
read a finished run back from its ``wall.json`` instead of rerunning it, so a long
benchmark that was stopped resumes where it was.
"""
import json
import os
import subprocess
import time


def recorded_run(cmd, out, threads, metrics, cwd=None):
    """Run ``cmd`` with its output in ``out/stdout.log``; record it in ``out/wall.json``.

    Args:
        cmd (list[str]): the command (interpreter first).
        out (str): the run's folder (its OUTPUT_DIR).
        threads (int): OMP_NUM_THREADS / MKL_NUM_THREADS of the run.
        metrics (callable): out -> dict of the finished run's metrics.
        cwd (str | None): the working directory.
    Returns:
        dict: {"command", "seconds", "metrics"}, read back when ``wall.json`` exists.
    Raises:
        SystemExit: the command failed (names the log to read).
    """
    done = os.path.join(out, "wall.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    with open(os.path.join(out, "stdout.log"), "w") as log:
        rc = subprocess.call(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        raise SystemExit(f"{os.path.basename(out)} failed (exit {rc}); see {out}/stdout.log")
    record = {"command": " ".join(cmd[1:]), "seconds": time.time() - t0, "metrics": metrics(out)}
    with open(done + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(done + ".tmp", done)
    return record
