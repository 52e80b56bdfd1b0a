"""labels/holdout.py: the held-out images are drawn per camera from the seed and never get a training label."""
import numpy as np

from calr_plugin.labels.holdout import MIN_HELD_OUT, drop_held_out, holdout_mask


def test_every_camera_gives_its_share_and_keeps_images_to_train_on():
    cams = np.repeat([3, 5, 9], [1000, 300, 2])
    mask = holdout_mask(cams, 0.1, seed=1)
    assert [mask[cams == c].sum() for c in (3, 5, 9)] == [100, 30, 0]  # 0.2 of 2 rounds to 0
    assert np.array_equal(mask, holdout_mask(cams, 0.1, seed=1))
    assert not np.array_equal(mask, holdout_mask(cams, 0.1, seed=2))
    assert not holdout_mask(cams, 0.0, seed=1).any()
    assert holdout_mask(np.array([0, 0, 1]), 0.9, seed=0).tolist().count(True) == 1  # never a camera's last image


def test_a_small_set_holds_out_enough_images_to_read_a_signal_on():
    cams = np.repeat([0, 1], 100)
    assert holdout_mask(cams, 0.1, seed=0).sum() == MIN_HELD_OUT  # not 20
    assert holdout_mask(np.repeat([0, 1], 40), 0.1, seed=0).sum() == 20  # at most a quarter


def test_held_out_images_leave_their_clusters_and_empty_clusters_go_with_their_weight():
    labels = np.array([0, 0, 1, 2, 2, -1, 3])
    held = np.array([False, True, True, False, False, True, False])
    out, w = drop_held_out(labels, np.array([0.1, 0.2, 0.3, 0.4]), held)
    np.testing.assert_array_equal(out, [0, -1, -1, 1, 1, -1, 2])  # cluster 1 had only a held-out image
    np.testing.assert_allclose(w, [0.1, 0.3, 0.4])
    assert drop_held_out(labels, None, held)[1] is None


def test_with_tracklets_whole_tracklets_are_held_out_in_every_camera():
    # Camera 0: 50 tracklets of 10 frames; camera 1: 20 of 10 and 5 frames in no tracklet.
    cams = np.repeat([0, 1], [500, 205])
    groups = np.concatenate([np.repeat(np.arange(70), 10), -np.ones(5, np.int64)])
    mask = holdout_mask(cams, 0.1, seed=4, groups=groups)
    for g in range(70):  # a tracklet is held out whole or not at all
        assert mask[groups == g].all() or not mask[groups == g].any()
    assert mask[cams == 0].sum() == 50 and 20 <= mask[cams == 1].sum() <= 29  # the crossing unit included
    assert np.array_equal(mask, holdout_mask(cams, 0.1, seed=4, groups=groups))
    # One tracklet per camera: it trains, nothing is held out there.
    assert not holdout_mask(np.zeros(30, np.int64), 0.2, seed=0, groups=np.zeros(30, np.int64)).any()
