"""Label-free quality signals (labels/signals.py) on small synthetic feature sets (numpy, seconds)."""
import numpy as np

import pytest

from calr_plugin.labels.signals import SIGNALS, cross_camera_mutual, cross_camera_nearest, mean_of, paired_gain


def pairs(num_people=40, dim=32, noise=0.0, num_cams=2, seed=0):
    """One image per person and camera: person vector + noise. Returns (N, D), (N,) cams, (N,) ids."""
    rng = np.random.default_rng(seed)
    ident = rng.standard_normal((num_people, dim))
    feats = np.concatenate([ident + noise * rng.standard_normal(ident.shape) for _ in range(num_cams)])
    return feats.astype(np.float32), np.repeat(np.arange(num_cams), num_people), np.tile(np.arange(num_people), num_cams)


def test_the_cross_camera_nearest_neighbour_is_in_another_camera_and_is_the_person():
    feats, cams, ids = pairs(num_cams=3, noise=0.05)
    nearest = cross_camera_nearest(feats, cams)
    assert (cams[nearest] != cams).all()
    assert (ids[nearest] == ids).all()


def test_mutual_share_falls_as_cross_camera_matching_gets_worse():
    shares = [np.mean([cross_camera_mutual(*pairs(num_people=100, noise=noise, seed=s)[:2]) for s in range(3)])
              for noise in (0.05, 1.0, 5.0)]
    assert shares[0] == 1.0  # every person's two images are each other's nearest across cameras
    assert all(a > b for a, b in zip(shares, shares[1:])), shares
    # Features that no longer match people: only the chance share of random points whose
    # nearest neighbours happen to be mutual (about half at this size and dimension).
    assert shares[-1] < 0.55


def test_mutual_share_drops_when_the_features_learn_the_cameras():
    feats, cams, _ = pairs(noise=0.3)
    rng = np.random.default_rng(1)
    # A model that has learned each camera's sequence: images far apart inside a camera keep
    # only a camera-wise code, nothing shared with the other camera.
    learned = np.concatenate([feats[:, :8] * 0.05, rng.standard_normal((len(cams), 24)) * 3.0], axis=1)
    assert cross_camera_mutual(learned, cams) < 0.5 * cross_camera_mutual(feats, cams)


def test_one_camera_has_no_mutual_share_and_single_images_are_skipped():
    feats, cams, _ = pairs()
    assert np.isnan(cross_camera_mutual(feats, np.zeros_like(cams)))
    assert (cross_camera_nearest(feats, np.zeros_like(cams)) == -1).all()


def test_held_out_images_are_scored_against_each_other_not_against_trained_ones():
    feats, cams, ids = pairs(num_people=60, noise=0.4, seed=3)
    rows = np.flatnonzero(ids < 20)  # both images of 20 people held out
    assert cross_camera_mutual(feats, cams, rows, back_among_rows=True) == 1.0
    # Training pulled every trained image of camera 1 next to a camera-0 image of a held-out
    # person: those images' nearest neighbours are no longer the held-out partners.
    fitted = feats.copy()
    trained_c1 = np.flatnonzero((cams == 1) & (ids >= 20))
    fitted[trained_c1] = feats[(ids[trained_c1] % 20)] + 0.01 * np.random.default_rng(0).standard_normal((40, 32))
    assert cross_camera_mutual(fitted, cams, rows) <= 0.5  # neighbours' nearest searched among all
    assert cross_camera_mutual(fitted, cams, rows, back_among_rows=True) == 1.0
    assert mean_of(SIGNALS["cross_camera_mutual"](fitted, cams, rows)) == 1.0  # what the selection reads


def test_with_tracklets_a_neighbour_coming_back_to_any_frame_of_the_tracklet_is_a_hit():
    # 30 people, 2 cameras, a tracklet of 5 near-identical frames each: which frame of the
    # tracklet is nearest is arbitrary, the tracklet is not.
    rng = np.random.default_rng(0)
    people = rng.standard_normal((30, 32))
    cams = np.repeat([0, 1], 150)
    ids = np.tile(np.repeat(np.arange(30), 5), 2)
    feats = people[ids] + 0.05 * rng.standard_normal((300, 32)) + np.where(cams[:, None] == 1, 0.3, 0.0)
    groups = ids + 30 * cams  # tracklet = (person, camera)
    rows = np.arange(300)
    by_image = cross_camera_mutual(feats, cams, rows, back_among_rows=True)
    by_tracklet = cross_camera_mutual(feats, cams, rows, back_among_rows=True, groups=groups)
    assert by_image < 0.5 and by_tracklet == 1.0
    assert mean_of(SIGNALS["cross_camera_mutual"](feats, cams, rows, groups=groups)) == 1.0
    # Images in no tracklet (-1) count by themselves only.
    assert cross_camera_mutual(feats, cams, rows, back_among_rows=True, groups=-np.ones(300, np.int64)) == by_image


def test_the_paired_gain_is_the_mean_change_and_its_noise_grows_when_images_move_together():
    rng = np.random.default_rng(0)
    before = (rng.random(60) < 0.5).astype(float)
    after = np.where(rng.random(60) < 0.3, 1.0 - before, before)  # 30 % of the images flip
    d = after - before
    # Every image its own unit: the textbook paired standard error, sd / sqrt(n).
    gain, se = paired_gain(before, after, np.arange(60))
    assert gain == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / np.sqrt(60))
    # The same changes made by 6 tracklets of 10 images that flip together: 6 observations,
    # not 60, so a wider error (sqrt(10) wider, up to the small-sample factor).
    per_tracklet = np.repeat(d[:6], 10)
    gain6, se6 = paired_gain(np.zeros(60), per_tracklet, np.repeat(np.arange(6), 10))
    assert gain6 == pytest.approx(d[:6].mean())
    assert se6 == pytest.approx(d[:6].std(ddof=1) / np.sqrt(6))
    # An image scored in only one of the two models is left out; one unit tells nothing.
    b = np.array([0.0, np.nan, 1.0, 0.0])
    assert paired_gain(b, np.array([1.0, 1.0, np.nan, 1.0]), np.arange(4)) == (1.0, 0.0)
    assert paired_gain(np.zeros(5), np.ones(5), np.zeros(5))[1] == np.inf
    assert np.isnan(paired_gain(np.full(3, np.nan), np.ones(3), np.arange(3))[0])
