"""kNN graph: exact search vs brute force, chunking, self-first layout, centring, recall."""
import numpy as np
import pytest

from calr_plugin.labels import camera_centre, knn_recall, knn_search, l2_normalize


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_knn_equals_numpy_brute_force():
    x = _unit(300, 24)
    sims, idx = knn_search(x, k=10, use_gpu=False)
    full = x @ x.T
    ref_idx = np.argsort(-full, axis=1, kind="stable")[:, :10]
    assert sims.dtype == np.float32 and idx.dtype == np.int64 and sims.shape == (300, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, np.take_along_axis(full, ref_idx, axis=1), atol=1e-5)
    assert (idx[:, 0] == np.arange(300)).all()
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_unnormalised_input_is_normalised_and_not_modified():
    x = _unit(50, 8) * 3.0
    before = x.copy()
    sims, _ = knn_search(x, k=5, use_gpu=False)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


def test_chunking_gives_identical_results():
    x = _unit(257, 16, seed=1)
    one = knn_search(x, k=7, chunk_size=10_000, use_gpu=False)
    many = knn_search(x, k=7, chunk_size=13, use_gpu=False)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_duplicates_keep_self_in_column_zero():
    base = _unit(20, 8, seed=2)
    x = np.concatenate([base, base[:5], base[:5]])  # rows 0-4 appear three times
    sims, idx = knn_search(x, k=4, use_gpu=False)
    assert (idx[:, 0] == np.arange(len(x))).all()
    np.testing.assert_allclose(sims[:5, :3], 1.0, atol=1e-5)  # self + two duplicates
    # the duplicates of row 0 are rows 20 and 25, in some order
    assert set(idx[0, 1:3]) == {20, 25}


def test_k_larger_than_n_is_clamped():
    sims, idx = knn_search(_unit(4, 3), k=15, use_gpu=False)
    assert idx.shape == (4, 4)
    assert sorted(idx[2]) == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_methods_find_most_neighbours(method):
    centres = _unit(40, 32, seed=3)
    rng = np.random.default_rng(4)
    x = centres[rng.integers(0, 40, 2000)] + 0.3 * rng.standard_normal((2000, 32)).astype(np.float32) / np.sqrt(32)
    x = l2_normalize(x)
    _, exact = knn_search(x, k=10, use_gpu=False)
    _, approx = knn_search(x, k=10, method=method, seed=0)
    assert (approx[:, 0] == np.arange(2000)).all()
    assert knn_recall(approx, exact) > 0.9


def test_ivf_is_deterministic_under_a_seed():
    x = _unit(2000, 16, seed=5)
    a = knn_search(x, k=5, method="ivf", seed=3)
    b = knn_search(x, k=5, method="ivf", seed=3)
    np.testing.assert_array_equal(a[1], b[1])


def test_knn_recall_hand_example():
    exact = np.array([[0, 1, 2], [1, 2, 3]])
    approx = np.array([[0, 2, 5], [1, 3, 2]])
    # row 0 finds {0, 2} of {0, 1, 2}; row 1 finds all three -> (2 + 3) / 6
    assert knn_recall(approx, exact) == pytest.approx(5 / 6)


def test_camera_centre_matches_definition():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    cams = rng.integers(3, 6, 30)  # arbitrary camera ids
    out = camera_centre(x, cams)
    ref = x.astype(np.float64).copy()
    for c in np.unique(cams):
        ref[cams == c] -= x[cams == c].astype(np.float64).mean(axis=0)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert out.dtype == np.float32 and out is not x
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_camera_centre_lets_cross_camera_pairs_match():
    # Two people seen by two cameras whose offset dominates: without centring every
    # nearest neighbour is from the same camera, after centring it is the same person.
    rng = np.random.default_rng(7)
    d = 64
    people = rng.standard_normal((2, d))
    offsets = 4.0 * rng.standard_normal((2, d))
    pid = np.repeat([0, 1, 0, 1], 5)
    cams = np.repeat([0, 0, 1, 1], 5)
    x = (people[pid] + offsets[cams] + 0.1 * rng.standard_normal((20, d))).astype(np.float32)
    _, raw = knn_search(x, k=20, use_gpu=False)
    _, centred = knn_search(camera_centre(x, cams), k=20, use_gpu=False)
    # rank of the first other-camera neighbour that is the same person
    assert (cams[raw[:, 1:10]] == cams[:, None]).all()
    assert (pid[centred[:, 1:10]] == pid[:, None]).all()


class _FakeGpuFaiss:
    """What faiss-gpu adds, backed by the CPU index: lets the selection be tested without CUDA."""

    made = 0

    class StandardGpuResources:
        def __init__(self):
            _FakeGpuFaiss.made += 1

    @staticmethod
    def GpuIndexFlatIP(res, d):
        import faiss

        return faiss.IndexFlatIP(d)


