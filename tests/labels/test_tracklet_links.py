"""Cannot-links between co-occurring tracklets and the stage-1 cut they set
(calr_plugin/labels/tracklet_links.py, intra_camera.cluster_camera)."""
import numpy as np
import pytest

from calr_plugin.labels import cluster_metrics, intra_camera_labels
from calr_plugin.labels.tracklet_links import cannot_link_pairs, co_occurring, joined_share
from tracklet_people import people_in_one_camera


def test_tracklets_whose_frame_spans_overlap_are_the_cannot_links():
    # tracklet: frames   0: 1-10   1: 10-20 (touches 0 at frame 10)   2: 21-30   3: 5-25
    # 4: frames unknown (-1)  and loose images (-1) never link.
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1])
    frames = np.array([1, 10, 10, 20, 21, 30, 5, 25, 3, -1, 7])
    assert co_occurring(groups, frames).tolist() == [[0, 1], [0, 3], [1, 3], [2, 3]]
    assert co_occurring(groups[:2], frames[:2]).shape == (0, 2)
    rows, cols = cannot_link_pairs(groups, np.array([[0, 3], [2, 3]]))
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 6), (0, 7), (1, 6), (1, 7), (4, 6), (4, 7), (5, 6), (5, 7)]


def test_the_joined_share_counts_image_pairs():
    groups = np.array([0, 0, 0, 1, 2])  # tracklet 0 has 3 images
    pairs = np.array([[0, 1], [1, 2]])
    # 0 and 1 together (3 image pairs), 1 and 2 apart (1 image pair): 3 / 4
    assert joined_share(np.array([0, 0, 0, 0, 1]), groups, pairs) == pytest.approx(0.75)


def test_co_occurring_tracklets_set_the_count_and_keep_look_alikes_apart():
    feats, person, groups, frames = people_in_one_camera()
    cams = np.zeros(len(person), np.int64)
    linked = intra_camera_labels(feats, cams, k1=8, k2=2, ratio=0.5, silhouette=False, groups=groups,
                                 frames=frames)
    # No count given: the cut stops where co-occurring tracklets would join, so each person
    # is one cluster and the look-alikes are two.
    assert linked.num_clusters.tolist() == [5]
    assert cluster_metrics(linked.labels, person, cams)["fscore"] == 1.0
    # Must-links alone at the same count merge a pair of look-alikes.
    must = intra_camera_labels(feats, cams, k1=8, k2=2, num_clusters=4, silhouette=False, groups=groups)
    assert cluster_metrics(must.labels, person, cams)["precision"] < 1.0
    strict = intra_camera_labels(feats, cams, k1=8, k2=2, silhouette=False, groups=groups, frames=frames,
                                 tolerance=0.0)
    assert cluster_metrics(strict.labels, person, cams)["fscore"] == 1.0


def test_a_camera_with_no_co_occurring_tracklets_keeps_the_ratio():
    feats, person, groups, _ = people_in_one_camera()
    one_at_a_time = groups * 100  # tracklet g in frames 100 g .. 100 g + 3
    frames = one_at_a_time + np.tile(np.arange(4), 15)
    cams = np.zeros(len(person), np.int64)
    r = intra_camera_labels(feats, cams, k1=8, k2=2, ratio=0.2, silhouette=False, groups=groups, frames=frames)
    assert r.num_clusters.tolist() == [12]  # floor(60 x 0.2), as without frames


def test_the_tolerance_sets_how_far_the_cut_goes_and_cannot_links_hold_beyond_it():
    # A and B look alike and share the screen once (A0 with B0), as do C0 and D0 (who look
    # nothing alike); C's second tracklet looks different from its first. In the must-link
    # tree A and B join before C0 and C1 do.
    rng = np.random.default_rng(1)
    c = rng.standard_normal((4, 32)) * 3
    c[1] = c[0] + 0.15 * rng.standard_normal(32)
    person, groups = np.repeat(np.arange(4), 12), np.repeat(np.arange(8), 6)
    centre = c[person]
    centre[groups == 5] += 3.0 * rng.standard_normal(32)
    feats = (centre + 0.4 * rng.standard_normal((48, 32))).astype(np.float32)
    start = np.array([0, 100, 5, 200, 300, 400, 305, 500])  # tracklets 0-1 are A's, 2-3 B's, ...
    frames = start[groups] + np.tile(np.arange(6), 8)
    cams = np.zeros(48, np.int64)

    def cut(tolerance):
        r = intra_camera_labels(feats, cams, k1=8, k2=2, silhouette=False, groups=groups, frames=frames,
                                tolerance=tolerance)
        return int(r.num_clusters[0]), cluster_metrics(r.labels, person, cams)
    # Joining A and B joins half the co-occurring image pairs: at 0.01 the cut stops below
    # that merge and C stays in two clusters; at 0.5 it goes on and C is whole, yet A and B
    # stay apart; and no cut joins people who share no neighbour (C and D, A and C).
    k, m = cut(0.01)
    assert k == 5 and m["precision"] == 1.0
    k, m = cut(0.5)
    assert k == 4 and m["precision"] == 1.0 and m["recall"] == 1.0


def test_images_per_person_and_camera_is_read_from_co_occurring_tracklets():
    """Tracklets of 4 crops split each person's 12 crops in a camera in three; the
    cannot-link cut puts them back together, so m is 12, not the tracklet length. A camera
    whose tracklets never overlap in time has no cut and is left out of the count."""
    from calr_plugin.labels.structure import images_per_cell_from_tracklets

    cams_feats = [people_in_one_camera(seed) for seed in (0, 1, 2)]
    feats = np.concatenate([f for f, *_ in cams_feats])
    groups = np.concatenate([g + 100 * c for c, (_, _, g, _) in enumerate(cams_feats)])
    frames = np.concatenate([fr for *_, fr in cams_feats])
    cams = np.repeat([0, 1, 2], 60)
    frames[cams == 2] = groups[cams == 2] * 100 + np.tile(np.arange(4), 15)  # camera 2: one tracklet at a time
    m, evidence = images_per_cell_from_tracklets(feats, cams, groups, frames, k1=8, k2=2)
    assert m == 12.0
    assert evidence["cameras"] == [0, 1] and evidence["clusters"] == 10 and evidence["tracklets"] == 30
    m, evidence = images_per_cell_from_tracklets(feats[cams == 2], cams[cams == 2], groups[cams == 2],
                                                 frames[cams == 2], k1=8, k2=2)
    assert m is None and evidence["cameras"] == []
