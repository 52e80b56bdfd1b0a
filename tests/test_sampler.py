"""The pseudo-label PK sampler never hangs and gives each rank whole clusters."""
import itertools

import numpy as np

from calr_plugin.data.sampler import PseudoLabelSampler, cluster_members


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_fewer_clusters_than_a_batch_needs_still_yields():
    labels = np.array([0, 0, 1, 1, 1, -1])  # 2 clusters, a batch wants 4 x 2
    idx = take(PseudoLabelSampler(labels, np.zeros(6, int), 8, 2, seed=0), 40)
    assert len(idx) == 40 and 5 not in idx  # outlier never sampled


def test_batches_hold_whole_clusters_of_k_instances():
    labels = np.repeat(np.arange(10), 3)
    idx = np.array(take(PseudoLabelSampler(labels, np.zeros(30, int), 8, 4, seed=1), 80)).reshape(-1, 4)
    assert all(len(set(labels[row])) == 1 for row in idx)


def test_ranks_split_each_global_batch_and_the_stream_is_seeded():
    labels = np.repeat(np.arange(12), 4)
    cams = np.tile([0, 1], 24)
    full = take(PseudoLabelSampler(labels, cams, 16, 4, seed=3, world_size=1), 64)
    r0 = take(PseudoLabelSampler(labels, cams, 8, 4, seed=3, rank=0, world_size=2), 32)
    r1 = take(PseudoLabelSampler(labels, cams, 8, 4, seed=3, rank=1, world_size=2), 32)
    for b in range(4):
        assert full[16 * b:16 * b + 8] == r0[8 * b:8 * b + 8]
        assert full[16 * b + 8:16 * b + 16] == r1[8 * b:8 * b + 8]
    assert full == take(PseudoLabelSampler(labels, cams, 16, 4, seed=3), 64)


def test_cross_camera_sampler_prefers_other_cameras():
    labels = np.array([0] * 6)
    cams = np.array([0, 0, 0, 1, 1, 1])
    idx = np.array(take(PseudoLabelSampler(labels, cams, 3, 3, seed=0, cross_camera=True), 300)).reshape(-1, 3)
    anchors, rest = cams[idx[:, 0]], cams[idx[:, 1:]]
    assert (rest != anchors[:, None]).all()


def test_cluster_members():
    members = cluster_members(np.array([1, -1, 0, 1, 2]))
    assert [m.tolist() for m in members] == [[2], [0, 3], [4]]


def test_cross_camera_sampler_follows_the_authors_edge_cases():
    """A one-image cluster gives its image once; with I-1 other-camera members (fewer than I),
    they are drawn with replacement, as the authors' ``len(pool) >= num_instances`` test."""
    labels = np.array([0, 1, 1, 1, 1])
    cams = np.array([0, 0, 1, 1, 1])
    sampler = PseudoLabelSampler(labels, cams, 4, 4, seed=0, cross_camera=True)
    rng = np.random.default_rng(0)
    assert sampler._pick(np.array([0]), rng).tolist() == [0]
    picks = [sampler._pick(np.array([1, 2, 3, 4]), rng) for _ in range(200)]
    from_cam0 = [p for p in picks if p[0] == 1]
    assert from_cam0 and all(len(p) == 4 and set(p[1:]) <= {2, 3, 4} for p in from_cam0)
    assert any(len(set(p[1:])) < 3 for p in from_cam0)  # with replacement
