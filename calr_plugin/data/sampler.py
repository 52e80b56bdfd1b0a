"""PK sampling over pseudo-label clusters that never hangs, whatever the number of clusters.

Shape shorthand: N images, K clusters, P clusters per batch, I instances per cluster.

FastReID's identity samplers spin forever without yielding when fewer than P
identities have enough images (the clusters of an early unsupervised epoch can be
that few). This sampler walks the clusters in a seeded random order, emits I indices
per cluster, and cuts the stream into batches: with fewer than P clusters a batch
simply contains a cluster twice. It yields this rank's share of every global batch,
so ranks see disjoint, whole clusters.
"""
import itertools

import numpy as np
from torch.utils.data import Sampler


def cluster_members(labels):
    """Indices of each cluster's members.

    Args:
        labels (ndarray): (N,) int, -1 = not used for training.
    Returns:
        list[ndarray]: K arrays of int64 indices, for clusters 0..K-1 in order.
    """
    labels = np.asarray(labels)
    keep = np.flatnonzero(labels >= 0)
    order = keep[np.argsort(labels[keep], kind="stable")]
    sizes = np.bincount(labels[keep], minlength=int(labels.max(initial=-1)) + 1)
    return np.split(order, np.cumsum(sizes)[:-1]) if len(sizes) else []


class PseudoLabelSampler(Sampler):
    """Infinite PK index stream for one rank.

    Args:
        labels (ndarray): (N,) int64 pseudo labels, -1 = skipped.
        cams (ndarray): (N,) int64 camera ids (used by ``cross_camera``).
        mini_batch_size (int): images per batch on this rank, a multiple of I.
        num_instances (int): I.
        seed (int): seeds the whole stream (shared by every rank).
        cross_camera (bool): the authors' RandomMultipleGallerySampler: a random anchor,
            then I-1 members from *other* cameras than the anchor (without replacement
            when at least I such images exist, as the authors' ``>= num_instances``),
            falling back to any other member; a one-image cluster contributes its image
            once, as theirs does (so in this mode a batch may split a cluster).
        rank, world_size (int): this rank's slice of each global batch.
    """

    def __init__(self, labels, cams, mini_batch_size, num_instances, seed, cross_camera=False,
                 rank=0, world_size=1):
        if mini_batch_size % num_instances:
            raise ValueError(f"batch {mini_batch_size} is not a multiple of {num_instances} instances")
        self.members = cluster_members(labels)
        if not self.members:
            raise ValueError("no cluster to sample from (every image is an outlier)")
        self.cams = np.asarray(cams)
        self.mini_batch_size = mini_batch_size
        self.num_instances = num_instances
        self.seed = seed
        self.cross_camera = cross_camera
        self.rank = rank
        self.world_size = world_size

    def _pick(self, members, rng):
        k = self.num_instances
        if not self.cross_camera:
            return rng.choice(members, k, replace=len(members) < k)
        anchor = rng.choice(members)
        others = members[members != anchor]
        if len(others) == 0:
            return np.array([anchor])
        pool = others[self.cams[others] != self.cams[anchor]]
        if len(pool) == 0:
            pool = others
        rest = rng.choice(pool, k - 1, replace=len(pool) < k)
        return np.concatenate([[anchor], rest])

    def _stream(self):
        rng = np.random.default_rng(self.seed)
        while True:
            for k in rng.permutation(len(self.members)):
                yield from self._pick(self.members[k], rng).tolist()

    def __iter__(self):
        global_batch = self.mini_batch_size * self.world_size
        stream = self._stream()
        start = self.rank * self.mini_batch_size
        while True:
            batch = list(itertools.islice(stream, global_batch))
            yield from batch[start:start + self.mini_batch_size]
