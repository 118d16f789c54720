"""Ranks over datasets (notebook 05): :func:`average_ranks`, Friedman's test (:func:`friedman`), Nemenyi's critical
difference (:func:`nemenyi_cd`, :func:`nemenyi_groups`) and the critical-difference diagram :func:`plot_cd`.

The functions the notebooks show (:func:`average_ranks`, :func:`friedman`, :func:`nemenyi_cd`) keep their text as
shown, imports inside them included."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def average_ranks(table: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Average rank of each column (method) over the rows (datasets); 1 is best, ties share the mean rank."""
    from scipy.stats import rankdata

    values = -np.asarray(table, dtype=float) if higher_is_better else np.asarray(table, dtype=float)
    return rankdata(values, axis=1, method="average").mean(0)


def friedman(table: np.ndarray, higher_is_better: bool = True) -> dict[str, float]:
    """Friedman's test over ``N`` datasets × ``k`` methods: the chi-square statistic, Iman–Davenport's F, p-values."""
    from scipy import stats

    N, k = np.shape(table)
    R = average_ranks(table, higher_is_better)
    chi2 = 12 * N / (k * (k + 1)) * (np.sum(R**2) - k * (k + 1) ** 2 / 4)
    den = N * (k - 1) - chi2
    F = (N - 1) * chi2 / den if den > 0 else math.inf
    return {"chi2": float(chi2), "p_chi2": float(stats.chi2.sf(chi2, k - 1)), "F": float(F),
            "p_F": float(stats.f.sf(F, k - 1, (k - 1) * (N - 1)))}


def nemenyi_cd(k: int, N: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference ``q_alpha sqrt(k(k+1)/(6N))``, ``q_alpha`` the studentized range quantile over
    ``sqrt(2)`` at infinite degrees of freedom (Demšar 2006)."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * N)))


def nemenyi_groups(ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (in rank order) of methods whose average ranks differ by less than ``cd``: ``(first, last)``
    positions in the sorted order, each run not contained in another."""
    r = np.sort(np.asarray(ranks, dtype=float))
    runs = []
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return runs


def plot_cd(ax, names: Sequence[str], ranks: np.ndarray, cd: float, title: str = "",
            highlight: Sequence[str] = ()) -> None:
    """A critical-difference diagram (Demšar 2006): the average-rank axis, every method hung from its rank (the
    better half on the left), a bar of length CD, and thick lines joining methods not significantly different."""
    order = np.argsort(ranks, kind="stable")
    names = [names[i] for i in order]
    ranks = np.asarray(ranks, dtype=float)[order]
    k = len(names)
    lo, hi = 1, k
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.hlines(0, lo, hi, color="k", lw=1)
    for v in range(lo, hi + 1):
        ax.vlines(v, 0, 0.12, color="k", lw=0.8)
        ax.text(v, 0.18, str(v), ha="center", va="bottom", fontsize=7)
    half = (k + 1) // 2
    step = 0.42
    for i, (name, r) in enumerate(zip(names, ranks)):
        left = i < half
        row = (i if left else k - 1 - i) + 1
        y = -0.35 - step * row
        xe = lo - 0.4 if left else hi + 0.4
        ax.plot([r, r, xe], [0, y, y], color="C1" if name in highlight else "0.3", lw=0.9)
        ax.text(xe + (-0.05 if left else 0.05), y, f"{name} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=7, color="C1" if name in highlight else "k",
                fontweight="bold" if name in highlight else "normal")
    for g, (a, b) in enumerate(nemenyi_groups(ranks, cd)):
        y = -0.18 - 0.09 * g
        ax.hlines(y, ranks[a] - 0.05, ranks[b] + 0.05, color="k", lw=2.5)
    ax.hlines(0.75, lo, lo + cd, color="C3", lw=2)
    ax.text(lo + cd / 2, 0.82, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=7, color="C3")
    ax.set_ylim(-0.45 - step * (half + 1), 1.1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
