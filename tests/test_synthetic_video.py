"""calr_plugin/data/synthetic_video.py: generated video with true tracks and MOT files."""
import numpy as np
import pytest

from calr_plugin.data.synthetic_video import VideoSpec, background, frames, write_sequence
from calr_plugin.data.video_io import read_mot

SMALL = dict(num_people=6, num_frames=40, width=320, height=180, speed=(0.02, 0.03))


def test_frames_are_seeded_and_boxes_lie_on_the_drawn_people():
    a, b = list(frames(VideoSpec(seed=1, **SMALL))), list(frames(VideoSpec(seed=1, **SMALL)))
    assert all(np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    other = list(frames(VideoSpec(seed=2, **SMALL)))
    assert not all(np.array_equal(x[2], y[2]) for x, y in zip(a, other))
    gt = np.concatenate([g for _, _, g, _ in a])
    assert len(np.unique(gt[:, 0])) >= 5  # most people get into view
    assert (gt[:, 1] >= 0).all() and (gt[:, 2] >= 0).all()
    assert (gt[:, 1] + gt[:, 3] <= 320).all() and (gt[:, 2] + gt[:, 4] <= 180).all()
    inside = (gt[:, 1] > 0) & (gt[:, 2] > 0) & (gt[:, 1] + gt[:, 3] < 320) & (gt[:, 2] + gt[:, 4] < 180)
    assert (gt[:, 5] >= 0.5).all() and (gt[inside, 5] < 0.999).any()  # people hide each other, not only the edge
    # the box holds the person: its pixels differ from the empty scene far more than outside it
    t, img, g, _ = a[20]
    empty = background(VideoSpec(seed=1, **SMALL))
    for _, x, y, w, h, _ in g:
        inside = np.abs(img[int(y):int(y + h), int(x):int(x + w)].astype(int) - empty[int(y):int(y + h), int(x):int(x + w)])
        assert inside.mean() > 10


def test_detections_miss_jitter_and_add_false_boxes():
    fr = list(frames(VideoSpec(seed=0, miss_rate=0.3, false_positives=0.5, box_jitter=0.05, **SMALL)))
    n_gt = sum(len(g) for _, _, g, _ in fr)
    n_det = sum(len(d) for _, _, _, d in fr)
    fps = 0.5 * len(fr)
    assert 0.55 * n_gt + 0.5 * fps < n_det < 0.85 * n_gt + 2 * fps
    clean = list(frames(VideoSpec(seed=0, miss_rate=0.0, false_positives=0.0, box_jitter=0.0, **SMALL)))
    for (_, _, g, d) in clean:
        np.testing.assert_allclose(d[:, :4], g[:, 1:5])
    with pytest.raises(ValueError, match="miss_rate"):
        VideoSpec(miss_rate=1.0).validate()


def test_write_sequence_writes_motchallenge_files(tmp_path):
    spec = VideoSpec(seed=0, **{**SMALL, "num_frames": 8})
    write_sequence(spec, str(tmp_path / "seq"))
    assert sorted(p.name for p in (tmp_path / "seq" / "img1").iterdir()) == [f"{t:06d}.jpg" for t in range(1, 9)]
    gt, det = read_mot(str(tmp_path / "seq" / "gt" / "gt.txt")), read_mot(str(tmp_path / "seq" / "det" / "det.txt"))
    want = np.concatenate([np.c_[np.full(len(g), t), g] for t, _, g, _ in frames(spec)])
    assert gt.shape == (len(want), 10)
    np.testing.assert_allclose(gt[:, :6], want[:, :6], atol=0.06)
    assert det.shape[1] == 10 and (det[:, 1] == -1).all() and set(det[:, 0]) <= set(range(1, 9))
