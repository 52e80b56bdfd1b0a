"""calr_plugin/deploy/calibrate.py: distances of same and different people, thresholds at
false-match rates (pairs and open set), the calibration file and its reader."""
import json

import numpy as np
import pytest

from calr_plugin import CalrError
from calr_plugin.deploy.calibrate import (
    calibrate, load_threshold, nearest_distances, pair_distances, write_calibration)


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def toy(seed=0, people=30, per=4, noise=0.35):
    """``people`` people x ``per`` images around a random direction each, two cameras."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 16))
    feats = unit(np.repeat(centres, per, 0) + noise * rng.standard_normal((people * per, 16)))
    pids = np.repeat(np.arange(people), per)
    cams = np.tile(["a", "b"], people * per // 2)
    return feats, pids, cams


def test_pair_distances_split_pairs_by_person_and_camera():
    f = unit([[1, 0], [1, 0], [0, 1], [1, 1]])
    pids, cams = [1, 1, 2, 2], ["a", "b", "a", "a"]
    same, diff = pair_distances(f, pids, cams)
    np.testing.assert_allclose(sorted(same), [0.0, 1 - np.sqrt(0.5)], atol=1e-6)
    assert len(diff) == 4
    same, diff = pair_distances(f, pids, cams, pairs="cross-camera")
    np.testing.assert_allclose(same, [0.0], atol=1e-6)  # only 0-1 crosses cameras among same pairs
    assert len(diff) == 2  # 1-2 and 1-3
    same, diff = pair_distances(f, pids, cams, pairs="same-camera")
    np.testing.assert_allclose(same, [1 - np.sqrt(0.5)], atol=1e-6)
    with pytest.raises(CalrError, match="needs the images' cameras"):
        pair_distances(f, pids, None, pairs="cross-camera")
    with pytest.raises(CalrError, match="0 same-person"):
        pair_distances(f, [1, 2, 3, 4], cams)


def test_thresholds_admit_at_most_the_rate_of_different_pairs():
    feats, pids, cams = toy()
    same, diff = pair_distances(feats, pids, cams)
    result = calibrate(same, diff, (0.01, 0.05), nearest_distances(feats, pids, cams))
    for rate in ("0.01", "0.05"):
        t = result["thresholds"][rate]
        assert (diff <= t).mean() <= float(rate) < (diff <= t + 1e-3).mean() + 1e-9
        assert result["true_match_rate"][rate] == pytest.approx((same <= t).mean(), abs=1e-6)
    assert result["thresholds"]["0.01"] < result["thresholds"]["0.05"]
    assert result["median_distance"]["same"] < result["median_distance"]["different"]
    e = result["equal_error"]
    assert abs((diff <= e["distance"]).mean() - (same > e["distance"]).mean()) < 0.02
    # open set: the share of images whose nearest other person is within the threshold
    own, impostor = nearest_distances(feats, pids, cams)
    t = result["open_set"]["thresholds"]["0.05"]
    assert (impostor <= t).mean() <= 0.05 and t < result["thresholds"]["0.05"]
    assert result["open_set"]["detection_rate"]["0.05"] == pytest.approx((own <= t).mean(), abs=1e-6)


def test_nearest_distances_per_image():
    f = unit([[1, 0], [0.9, 0.1], [0, 1], [0.1, 1]])
    own, other = nearest_distances(f, [1, 1, 2, 2])
    cos = f @ f.T
    np.testing.assert_allclose(own, [1 - cos[0, 1], 1 - cos[0, 1], 1 - cos[2, 3], 1 - cos[2, 3]], atol=1e-6)
    np.testing.assert_allclose(other[0], 1 - max(cos[0, 2], cos[0, 3]), atol=1e-6)
    own, _ = nearest_distances(f, [1, 1, 2, 2], ["a", "a", "a", "b"], pairs="cross-camera")
    assert np.isinf(own[:2]).all() and np.isfinite(own[2:]).all()


def test_the_calibration_file_round_trips_and_bad_thresholds_are_named(tmp_path):
    feats, pids, cams = toy(1)
    same, diff = pair_distances(feats, pids, cams)
    result = calibrate(same, diff, (0.01, 0.05), nearest_distances(feats, pids, cams))
    path, png = write_calibration(str(tmp_path), result, same, diff, {"weights": "w.pth"})
    data = json.load(open(path))
    assert data["weights"] == "w.pth" and open(png, "rb").read(4) == b"\x89PNG"
    assert load_threshold(path) == result["thresholds"]["0.01"]  # the smallest rate
    assert load_threshold(path, rate=0.05) == result["thresholds"]["0.05"]
    assert load_threshold(path, kind="open_set") == result["open_set"]["thresholds"]["0.01"]
    assert load_threshold("0.27") == 0.27
    with pytest.raises(CalrError, match="no threshold at false-match rate 0.1"):
        load_threshold(path, rate=0.1)
    with pytest.raises(CalrError, match="neither a distance nor a calibration.json"):
        load_threshold(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(CalrError, match="bad.json: not a calibration file"):
        load_threshold(str(tmp_path / "bad.json"))
    with pytest.raises(CalrError, match="false-match rate 1.5"):
        calibrate(same, diff, (1.5,))
