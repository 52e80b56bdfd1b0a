"""Pseudo-cameras: the count from the embedding's eigengap, the groups from style statistics."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from calr_plugin.labels.cameras import infer_cameras


def _views(seed=0, cameras=3, per_camera=80, misleading=0.15):
    """Embedding and style of images from ``cameras`` cameras.

    The style is the camera's centre plus noise. The embedding is too, except for a
    ``misleading`` share of each camera's images that sit at the next camera's centre (a
    person whose clothes look like that camera's typical colours): grouping by the
    embedding puts them in the wrong camera, grouping by the style does not.
    """
    rng = np.random.default_rng(seed)
    cams = np.repeat(np.arange(cameras), per_camera)
    centres_e = rng.standard_normal((cameras, 64)) * 3
    centres_s = rng.standard_normal((cameras, 16)) * 3
    shown = cams.copy()
    moved = rng.random(len(cams)) < misleading
    shown[moved] = (cams[moved] + 1) % cameras
    emb = centres_e[shown] + rng.standard_normal((len(cams), 64))
    style = centres_s[cams] + rng.standard_normal((len(cams), 16))
    return emb.astype(np.float32), style.astype(np.float32), cams, moved


def test_style_groups_where_the_embedding_misleads():
    emb, style, cams, moved = _views()
    by_style = infer_cameras(emb, seed=0, style=style)
    by_emb = infer_cameras(emb, seed=0)
    assert by_style.num_cameras == by_emb.num_cameras == 3 and by_style.chosen_by == "eigengap"
    assert by_style.grouped_by == "style" and by_emb.grouped_by == "embedding"
    assert adjusted_rand_score(cams, by_style.cams) == 1.0
    # The embedding's groups follow what the images show, not their camera.
    assert adjusted_rand_score(cams, by_emb.cams) < 0.8
    assert adjusted_rand_score(np.where(moved, (cams + 1) % 3, cams), by_emb.cams) == 1.0


def test_count_comes_from_the_embedding_not_the_style():
    emb, style, cams, _ = _views(misleading=0.0)
    # A style that splits every camera in two (e.g. day and night) must not double the count.
    half = (np.arange(len(cams)) % 2).astype(np.float32)[:, None]
    style = np.concatenate([style, 40 * half * np.ones((1, 16), np.float32)], 1)
    r = infer_cameras(emb, seed=0, style=style)
    assert r.num_cameras == 3 and r.chosen_by == "eigengap"
    assert infer_cameras(style, seed=0).num_cameras == 6  # its own eigengap would say 6
    given = infer_cameras(emb, 6, seed=0, style=style)
    assert given.num_cameras == 6 and given.chosen_by == "given"


def test_same_seed_same_cameras_and_bad_style_rows():
    emb, style, _, _ = _views(seed=3)
    a, b = infer_cameras(emb, seed=5, style=style), infer_cameras(emb, seed=5, style=style)
    np.testing.assert_array_equal(a.cams, b.cams)
    assert a.cams[0] == 0 and set(np.unique(a.cams)) == {0, 1, 2}  # numbered by first appearance
    with pytest.raises(ValueError, match="239 style rows for 240 images"):
        infer_cameras(emb, seed=0, style=style[:-1])
