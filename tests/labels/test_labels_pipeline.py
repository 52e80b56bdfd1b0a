"""stage2_labels end to end, presets, and the key behaviour: refinement splits merged ids."""
import numpy as np
import pytest

from calr_plugin.labels import LabelParams, cluster_metrics, stage2_labels


def _merged_ids_scene(seed=0, d=32, m=6):
    """Camera 0 sees ids A and B, camera 1 sees A (all in one blob) and B (elsewhere).

    Appearance alone puts A@cam0, B@cam0 and A@cam1 (m images each) in one global cluster;
    only the camera-0 local clusters tell A and B apart. A@cam0 is the tight core of the
    blob, so its images have the highest Eq. 4 scores.
    """
    rng = np.random.default_rng(seed)
    base, far = np.linalg.qr(rng.standard_normal((d, 2)))[0].T
    groups = [  # (centre, noise, id, camera, local label)
        (base, 0.05, 0, 0, 0),   # A @ cam 0 (tight core)
        (base, 0.30, 1, 0, 1),   # B @ cam 0
        (base, 0.30, 0, 1, 2),   # A @ cam 1
        (far, 0.30, 1, 1, 3),    # B @ cam 1
    ]
    x, ids, cams, local = [], [], [], []
    for centre, s, pid, cam, loc in groups:
        x.append(centre + s * rng.standard_normal((m, d)) / np.sqrt(d))
        ids += [pid] * m
        cams += [cam] * m
        local += [loc] * m
    return (np.concatenate(x).astype(np.float32), np.array(ids), np.array(cams), np.array(local))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refinement_raises_precision_and_lowers_expansion(seed):
    x, ids, cams, local = _merged_ids_scene(seed)
    params = LabelParams(pivot_rule="one_per_cluster_max", decay="none")
    res = stage2_labels(x, cams, local, epoch=0, max_epoch=50, params=params)
    before = cluster_metrics(res.global_labels, ids)
    after = cluster_metrics(res.refined_labels, ids)
    # the scene really merges: one global cluster holds A@0, B@0, A@1
    assert len(np.unique(res.global_labels[:18])) == 1 and res.global_labels[0] >= 0
    assert before["precision"] < 0.7 and before["expansion"] == 1.5
    piv = np.flatnonzero(res.pivots & (res.global_labels == res.global_labels[0]))
    assert len(piv) == 1 and piv[0] < 6  # the merged cluster's pivot is an A@cam0 image
    assert after["precision"] > before["precision"] and after["precision"] == pytest.approx(1.0)
    assert after["expansion"] < before["expansion"]
    assert (res.refined_labels[6:12] == -1).all()  # B@cam0 discarded (p = 1)
    assert (res.refined_labels[:6] == res.refined_labels[12]).all()  # A@cam0 kept with A@cam1
    assert (res.refined_labels[12:18] == res.refined_labels[12]).all()  # camera 1 untouched
    assert res.p == 1.0 and res.discard_ratio == pytest.approx(6 / 24)


def test_pivot_readings_differ_on_the_merged_scene():
    # Every blob image scores above the mean, so the paper's rule makes pivots in both
    # camera-0 local clusters: read literally ('each') they discard each other, read as
    # 'union' nothing in camera 0 is discarded (reference §13 saw the same on real data).
    x, ids, cams, local = _merged_ids_scene(0)
    each = stage2_labels(x, cams, local, 0, 50, LabelParams.paper(decay="none"))
    union = stage2_labels(x, cams, local, 0, 50, LabelParams.paper(decay="none", refine_mode="union"))
    assert each.pivots[:12].all() and (each.refined_labels[:12] == -1).all()
    assert (union.refined_labels[:12] >= 0).all() and union.discard_ratio == 0.0


def test_result_layout_and_weights():
    x, ids, cams, local = _merged_ids_scene(seed=1)
    res = stage2_labels(x, cams, local, epoch=7, max_epoch=50, params=LabelParams.paper(seed=3))
    n = len(ids)
    k = res.refined_labels.max() + 1
    assert res.refined_labels.shape == (n,) and res.refined_labels.dtype == np.int64
    assert set(np.unique(res.refined_labels[res.refined_labels >= 0])) == set(range(k))
    assert res.weights.shape == (k,) and res.weights.dtype == np.float32
    assert res.scores.shape == (n,) and res.pivots.dtype == bool
    assert res.use_weights and 0.75 < res.p < 1.0
    assert 0.0 <= res.kept_edge_fraction <= 1.0
    assert {"knn", "infomap", "pivots", "refine", "weights", "total"} <= set(res.timings)
    again = stage2_labels(x, cams, local, epoch=7, max_epoch=50, params=LabelParams.paper(seed=3))
    np.testing.assert_array_equal(res.refined_labels, again.refined_labels)


