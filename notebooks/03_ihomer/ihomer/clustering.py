"""Online label clustering: :class:`JaccardODAC`, the online divisive-agglomerative clustering (ODAC, Rodrigues,
Gama & Pedroso 2008) over the label streams with the Jaccard distance, its nodes :class:`LabelCluster` and tests
(:func:`hoeffding_bound`, :func:`split_test`, :func:`aggregate_test`); :func:`merge_small_clusters` grows clusters
smaller than the modal labelset size (:func:`modal_labelset_size`); :func:`random_partition_like` for the
random-partition control; :func:`adjusted_rand` to compare partitions."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score

from .dependencies import jaccard_from_counts
from .streams import block_labels


def hoeffding_bound(n: int, delta: float, value_range: float = 1.0) -> float:
    """``epsilon = sqrt(R^2 ln(1/delta) / (2n))``: with probability ``1 - delta`` the mean of ``n`` observations of a
    variable of range ``R`` lies within ``epsilon`` of its expectation."""
    if n <= 0:
        return math.inf
    return math.sqrt(value_range**2 * math.log(1.0 / delta) / (2.0 * n))


def split_test(d0: float, d1: float, d2: float | None, avg: float, eps: float, tau: float) -> bool:
    """ODAC's split test for a cluster with largest distance ``d1``, second largest ``d2``, smallest ``d0`` and
    mean ``avg`` over its pairs: the largest pair must be reliably the largest (``d1 - d2 > eps``, or a tie that
    ``tau > eps`` declares harmless), and the cluster must be far from homogeneous,
    ``(d1 - d0) * |d1 + d0 - 2 avg| > eps``."""
    if d2 is None:
        return False
    return (d1 - d2 > eps or tau > eps) and (d1 - d0) * abs(d1 + d0 - 2.0 * avg) > eps


def aggregate_test(child_d1: float, child_eps: float, parent_d1: float, parent_eps: float) -> bool:
    """ODAC's agglomeration test: a child whose diameter now exceeds its parent's (as it was when the parent split)
    by more than either bound shows that the split no longer holds, and the parent takes its labels back."""
    return child_d1 - parent_d1 > max(child_eps, parent_eps)


class LabelCluster:
    """A node of the label tree: its labels, and while it is a leaf the pairwise co-occurrence counts among them."""

    def __init__(self, labels: Sequence[int], parent: LabelCluster | None = None, path: str = ""):
        self.labels = np.asarray(sorted(labels), dtype=int)
        self.parent = parent
        self.path = path
        self.children: tuple[LabelCluster, LabelCluster] | None = None
        self.alive = True
        self.d1: float | None = None
        self.eps = math.inf
        self.reset()

    def reset(self) -> None:
        k = len(self.labels)
        self.n = 0
        self.n11 = np.zeros((k, k))
        self.n1 = np.zeros(k)
        self.d0 = self.d2 = self.avg = None
        self.pivots: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return self.children is None

    def update(self, y: np.ndarray) -> None:
        v = y[self.labels].astype(float)
        if len(v) > 1:
            self.n11 += np.outer(v, v)
            self.n1 += v
        self.n += 1

    def distances(self) -> np.ndarray:
        return jaccard_from_counts(self.n11, self.n1)

    def coefficients(self, delta: float) -> None:
        """d0, d1, d2, the mean pairwise distance, the pivot pair and the Hoeffding bound, from the counts so far."""
        self.eps = hoeffding_bound(self.n, delta)
        k = len(self.labels)
        if k < 2:
            self.d1 = None
            return
        D = self.distances()
        iu = np.triu_indices(k, 1)
        vals = D[iu]
        order = np.argsort(-vals, kind="stable")
        self.d1 = float(vals[order[0]])
        self.d2 = float(vals[order[1]]) if len(vals) > 1 else None
        self.d0 = float(vals.min())
        self.avg = float(vals.mean())
        self.pivots = (int(iu[0][order[0]]), int(iu[1][order[0]]))

    def split(self) -> None:
        """Two children seeded by the pivot pair; every other label joins the pivot it is closer to (ties: first)."""
        D = self.distances()
        p1, p2 = self.pivots
        left, right = [p1], [p2]
        for i in range(len(self.labels)):
            if i not in (p1, p2):
                (left if D[i, p1] <= D[i, p2] else right).append(i)
        self.children = (LabelCluster(self.labels[left], self, self.path + "0"),
                         LabelCluster(self.labels[right], self, self.path + "1"))
        self.n11 = self.n1 = None

    def aggregate(self) -> None:
        """Discard the subtree below and become a leaf again, with fresh counts."""
        for node in self.subtree():
            if node is not self:
                node.alive = False
        self.children = None
        self.reset()

    def subtree(self):
        yield self
        if self.children:
            for child in self.children:
                yield from child.subtree()

    def leaves(self):
        if self.active:
            yield self
        else:
            for child in self.children:
                yield from child.leaves()


class JaccardODAC:
    """Online divisive-agglomerative clustering of the label streams with the Jaccard distance.

    The root starts with every label. Each leaf counts, for every pair of its labels, how often both are on
    (``n11``) and how often each is on; every ``n_min`` instances each leaf computes its distances and runs the
    agglomeration test against its parent, then the split test (:func:`split_test`, :func:`aggregate_test`).
    ``events`` records ``(t, "split" | "merge", path, labels)`` and :meth:`partition` gives the active leaves.

    Two departures from river's ``cluster.ODAC``, on which the released iHOMER code builds: distances are Jaccard
    distances (the released code keeps Pearson correlations and uses them as if they were distances), and ``avg`` is
    the mean over pairs as in Rodrigues et al. (river divides the sum by the number of observations)."""

    def __init__(self, n_labels: int, n_min: int = 300, delta: float = 0.9, tau: float = 0.1):
        self.n_labels, self.n_min, self.delta, self.tau = n_labels, n_min, delta, tau
        self.root = LabelCluster(range(n_labels))
        self.t = 0
        self._timer = n_min
        self.events: list[tuple[int, str, str, list[int]]] = []

    def leaves(self) -> list[LabelCluster]:
        return list(self.root.leaves())

    def partition(self) -> list[list[int]]:
        return [leaf.labels.tolist() for leaf in self.leaves()]

    def paths(self) -> list[str]:
        return [leaf.path for leaf in self.leaves()]

    def force_check(self) -> None:
        """Run the tests at the next instance instead of waiting for the timer (used on a global drift signal)."""
        self._timer = 1

    def learn_one(self, y: np.ndarray) -> bool:
        """Count one label vector; every ``n_min`` instances test the leaves. True when the tree changed."""
        y = np.asarray(y, dtype=bool)
        leaves = self.leaves()
        for leaf in leaves:
            leaf.update(y)
        self.t += 1
        self._timer -= 1
        if self._timer > 0:
            return False
        self._timer = self.n_min
        return self.check(leaves)

    def check(self, leaves: list[LabelCluster] | None = None) -> bool:
        changed = False
        for leaf in leaves if leaves is not None else self.leaves():
            if not leaf.alive or not leaf.active or len(leaf.labels) < 2:
                continue
            leaf.coefficients(self.delta)
            parent = leaf.parent
            grown = parent is not None and parent.d1 is not None and aggregate_test(leaf.d1, leaf.eps, parent.d1,
                                                                                     parent.eps)
            if grown:
                parent.aggregate()
                self.events.append((self.t, "merge", parent.path, parent.labels.tolist()))
                changed = True
            elif split_test(leaf.d0, leaf.d1, leaf.d2, leaf.avg, leaf.eps, self.tau):
                leaf.split()
                self.events.append((self.t, "split", leaf.path, leaf.labels.tolist()))
                changed = True
        return changed

    def tree(self) -> dict:
        """The tree as nested dicts (``labels``, ``active``, ``children``) for drawing."""
        def node(c: LabelCluster) -> dict:
            return {"labels": c.labels.tolist(), "path": c.path, "active": c.active,
                    "children": [node(ch) for ch in c.children] if c.children else []}
        return node(self.root)


def modal_labelset_size(size_counts: Counter | dict) -> int:
    """The most frequent number of labels per instance (ties: the smaller size)."""
    if not size_counts:
        return 1
    return int(max(sorted(size_counts), key=lambda s: size_counts[s]))


def _common_prefix(a: str, b: str) -> str:
    return os.path.commonprefix([a, b])


def merge_small_clusters(clusters: Sequence[Sequence[int]], min_size: int, *, distance: np.ndarray | None = None,
                         paths: Sequence[str] | None = None) -> list[list[int]]:
    """Merge clusters smaller than ``min_size`` into others until none is small (or none can grow).

    The smallest small cluster goes first. Its partner is, with ``distance`` (a label×label Jaccard distance
    matrix), the cluster at the smallest average-linkage distance; with ``paths`` (the clusters' positions in the
    label tree), the one with the deepest common ancestor, which is the released code's sibling-first rule. The result
    is disjoint and covers the same labels."""
    if distance is None and paths is None:
        raise ValueError("give a distance matrix or the tree paths")
    clusters = [sorted(c) for c in clusters]
    paths = list(paths) if paths is not None else [""] * len(clusters)
    while len(clusters) > 1:
        small = [i for i, c in enumerate(clusters) if len(c) < min_size]
        if not small:
            break
        i = min(small, key=lambda k: (len(clusters[k]), clusters[k]))
        options = [j for j in range(len(clusters)) if j != i]
        if distance is not None:
            scores = [(float(distance[np.ix_(clusters[i], clusters[j])].mean()), len(clusters[j]), clusters[j], j)
                      for j in options]
        else:
            scores = [(-len(_common_prefix(paths[i], paths[j])), len(clusters[j]), clusters[j], j) for j in options]
        j = min(scores)[-1]
        merged, path = sorted(clusters[i] + clusters[j]), _common_prefix(paths[i], paths[j])
        for k in sorted((i, j), reverse=True):
            del clusters[k], paths[k]
        clusters.append(merged)
        paths.append(path)
    return sorted(clusters)


def random_partition_like(clusters: Sequence[Sequence[int]], rng: np.random.Generator) -> list[list[int]]:
    """A random partition of the same labels into clusters of the same sizes."""
    labels = rng.permutation([label for c in clusters for label in c])
    out, start = [], 0
    for c in clusters:
        out.append(sorted(labels[start:start + len(c)].tolist()))
        start += len(c)
    return sorted(out)


def adjusted_rand(partition: Sequence[Sequence[int]], truth: Sequence[Sequence[int]]) -> float:
    """Adjusted Rand index between two partitions of the labels (1 = identical, about 0 = chance)."""
    n = sum(len(c) for c in truth)
    return float(adjusted_rand_score(block_labels(truth, n), block_labels(partition, n)))
