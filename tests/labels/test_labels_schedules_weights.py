"""Table IV decay schedules and Eq. 6 camera-entropy weights."""
import math

import numpy as np
import pytest

from calr_plugin.labels import DECAY_KINDS, cluster_weights, decay_p


@pytest.mark.parametrize("kind", DECAY_KINDS)
@pytest.mark.parametrize("p_end", [0.75, 0.3, 0.0])
def test_schedule_endpoints_and_monotone(kind, p_end):
    E = 50
    ps = [decay_p(kind, e, E, p_end) for e in range(E + 3)]  # beyond E: clipped at t = 1
    assert ps[0] == pytest.approx(1.0)
    assert ps[E] == pytest.approx(1.0 if kind == "none" else p_end, abs=1e-12)
    assert all(b <= a + 1e-12 for a, b in zip(ps, ps[1:]))
    assert ps[E + 2] == ps[E]


def test_cosine_equals_authors_formula():
    E = 50
    for e in range(E + 1):
        authors = 0.5 * (1 + math.cos(math.pi * e / (3 * E)))
        assert decay_p("cosine", e, E, 0.75) == pytest.approx(authors, abs=1e-12)
    # values quoted in the reference (§6.5)
    assert [round(decay_p("cosine", e, 50), 3) for e in (0, 10, 20, 25, 30, 40, 49)] == \
        [1.0, 0.989, 0.957, 0.933, 0.905, 0.835, 0.759]


def test_other_formulas():
    assert decay_p("linear", 25, 50, 0.5) == pytest.approx(0.75)
    assert decay_p("poly", 25, 50, 0.5) == pytest.approx(1 - 0.5 * 0.25)
    assert decay_p("poly", 25, 50, 0.5, power=1.0) == pytest.approx(0.75)
    assert decay_p("exp", 25, 50, 0.25) == pytest.approx(0.5)


def test_schedule_validation():
    with pytest.raises(ValueError, match="'step'"):
        decay_p("step", 0, 50)
    with pytest.raises(ValueError, match="1.5"):
        decay_p("linear", 0, 50, p_end=1.5)
    with pytest.raises(ValueError):
        decay_p("linear", 0, 0)


def test_eq6_reference_values():
    labels = np.concatenate([np.full(10, 0), np.full(10, 1), np.full(9, 2), np.full(6, 3),
                             np.full(12, 4), np.full(4, 5), [-1, -1]])
    cams = np.concatenate([[0] * 5 + [1] * 5,           # 5/5 over two cameras
                           [3] * 9 + [7],               # 9/1
                           [0, 1, 2] * 3,               # uniform over 3
                           [0, 1, 2, 3, 4, 5],          # uniform over 6
                           [2] * 12,                    # one camera
                           [0, 0, 1, 1],                # uniform over 2
                           [4, 5]])                     # outliers: ignored
    w = cluster_weights(labels, cams, num_clusters=7)
    assert w.dtype == np.float32 and w.shape == (7,)
    np.testing.assert_allclose(w[:6], [0.527, 0.281, 0.741, 1.027, 0.0, math.log(1 + math.log(2))], atol=1e-3)
    assert w[0] == pytest.approx(math.log(1 + math.log(2)), abs=1e-6)
    assert w[6] == 0.0  # empty cluster
