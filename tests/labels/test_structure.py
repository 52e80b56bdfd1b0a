"""The ``auto`` estimates (labels/structure.py, labels/auto.py), the camera count's limits and
the collapse guard, on small synthetic feature sets (numpy only, seconds)."""
import numpy as np
import pytest

from calr_plugin.labels.auto import MAX_K, suggest_settings
from calr_plugin.labels.cameras import infer_cameras
from calr_plugin.labels.pipeline import LabelParams, stage2_labels
from calr_plugin.labels.structure import cameras_per_person, estimate_images_per_cell, estimate_structure


def people(num_cams, m, num_people=30, dim=64, seed=0, some=False, noise=0.35, camera_shift=1.0):
    """Features of people seen by cameras: person vector + camera offset + per-image noise.

    Returns (N, D) float32 features, (N,) cameras, (N,) person ids (the ids score only).
    """
    rng = np.random.default_rng(seed)
    ident = rng.standard_normal((num_people, dim))
    offset = camera_shift * rng.standard_normal((num_cams, dim))
    feats, cams, pids = [], [], []
    for p in range(num_people):
        seen = range(num_cams) if not some else rng.choice(num_cams, rng.integers(2, num_cams + 1), replace=False)
        for c in seen:
            centre = ident[p] + offset[c] + 0.5 * rng.standard_normal(dim)  # a person looks different per camera
            feats.append(centre + noise * rng.standard_normal((m, dim)))
            cams += [c] * m
            pids += [p] * m
    return np.concatenate(feats).astype(np.float32), np.array(cams), np.array(pids)


@pytest.mark.parametrize("num_cams", [2, 3, 6])
@pytest.mark.parametrize("m", [1, 2, 5, 12])
def test_images_per_person_and_camera_is_found_for_any_camera_count(num_cams, m):
    feats, cams, _ = people(num_cams, m, some=num_cams > 2, seed=num_cams * 10 + m)
    est, evidence, warnings = estimate_images_per_cell(feats, cams)
    assert est == m, (est, evidence["peak_ratio"])
    assert (m == 1) == any("no repeated person" in w for w in warnings)


def test_a_peak_at_the_end_of_the_searched_range_is_said():
    feats, cams, _ = people(2, 8, seed=1)
    est, evidence, warnings = estimate_images_per_cell(feats, cams, max_rank=4)
    assert est == 5 and evidence["searched"] == [1, 5]
    assert any("edge of the searched range" in w for w in warnings), warnings
    _, _, warnings = estimate_images_per_cell(feats, cams)
    assert not any("edge" in w for w in warnings)


def test_the_estimate_follows_its_seed_and_not_the_image_order():
    """The same seed gives the same evidence, and a reordering of the images the same m."""
    feats, cams, _ = people(3, 4, seed=2)
    a = estimate_structure(feats, cams, seed=5)
    b = estimate_structure(feats, cams, seed=5)
    assert a.evidence == b.evidence and a.m == 4
    order = np.random.default_rng(0).permutation(len(cams))
    assert estimate_structure(feats[order], cams[order], seed=5).m == 4


def test_cameras_per_person_is_the_safe_bound():
    cams = np.repeat([0, 1, 2, 3], 40)
    value, evidence = cameras_per_person(cams, 2.0)
    assert value == 2.0 and evidence["upper_bound"] == 4.0
    # one camera sees half the people of the other: a person is in 1.5 cameras at most
    value, evidence = cameras_per_person(np.repeat([0, 1], [40, 20]), 2.0)
    assert value == 1.5 and evidence["people_per_camera"] == [20.0, 10.0]
    assert cameras_per_person(np.zeros(10, int), 1.0)[0] == 1.0


def test_many_images_per_person_do_not_make_one_pseudo_person_of_a_batch():
    """The regime of crops cut from video (m = 22 on 3 cameras): C * m gave NUM_INSTANCE 32
    (the whole batch) and MIN_SIZE 21. Now at least 4 pseudo-people per batch and the
    authors' MIN_SIZE 5 at most; K takes a person's images over the cameras that see them
    (with K <= m every neighbour is the same person in the same camera)."""
    feats, cams, _ = people(3, 22, num_people=12, seed=3)
    s = suggest_settings(feats, cams, ims_per_batch=32, stage1_ims_per_batch=32)
    assert s.m == 22
    assert s.values["DATALOADER.NUM_INSTANCE"] == 8 and s.values["CALR.STAGE1.NUM_INSTANCE"] == 8
    assert s.values["CALR.CLUSTER.MIN_SIZE"] == 5
    assert s.values["CALR.CLUSTER.K"] == int(np.ceil(s.structure.images_per_person)) + 1 > 2 * s.m
    assert "x 2 cameras per person" in s.rules["CALR.STAGE1.CLUSTER_RATIO"]
    one = suggest_settings(*people(2, 1, seed=4)[:2], ims_per_batch=32, stage1_ims_per_batch=32)
    assert one.m == 1 and one.values["CALR.STAGE1.CLUSTER_RATIO"] == 1.0  # one local cluster per image


