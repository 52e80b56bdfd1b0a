"""Test data shared by the tracklet tests: features, people, tracklets and frames of one camera."""
import numpy as np


def people_in_one_camera(seed=0):
    """5 people x 3 tracklets x 4 images; people 0 and 1 look alike (their centres close) but
    are in view at once, as are 2 and 3; tracklets of one person never overlap in time."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, 32)) * 3
    centres[1] = centres[0] + 0.5 * rng.standard_normal(32)
    centres[3] = centres[2] + 0.5 * rng.standard_normal(32)
    person = np.repeat(np.arange(5), 12)
    groups = np.repeat(np.arange(15), 4)
    feats = (centres[person] + 0.4 * rng.standard_normal((60, 32))).astype(np.float32)
    # tracklet j of person p runs frames 100 j + 10 p' .. + 8, where look-alikes share p'
    slot = np.array([0, 0, 1, 1, 2])[person]
    frames = 100 * (groups % 3) + 10 * slot + np.tile(np.arange(4) * 2, 15)
    return feats, person, groups, frames
