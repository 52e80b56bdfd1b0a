"""Stage-1 local labels: sparse Jaccard vs FastReID, linkage vs sklearn, camera layout."""
import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from calr_plugin.labels import cluster_camera, intra_camera_labels, jaccard_distance
from calr_plugin.labels.intra_camera import num_local_clusters


def _clustered(n, d, n_centres, noise, seed):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((n_centres, d))
    x = c[rng.integers(0, n_centres, n)] + noise * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k1,k2", [(15, 4), (20, 6), (15, 1)])
def test_sparse_jaccard_equals_fastreid(k1, k2):
    torch = pytest.importorskip("torch")
    import calr_plugin  # noqa: F401  (the FastReID shims, before fastreid is imported)
    compute_dist = pytest.importorskip("fastreid.utils.compute_dist")
    feats = _clustered(200, 64, 20, 0.7, seed=k1 + k2)
    ref = compute_dist.compute_jaccard_distance(torch.from_numpy(feats), k1=k1, k2=k2, search_option=3)
    mine = jaccard_distance(feats, k1, k2)
    assert mine.shape == (200, 200) and mine.dtype == np.float32
    np.testing.assert_allclose(mine, ref, atol=1e-5)
    assert (mine < 1).mean() > 0.05  # the test data has real k-reciprocal structure


def test_average_linkage_partition_equals_sklearn():
    feats = _clustered(240, 32, 30, 0.8, seed=1)
    dist = jaccard_distance(feats).astype(np.float64)
    ref = AgglomerativeClustering(n_clusters=48, metric="precomputed", linkage="average").fit_predict(dist)
    labels, sil = cluster_camera(feats, 48)
    assert labels.dtype == np.int64 and len(np.unique(labels)) == 48
    # same partition: a one-to-one map between the two label sets
    pairs = np.unique(np.stack([labels, ref], 1), axis=0)
    assert len(pairs) == 48
    assert sil == pytest.approx(silhouette_score(dist, ref, metric="precomputed"), abs=1e-6)


def test_num_local_clusters():
    assert [num_local_clusters(n) for n in (1, 2, 4, 5, 9, 10, 203, 1088)] == [1, 1, 1, 1, 1, 2, 40, 217]
    assert num_local_clusters(1088, num_clusters=600) == 600
    assert num_local_clusters(22, num_clusters=600) == 22
    assert num_local_clusters(10, ratio=0.5) == 5


def test_intra_camera_labels_disjoint_and_complete_with_tiny_cameras():
    rng = np.random.default_rng(2)
    sizes = {7: 60, 2: 25, 5: 1, 9: 2, 3: 3}  # camera id -> images, incl. tiny cameras
    cams = rng.permutation(np.concatenate([np.full(n, c) for c, n in sizes.items()]))
    feats = _clustered(len(cams), 16, 12, 0.5, seed=3)
    res = intra_camera_labels(feats, cams)
    labels = res.labels
    assert labels.shape == (len(cams),) and labels.dtype == np.int64 and (labels >= 0).all()
    assert res.cameras.tolist() == [2, 3, 5, 7, 9]
    assert res.num_clusters.tolist() == [5, 1, 1, 12, 1]
    for c, k, off in zip(res.cameras, res.num_clusters, res.offsets):
        own = labels[cams == c]
        assert set(own.tolist()) == set(range(off, off + k))  # every cluster used, own range
    # a label never spans two cameras
    per_label_cams = {lab: set(cams[labels == lab].tolist()) for lab in np.unique(labels)}
    assert all(len(s) == 1 for s in per_label_cams.values())
    assert labels.max() + 1 == res.num_clusters.sum()
    assert np.isnan(res.silhouette[res.cameras.tolist().index(5)])  # one image: undefined
    assert -1 <= res.silhouette[res.cameras.tolist().index(7)] <= 1


def test_a_tracklet_is_never_split_and_caps_the_cluster_count():
    # 6 people x 6 images in one camera; each person's images form two tracklets, and one
    # tracklet is made of images of two different people (a tracker's swap): without groups
    # the clustering separates those two; with groups they stay together, every tracklet
    # stays whole, and K_c never exceeds the tracklets plus loose images.
    from calr_plugin.data.datasets import tracklet_groups

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 32)) * 3
    feats = np.repeat(centres, 6, 0) + 0.3 * rng.standard_normal((36, 32))
    person = np.repeat(np.arange(6), 6)
    groups = np.repeat(np.arange(12), 3)
    groups[[0, 6]] = 99  # image 0 (person 0) and image 6 (person 1): one mixed tracklet
    groups[35] = -1  # a loose image
    cams = np.zeros(36, np.int64)
    plain = intra_camera_labels(feats, cams, k1=6, k2=2, num_clusters=6, silhouette=False).labels
    assert plain[0] != plain[6]  # the features alone separate the two people
    with_groups = intra_camera_labels(feats, cams, k1=6, k2=2, num_clusters=6, silhouette=False, groups=groups).labels
    assert with_groups[0] == with_groups[6]
    for g in np.unique(groups[groups >= 0]):
        assert len(np.unique(with_groups[groups == g])) == 1
    capped = intra_camera_labels(feats, cams, k1=6, k2=2, ratio=1.0, silhouette=False, groups=groups)
    assert capped.num_clusters[0] == len(np.unique(groups[groups >= 0])) + 1
    for g in np.unique(groups[groups >= 0]):
        assert len(np.unique(capped.labels[groups == g])) == 1
    paths = ["/d/train/c1/t1/a.jpg", "/d/train/c1/t1/b.jpg", "/d/train/c1/c.jpg", "/d/train/c2/t1/a.jpg",
             "/d/train/c2/t1/deeper/d.jpg", "/d/bounding_box_train/0001_c1s1_01.jpg"]
    assert tracklet_groups(paths, ["c1", "c1", "c1", "c2", "c2", "1"]).tolist() == [0, 0, -1, 1, 2, -1]
    # one camera folder only (keys relative to it would lose the camera level): still tracklets
    assert tracklet_groups(["/d/train/solo/t1/a.jpg", "/d/train/solo/t2/b.jpg"], ["solo", "solo"]).tolist() == [0, 1]
