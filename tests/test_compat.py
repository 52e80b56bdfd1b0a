"""Every compat shim fixes something real: its probe passes with the shim and fails without."""
import os
import subprocess
import sys

import pytest

import calr_plugin  # noqa: F401
from calr_plugin import compat

sys.path.insert(0, os.path.dirname(__file__))
import compat_probes  # noqa: E402

PROBE = os.path.join(os.path.dirname(__file__), "compat_probes.py")


def test_every_shim_has_a_probe():
    assert set(compat.SHIMS) == set(compat_probes.PROBES)
    assert compat.apply() == list(compat.SHIMS)  # all applied, once


@pytest.mark.parametrize("name", sorted(compat.SHIMS))
def test_probe_passes_with_shims(name):
    if name == "launch_cpu":  # spawns processes; run it the same way as the negative case
        run = subprocess.run([sys.executable, PROBE, name], capture_output=True, text=True, timeout=300)
        assert "PROBE_OK" in run.stdout, run.stderr[-2000:]
        return
    if name == "evaluator_no_exit":
        pytest.skip("mutates PATH and sys.modules; covered by the subprocess case below")
    compat_probes.PROBES[name]()


@pytest.mark.parametrize("name", sorted(compat.SHIMS))
def test_probe_fails_without_its_shim(name):
    env = dict(os.environ, CALR_COMPAT_SKIP=name)
    run = subprocess.run([sys.executable, PROBE, name], capture_output=True, text=True, env=env, timeout=300)
    assert "PROBE_OK" not in run.stdout, f"{name}: FastReID works without this shim; remove it"
    assert run.returncode != 0


def test_evaluator_probe_passes_in_subprocess():
    run = subprocess.run([sys.executable, PROBE, "evaluator_no_exit"], capture_output=True, text=True,
                         timeout=300)
    assert "PROBE_OK" in run.stdout, run.stderr[-2000:]


def test_unknown_skip_name_is_an_error():
    env = dict(os.environ, CALR_COMPAT_SKIP="no_such_shim")
    run = subprocess.run([sys.executable, "-c", "import calr_plugin"], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "no_such_shim" in run.stderr