def test_the_camera_cap_is_a_key_and_reaching_it_is_said():
    feats, cams, _ = people(6, 3, camera_shift=4.0, seed=5)
    r = infer_cameras(feats, seed=0)
    assert r.num_cameras == 6 and not r.at_cap
    capped = infer_cameras(feats, seed=0, max_cameras=4)
    assert capped.num_cameras <= 4 and capped.at_cap


def test_a_tiny_group_of_black_frames_is_not_a_camera():
    """18 near-identical black frames next to 3 cameras of 90 images are a community of their
    own (the eigengap counts 4); below MIN_CAMERA_SHARE they join a camera instead."""
    feats, cams, _ = people(3, 3, camera_shift=4.0, seed=6)
    black = np.full((18, feats.shape[1]), -30.0, np.float32)
    x = np.concatenate([feats, black + 1e-3 * np.random.default_rng(0).standard_normal(black.shape)])
    kept = infer_cameras(x, seed=0)
    assert kept.num_cameras == 4 and kept.tiny == [] and kept.cams[-1] not in kept.cams[:-18]
    merged = infer_cameras(x, seed=0, min_share=0.1)
    assert merged.num_cameras == 3 and merged.tiny == [18]
    assert len(np.unique(merged.cams[:-18])) == 3 and merged.cams[-1] in merged.cams[:-18]


def test_the_collapse_guard_brings_outliers_back_and_says_how():
    feats, cams, _ = people(2, 3, seed=7)
    local = np.zeros(len(cams), np.int64)
    params = dict(k=8, min_sim=0.0, min_size=12, camera_centre=True, refine_enabled=False)
    off = stage2_labels(feats, cams, local, 0, 10, LabelParams(**params))
    assert np.mean(off.global_labels < 0) > 0.5 and off.guard == []
    on = stage2_labels(feats, cams, local, 0, 10, LabelParams(max_outliers=1 / 3, **params))
    assert np.mean(on.global_labels < 0) <= 1 / 3
    assert on.min_size < 12 and on.guard and "MIN_SIZE 12 -> 6" in on.guard[0]
    with pytest.raises(ValueError, match="max_outliers"):
        LabelParams(max_outliers=0.0)


def test_cross_camera_neighbour_share_reads_whether_cameras_mix():
    from calr_plugin.labels.signals import cross_camera_neighbour_share

    feats, cams, _ = people(2, 3, camera_shift=8.0, seed=8)
    assert cross_camera_neighbour_share(feats, cams, k=2) == 0.0  # the cameras apart: no neighbour across
    rng = np.random.default_rng(0)
    ident = rng.standard_normal((20, 16))
    both = np.concatenate([ident, ident]) + 1e-3 * rng.standard_normal((40, 16))  # one image a person and camera
    cams2 = np.repeat([0, 1], 20)
    assert cross_camera_neighbour_share(both, cams2, k=1) == 1.0  # the nearest is the other camera's image
    assert 0.3 < cross_camera_neighbour_share(both, cams2, k=8) < 0.7


def test_k_stops_at_its_cap_and_says_so_and_a_known_m_keeps_its_evidence():
    """Past 128 images per person the kNN graph would grow with the data: K stops at the cap
    and the rule says a person's images no longer fit in it."""
    feats, cams, _ = people(2, 70, num_people=3, seed=7)
    tracklets = {"from": "tracklets", "cameras": [0, 1], "images": 420, "clusters": 6}
    s = suggest_settings(feats, cams, ims_per_batch=32, stage1_ims_per_batch=32, m=70.0, m_evidence=tracklets)
    assert s.values["CALR.CLUSTER.K"] == MAX_K == 128 and "(at the cap" in s.rules["CALR.CLUSTER.K"]
    assert s.structure.evidence["m"] == tracklets
    below = suggest_settings(feats, cams, ims_per_batch=32, stage1_ims_per_batch=32, m=20.0)
    assert below.values["CALR.CLUSTER.K"] == 41 and "at the cap" not in below.rules["CALR.CLUSTER.K"]
    assert below.structure.evidence["m"] == {"given": 20.0}
