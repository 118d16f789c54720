"""The label clustering alone, traced over a synthetic stream (notebook 03): :func:`trace_partition` (the
adjusted Rand index of the partition against the planted blocks over time), its cached form :func:`cached_trace`,
the choice of ``n_min`` on tuning streams (:func:`tune_n_min`), and :func:`draw_label_tree`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prunebook import cache
from prunebook import progress as bar

from .clustering import adjusted_rand
from .model import IHOMER, NullLearner
from .streams import MLStream, drifting_blocks


def trace_partition(stream: MLStream, every: int = 100, snapshots: Sequence[int] = (), progress: bool = True,
                    **kw) -> dict:
    """Run iHOMER's label clustering alone over ``stream`` and record, every ``every`` instances, the adjusted Rand
    index of the partition in force (ODAC leaves after merging) and of the raw ODAC leaves against the planted
    blocks (``blocks_before`` up to the drift, ``blocks_after`` from it), plus the ODAC tree at ``snapshots``."""
    model = IHOMER(NullLearner, local_drift=False, global_drift=False, **kw)
    drift = stream.info.get("drift_at") or len(stream)
    out = {"t": [], "ari": [], "ari_leaves": [], "n_clusters": [], "trees": {}, "partitions": {}}
    for t, (x, y) in enumerate(bar(stream.records(), desc="label clustering", enabled=progress, leave=False), 1):
        model.learn_one(x, y)
        if t % every == 0:
            truth = stream.info["blocks_before"] if t <= drift else stream.info["blocks_after"]
            out["t"].append(t)
            out["ari"].append(adjusted_rand(model.current_partition(), truth))
            out["ari_leaves"].append(adjusted_rand(model.odac.partition(), truth))
            out["n_clusters"].append(len(model.clusters))
        if t in snapshots:
            out["trees"][t] = model.odac.tree()
            out["partitions"][t] = model.current_partition()
    out["events"] = list(model.odac.events)
    out["history"] = list(model.history)
    return out


def cached_trace(seed: int, n: int, drift_at: int, n_min: int, **kw) -> dict:
    """:func:`trace_partition` over ``drifting_blocks(n, drift_at=drift_at, seed=seed)`` with ``n_min`` (and other
    :class:`IHOMER` options ``kw``), through prunebook's cache; snapshots of the tree at 1,000, the drift, 1,000
    after it and the end."""
    stream = drifting_blocks(n, drift_at=drift_at, seed=seed)
    snaps = (1000, drift_at, drift_at + 1000, n)
    key = {"seed": seed, "n": n, "drift": drift_at, "n_min": n_min, **kw}
    return cache.cached("03_ihomer/trace", key, lambda: trace_partition(
        stream, every=100, snapshots=snaps, progress=False, n_min=n_min, **kw))


def tune_n_min(grid: Sequence[int], seeds: Sequence[int], n: int, drift_at: int, ari_before: float,
               ari_after: float) -> tuple[int, list[dict]]:
    """Choose ``n_min`` on tuning streams (seeds apart from any claim's): the smallest value of ``grid`` whose every
    tuning stream has the planted blocks at the drift (ARI ≥ ``ari_before``) and the new blocks at the end (ARI ≥
    ``ari_after``); smaller is preferred because the tree is tested more often and reacts sooner. If no value
    passes on every stream, the one with the largest mean of the two ARIs. Returns the value and one row per run."""
    rows = []
    for nm in grid:
        for s in seeds:
            tr = cached_trace(s, n, drift_at, nm)
            rows.append({"n_min": nm, "seed": s, "ARI at drift": tr["ari"][tr["t"].index(drift_at)],
                         "ARI at end": tr["ari"][-1]})
    ok = [nm for nm in grid if all(r["ARI at drift"] >= ari_before and r["ARI at end"] >= ari_after
                                   for r in rows if r["n_min"] == nm)]
    if ok:
        return min(ok), rows
    score = {nm: np.mean([r["ARI at drift"] + r["ARI at end"] for r in rows if r["n_min"] == nm]) for nm in grid}
    return max(grid, key=lambda nm: (score[nm], -nm)), rows


def draw_label_tree(ax, tree: dict, colors: Sequence[str] | None = None, block_of: np.ndarray | None = None,
                    title: str = "") -> None:
    """Draw an ODAC label tree (from :meth:`JaccardODAC.tree`): one box per node, leaves listing their labels,
    each label coloured by ``block_of`` (its planted block) when given."""
    leaves, pos = [], {}

    def collect(node, depth):
        if node["children"]:
            xs = [collect(ch, depth + 1) for ch in node["children"]]
            x = sum(xs) / len(xs)
        else:
            x = len(leaves)
            leaves.append(node)
        pos[node["path"] or "root"] = (x, -depth)
        return x

    collect(tree, 0)

    def edges(node):
        key = node["path"] or "root"
        for ch in node["children"]:
            x0, y0 = pos[key]
            x1, y1 = pos[ch["path"]]
            ax.plot([x0, x1], [y0, y1], color="0.6", lw=1, zorder=1)
            edges(ch)

    edges(tree)
    for node in [tree] + [n for n in _walk(tree)][1:]:
        x, y = pos[node["path"] or "root"]
        if node["children"]:
            ax.scatter([x], [y], s=25, color="0.4", zorder=2)
            continue
        for k, label in enumerate(node["labels"]):
            c = colors[block_of[label] % len(colors)] if colors is not None and block_of is not None else "0.2"
            ax.text(x, y - 0.35 - 0.32 * k, f"y{label}", ha="center", va="top", fontsize=7, color=c,
                    fontweight="bold")
        ax.scatter([x], [y], s=40, marker="s", color="0.2", zorder=2)
    depth = max(-y for _, y in pos.values())
    ax.set_xlim(-0.7, max(len(leaves) - 0.3, 0.7))
    ax.set_ylim(-depth - 0.6 - 0.32 * max(len(n["labels"]) for n in leaves), 0.5)
    ax.set_axis_off()
    ax.set_title(title)


def _walk(node):
    yield node
    for ch in node["children"]:
        yield from _walk(ch)