def test_gpu_selection_falls_back_to_cpu_without_cuda(monkeypatch):
    import faiss

    x = _unit(200, 16)
    cpu = knn_search(x, k=6, use_gpu=False)
    # A CPU-only faiss (no GPU classes) and a faiss-gpu build on a machine without CUDA
    # (classes present, 0 devices) both run the CPU search under "auto".
    for has_classes in (False, True):
        with monkeypatch.context() as m:
            if has_classes:
                m.setattr(faiss, "StandardGpuResources", _FakeGpuFaiss.StandardGpuResources, raising=False)
                m.setattr(faiss, "GpuIndexFlatIP", _FakeGpuFaiss.GpuIndexFlatIP, raising=False)
            else:
                m.delattr(faiss, "StandardGpuResources", raising=False)
            m.setattr(faiss, "get_num_gpus", lambda: 0)
            _FakeGpuFaiss.made = 0
            auto = knn_search(x, k=6, use_gpu="auto")
            assert _FakeGpuFaiss.made == 0
            np.testing.assert_array_equal(auto[1], cpu[1])
            with pytest.raises(ValueError, match="no GPU"):
                knn_search(x, k=6, use_gpu=True)


def test_gpu_is_chosen_when_faiss_sees_one(monkeypatch):
    import faiss

    x = _unit(200, 16)
    cpu = knn_search(x, k=6, use_gpu=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeGpuFaiss.StandardGpuResources, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", _FakeGpuFaiss.GpuIndexFlatIP, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    _FakeGpuFaiss.made = 0
    sims, idx = knn_search(x, k=6, use_gpu="auto")
    assert _FakeGpuFaiss.made == 1  # the GPU index was built
    np.testing.assert_array_equal(idx, cpu[1])
    np.testing.assert_allclose(sims, cpu[0], atol=1e-6)
    _FakeGpuFaiss.made = 0
    knn_search(x, k=6, use_gpu=False)
    assert _FakeGpuFaiss.made == 0  # an explicit False stays on the CPU


def _clustered_two_cameras(n=3000, d=32, ids=400, seed=0):
    """(N, D) float32 features of `ids` people seen by two cameras, and (N,) cameras.

    f = id centre (unit) + camera offset (norm ~1) + noise (norm ~1): neighbours are mostly
    the same person, but at this noise a query's top 15 spread over several IVF lists, so
    scanning a fixed 16 of 102 lists (the old default) finds only 0.86-0.92 of them.
    """
    rng = np.random.default_rng(seed)
    centres = _unit(ids, d, seed=seed + 100)
    offsets = rng.standard_normal((2, d)).astype(np.float32) / np.sqrt(d)
    pid, cams = rng.integers(0, ids, n), rng.integers(0, 2, n)
    noise = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return centres[pid] + offsets[cams] + noise, cams


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_methods_keep_recall_at_their_config_defaults(method):
    # Every non-exact CALR.CLUSTER.KNN mode, at the CALR.CLUSTER.* defaults training uses
    # (hooks.label_params), keeps recall@15 >= 0.95 against exact search, on plain and on
    # camera-centred features (the label step's two inputs, pipeline.stage2_labels).
    import faiss

    from calr_plugin.config import load_config
    from calr_plugin.engine.hooks import label_params
    from calr_plugin.labels import LabelParams

    p = label_params(load_config(check=False))  # defaults only; MODEL.DEVICE cuda is checked elsewhere
    knobs = ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe")
    # the pure engine's own defaults are the config's (bench/label_step.py and the API use them)
    assert {a: getattr(p, a) for a in knobs} == {a: getattr(LabelParams(), a) for a in knobs}
    x, cams = _clustered_two_cameras()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # HNSW's build is reproducible with one thread only
    try:
        for view in (l2_normalize(x), camera_centre(x, cams)):
            _, exact = knn_search(view, k=15, use_gpu=False)
            _, approx = knn_search(view, k=15, method=method, normalize=False, seed=p.seed,
                                   **{a: getattr(p, a) for a in knobs})
            assert knn_recall(approx, exact) >= 0.95
    finally:
        faiss.omp_set_num_threads(threads)


def test_ivf_default_probes_half_the_lists():
    from calr_plugin.labels.knn import ivf_nlist_for, ivf_nprobe_for

    assert ivf_nlist_for(3000) == 3000 // 39  # 4 sqrt(N) = 219 is capped at N / 39 training points
    assert ivf_nlist_for(10 ** 6) == 4000 and ivf_nlist_for(100, 500) == 2 and ivf_nlist_for(10) == 1
    assert [ivf_nprobe_for(nl) for nl in (1, 2, 49, 76)] == [1, 1, 25, 38]
    assert ivf_nprobe_for(76, 16) == 16 and ivf_nprobe_for(8, 16) == 8  # explicit, at most nlist