def test_presets_and_validation():
    assert LabelParams().pivot_rule == LabelParams.defaults().pivot_rule == "one_per_cluster_max"
    paper, code = LabelParams.paper(), LabelParams.official_code()
    assert (paper.pivot_rule, paper.pivot_mean_dist, paper.pivot_neighbours, paper.decay) == \
        ("all_above_mean", "all_pairs", "topk", "cosine")
    assert (code.pivot_rule, code.pivot_mean_dist, code.pivot_neighbours, code.decay) == \
        ("one_per_cluster_last", "knn", "edges", "none")
    assert (code.k, code.min_sim, code.min_size) == (15, 0.5, 5)
    assert LabelParams.official_code(seed=4).seed == 4
    with pytest.raises(ValueError, match="'nope'"):
        LabelParams(refine_mode="nope")


def test_refine_disabled_and_camera_centre():
    x, ids, cams, local = _merged_ids_scene(seed=2)
    off = stage2_labels(x, cams, local, 0, 50, LabelParams(refine_enabled=False))
    assert off.discard_ratio == 0.0
    np.testing.assert_array_equal(off.refined_labels, off.global_labels)
    centred = stage2_labels(x, cams, local, 0, 50, LabelParams(camera_centre=True))
    assert centred.refined_labels.shape == ids.shape


def _separated_set(n_ids=60, n_cams=3, per_cell=4, d=48, seed=0):
    """Well-separated ids seen by every camera: (N, d) features, ids, cams, local labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, d))
    ids = np.repeat(np.arange(n_ids), n_cams * per_cell)
    cams = np.tile(np.repeat(np.arange(n_cams), per_cell), n_ids)
    x = centres[ids] + 0.15 * rng.standard_normal((len(ids), d))
    return x.astype(np.float32), ids, cams, ids * n_cams + cams


@pytest.mark.parametrize("method,kwargs", [("hnsw", dict(hnsw_m=16, hnsw_ef_construction=24, hnsw_ef_search=24)),
                                            ("ivf", dict(ivf_nlist=8, ivf_nprobe=2))])
def test_fast_knn_labels_equal_exact_on_a_separated_set(monkeypatch, method, kwargs):
    import calr_plugin.labels.pipeline as pipeline

    x, ids, cams, local = _separated_set()
    base = dict(k=15, min_sim=0.5, min_size=4, decay="none", seed=3)
    exact = stage2_labels(x, cams, local, 0, 10, LabelParams(**base))
    seen = []
    real = pipeline.knn_search

    def spy(*args, **kw):
        seen.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "knn_search", spy)
    fast = stage2_labels(x, cams, local, 0, 10, LabelParams(knn_method=method, **kwargs, **base))
    # the fast method and its settings reached the search
    assert seen[0]["method"] == method and all(seen[0][k] == v for k, v in kwargs.items())
    assert cluster_metrics(exact.global_labels, ids)["fscore"] == 1.0  # the set is easy...
    np.testing.assert_array_equal(fast.global_labels, exact.global_labels)  # ...and fast = exact
    np.testing.assert_array_equal(fast.refined_labels, exact.refined_labels)
    np.testing.assert_array_equal(fast.weights, exact.weights)


def test_min_sim_quantile_keeps_that_share_of_the_edges():
    x, ids, cams, local = _separated_set(seed=1)
    for q in (0.25, 0.5, 0.75):
        res = stage2_labels(x, cams, local, 0, 10, LabelParams(k=15, min_sim=0.99, min_sim_quantile=q, min_size=2))
        # the fixed min_sim (0.99) is ignored; the epoch's threshold keeps 1 - q of the edges
        assert abs(res.kept_edge_fraction - (1 - q)) < 0.01 and res.min_sim < 0.99
    fixed = stage2_labels(x, cams, local, 0, 10, LabelParams(k=15, min_sim=0.5, min_size=2))
    assert fixed.min_sim == 0.5
    with pytest.raises(ValueError, match="min_sim_quantile"):
        LabelParams(min_sim_quantile=1.0)
