"""Which examples a pruning keeps. A score is a difficulty: *high = hard*. :func:`keep_indices` keeps the easiest,
the hardest or a random fraction of a score vector (exact counts, :func:`n_keep`), :func:`keep_indices_grouped`
the same within each class or cluster; :func:`pruned_indices` draws an original dataset and prunes it (notebooks
03-04); :func:`class_balance` says how evenly a kept subset covers the classes."""

from __future__ import annotations

import torch
from prunebook import data

KEEPS = ("hard", "easy", "random")


STRATEGIES = ("random", "easy", "hard")


def n_keep(n: int, frac: float) -> int:
    """How many of ``n`` examples a keep fraction ``frac`` keeps (rounded, at least one)."""
    if not 0 < frac <= 1:
        raise ValueError(f"keep fraction {frac!r} must be in (0, 1]")
    return max(1, min(n, round(frac * n)))


def keep_indices(score: torch.Tensor, frac: float, keep: str = "hard",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the examples kept when a fraction ``frac`` of them survives pruning.

    ``score`` is a difficulty score along the last axis: *high = hard* (EL2N, forgetting, distance to a prototype;
    for a margin, pass ``-|margin|``). ``keep='hard'`` keeps the highest scores, ``'easy'`` the lowest, ``'random'``
    a uniformly random subset. Exactly ``n_keep(n, frac)`` indices per row, in increasing order of index."""
    if keep not in KEEPS:
        raise ValueError(f"keep={keep!r}; choose one of {KEEPS}")
    score = torch.as_tensor(score)
    k = n_keep(score.shape[-1], frac)
    if keep == "random":
        noise = torch.rand(score.shape, generator=generator, dtype=torch.float64)
        idx = noise.topk(k, dim=-1).indices
    else:
        # a stable sort, so ties go to the lower index and the result is deterministic
        order = torch.sort(score, dim=-1, descending=keep == "hard", stable=True).indices
        idx = order[..., :k]
    return idx.sort(dim=-1).values


def keep_indices_grouped(score: torch.Tensor, groups: torch.Tensor, frac: float, keep: str = "hard",
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`keep_indices` applied within each group (each class, or each k-means cluster), so every group keeps
    the same fraction ``frac`` of its members (rounded per group). Returns sorted indices into ``score``."""
    groups = torch.as_tensor(groups)
    kept = []
    for g in torch.unique(groups):
        members = torch.nonzero(groups == g).flatten()
        kept.append(members[keep_indices(torch.as_tensor(score)[members], frac, keep, generator)])
    return torch.cat(kept).sort().values


def pruned_indices(labels: torch.Tensor, score: torch.Tensor, n0: int, frac: float, keep: str, seed: int,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """The training set of one pruning experiment, as indices into the pool.

    First the *original dataset*: ``n0`` pool examples drawn stratified by class with ``seed``. Then pruning keeps
    the fraction ``frac`` of it that ``keep`` asks for (``'random'``, ``'easy'`` = lowest ``score``, ``'hard'`` =
    highest), separately within each ``groups`` value (the class labels by default, so every class keeps the same
    fraction; pass k-means clusters for a label-free balance, or ``torch.zeros_like(labels)`` for none)."""
    original = data.stratified_indices(labels, n0, seed)
    groups = labels if groups is None else groups
    g = torch.Generator().manual_seed(seed + 7919)  # the random keep's own stream, apart from the draw above
    local = keep_indices_grouped(torch.as_tensor(score)[original], torch.as_tensor(groups)[original], frac, keep, g)
    return original[local]


def class_balance(labels: torch.Tensor, idx: torch.Tensor, num_classes: int) -> dict[str, float]:
    """How evenly a kept subset covers the classes: each class's kept share relative to its share of the full set.
    Returns the smallest and largest of these ratios (1 and 1 for perfect balance)."""
    full = torch.bincount(labels, minlength=num_classes).double()
    kept = torch.bincount(labels[idx], minlength=num_classes).double()
    ratio = (kept / kept.sum()) / (full / full.sum()).clamp_min(1e-12)
    return {"min_ratio": float(ratio.min()), "max_ratio": float(ratio.max())}
