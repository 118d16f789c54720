"""Label dependencies (notebook 02): co-occurrence counts ``n11, n1``, the Jaccard distance between labels
(:func:`jaccard_from_counts`, :func:`jaccard_distance_matrix`), and a permutation test of label-pair dependence
(:func:`dependence_statistic`, :func:`dependence_permutation_test`)."""

from __future__ import annotations

import numpy as np


def cooccurrence_counts(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n11[a, b]`` (both labels on) and ``n1[a]`` (label on) over the rows of ``Y``."""
    Yf = np.asarray(Y, dtype=float)
    return Yf.T @ Yf, Yf.sum(0)


def jaccard_from_counts(n11: np.ndarray, n1: np.ndarray) -> np.ndarray:
    """Jaccard distance ``1 - n11 / (n11 + n10 + n01)`` for every pair, with ``n10 + n01 + n11 = n1[a] + n1[b] -
    n11``. A pair never seen on has distance 1 (nothing says they go together); the diagonal is 0."""
    union = n1[:, None] + n1[None, :] - n11
    d = 1.0 - np.divide(n11, union, out=np.zeros(union.shape), where=union > 0)
    d[union <= 0] = 1.0
    np.fill_diagonal(d, 0.0)
    return d


def jaccard_distance_matrix(Y: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard distances between the label columns of ``Y``."""
    return jaccard_from_counts(*cooccurrence_counts(Y))


def dependence_statistic(Y: np.ndarray) -> float:
    """How far the label pairs of ``Y`` are from independence: the sum over pairs ``a < b`` of
    ``|n11[a, b] - n1[a] n1[b] / n|``, observed co-occurrences against what independent labels with the same
    rates would give on average (in instances)."""
    n11, n1 = cooccurrence_counts(Y)
    iu = np.triu_indices(len(n1), 1)
    return float(np.abs(n11 - np.outer(n1, n1) / len(Y))[iu].sum())


def dependence_permutation_test(Y: np.ndarray, n_permutations: int = 9_999, seed: int = 0) -> dict:
    """Permutation test of label-pair dependence. The null: the labels are independent of each other. Shuffling
    each label column on its own across the instances keeps every label's rate and breaks every dependence; the
    statistic (:func:`dependence_statistic`) of ``n_permutations`` such shuffles (fixed ``seed``) is the null
    distribution, and the p-value is ``(1 + #{null >= observed}) / (1 + n_permutations)``."""
    Y = np.asarray(Y, dtype=bool)
    rng = np.random.default_rng(seed)
    observed = dependence_statistic(Y)
    null = np.array([dependence_statistic(rng.permuted(Y, axis=0)) for _ in range(n_permutations)])
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return {"observed": observed, "null": null, "p": p, "n_permutations": n_permutations}
