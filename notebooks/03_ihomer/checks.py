"""The 03_ihomer lab's checks (``exercises.ipynb``): each exercise's function against ``ihomer/``, the code the series
runs, on fresh random cases from a seed; the integration exercise runs the series' label clustering with the
student's merge of small clusters patched in. ``course.check("03.2", fn)`` imports this file (with this folder on
``sys.path``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ihomer
import numpy as np
from prunebook import claims, config, course
from prunebook.course import exercise


def _rng(g) -> np.random.Generator:
    """A numpy generator seeded from the check's torch generator (the cases are numpy label matrices)."""
    return np.random.default_rng(course.randint(g, 0, 2**31 - 1))


def _labels(g, n: int, k: int) -> np.ndarray:
    """An n×k boolean label matrix: independent labels of random rates, or labels in blocks that follow a hidden
    state with flips, with some labels never on and some copies of each other, as label streams have them."""
    rng = _rng(g)
    kind = course.randint(g, 0, 2)
    if kind == 0:  # independent labels, some rare, some never on
        rates = rng.choice([0.0, 0.05, 0.2, 0.5, 0.8], size=k)
        return rng.random((n, k)) < rates
    blocks = rng.integers(0, course.randint(g, 1, 3), size=k)
    state = rng.random((n, blocks.max() + 1)) < rng.uniform(0.2, 0.7)
    flip = (0.0, 0.05, 0.2)[kind] if kind < 2 else rng.choice([0.0, 0.1, 0.3])
    Y = state[:, blocks] ^ (rng.random((n, k)) < flip)
    Y[:, rng.random(k) < 0.15] = False  # a label never seen on
    return Y


# ---------------------------------------------------------------- 03.1 · the Jaccard distance from counts


@exercise("03.1", "jaccard_distance", points=2)
def _check_jaccard_distance(student, g) -> int:
    """Goal: the Jaccard distance between labels from co-occurrence counts: which counts enter, and the pairs never seen
    on

    Hint: notebook 02, section 1: d(a, b) = 1 − n11 / (n11 + n10 + n01), and n10 + n01 + n11 = n_a + n_b − n11 (the
    union, not the sum); n00 does not enter; a pair whose union is 0 (neither label ever on) has distance 1; the
    diagonal is 0, a label never on included
    """
    n = 0
    for _ in range(16):
        rows, k = course.randint(g, 1, 60), course.randint(g, 1, 9)
        Y = _labels(g, rows, k)
        n11, n1 = ihomer.cooccurrence_counts(Y)
        kept = n11.copy(), n1.copy()
        case = f"jaccard_distance(n11, n1) for {k} labels over {rows} instances"
        if k <= 4:
            case += f"; n11 {n11.astype(int).tolist()}, n1 {n1.astype(int).tolist()}"
        got = course.call(student, case, n11.copy(), n1.copy())
        n += 1
        got = np.asarray(got, dtype=float)
        assert np.array_equal(n11, kept[0]) and np.array_equal(n1, kept[1]), f"{case} changed its inputs"
        assert got.shape == (k, k), f"{case}: shape {got.shape}, not {(k, k)}"
        want = ihomer.jaccard_from_counts(n11, n1)
        assert np.allclose(got, got.T), f"{case}: the distance is not symmetric"
        assert np.array_equal(np.diag(got), np.zeros(k)), f"{case}: the diagonal is {np.diag(got).tolist()}, not 0"
        if course.rel_error(got, want) > 1e-9:
            a, b = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
            raise AssertionError(
                f"{case}: d({a}, {b}) = {got[a, b]:.6f}, the series gives {want[a, b]:.6f} (labels {a} and {b} on "
                f"{int(n1[a])} and {int(n1[b])} times, together {int(n11[a, b])} times)")
    return n


# ---------------------------------------------------------------- 03.2 · ODAC's divisive split of a label set


def reference_split(n11: np.ndarray, n1: np.ndarray, n: int, delta: float, tau: float) -> list[list[int]] | None:
    """What the series' label tree does with a leaf of ``len(n1)`` labels and these counts over ``n`` instances at a
    test: ``LabelCluster.coefficients``, ``split_test``, then ``LabelCluster.split``. None: no split."""
    leaf = ihomer.LabelCluster(range(len(n1)))
    leaf.n11, leaf.n1, leaf.n = n11.astype(float).copy(), n1.astype(float).copy(), n
    leaf.coefficients(delta)
    if leaf.d1 is None or not ihomer.split_test(leaf.d0, leaf.d1, leaf.d2, leaf.avg, leaf.eps, tau):
        return None
    leaf.split()
    return [child.labels.tolist() for child in leaf.children]


@exercise("03.2", "odac_split", points=2)
def _check_odac_split(student, g) -> int:
    """Goal: ODAC's divisive step on a label set: the Hoeffding bound, the split test, the pivots and who joins whom

    Hint: notebook 03, section 1: ε = √(R² ln(1/δ) / (2n)) with R = 1; over the pairs a < b, d1 the largest distance
    (the first such pair in row order is the pivot pair), d2 the second largest, d0 the smallest, d̄ their mean; split
    when (d1 − d2 > ε or τ > ε) and (d1 − d0)·|d1 + d0 − 2d̄| > ε; each other label joins the pivot it is closer to, the
    first pivot on a tie. It calls your jaccard_distance: 03.1 must pass first
    """
    n, outcomes, ties = 0, set(), 0
    while n < 30 or outcomes != {True, False} or ties == 0:  # 30 cases at least, until both outcomes and a tie
        assert n < 500, "the cases should both split and not split, and tie (the check's generator)"
        rows, k = course.randint(g, 2, 400), course.randint(g, 2, 8)
        Y = _labels(g, rows, k)
        n11, n1 = ihomer.cooccurrence_counts(Y)
        delta = (0.9, 0.9, 0.5, 0.05)[course.randint(g, 0, 3)]
        tau = (0.1, 0.1, 0.01)[course.randint(g, 0, 2)]
        case = f"odac_split(n11, n1, n={rows}, delta={delta}, tau={tau}) for {k} labels"
        if k <= 3:
            case += f"; n11 {n11.astype(int).tolist()}, n1 {n1.astype(int).tolist()}"
        got = course.call(student, case, n11.copy(), n1.copy(), rows, delta, tau)
        n += 1
        want = reference_split(n11, n1, rows, delta, tau)
        outcomes.add(want is None)
        D = ihomer.jaccard_from_counts(n11, n1)
        if want is not None:
            iu = np.triu_indices(k, 1)
            p1, p2 = (int(x[int(np.argmax(D[iu]))]) for x in iu)
            ties += int(any(D[i, p1] == D[i, p2] for i in range(k) if i not in (p1, p2)))
        if want is None:
            assert got is None, f"{case}: you split into {got}; the series' test does not split this leaf"
            continue
        assert got is not None, f"{case}: you do not split; the series splits into {want}"
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return None or (left, right)"
        sides = [sorted(int(i) for i in side) for side in got]
        if sides != want and sides[::-1] != want:
            iu = np.triu_indices(k, 1)
            top = int(np.argmax(D[iu]))
            raise AssertionError(f"{case}: you split into {sides}, the series into {want} (pivot pair "
                                 f"({iu[0][top]}, {iu[1][top]}) at d1 = {D[iu][top]:.4f}; distances "
                                 f"{np.round(D, 3).tolist() if k <= 4 else 'of a larger leaf'})")
    return n


# ---------------------------------------------------------------- 03.3 · the multi-label metrics


METRICS = ("subset_acc", "hamming", "micro_f1", "macro_f1", "example_f1")


@exercise("03.3", "multilabel_scores", points=2)
def _check_multilabel_scores(student, g) -> int:
    """Goal: the five multi-label metrics the paper reports, and what each counts (instances, labels, or pairs)

    Hint: notebook 01, section 3: subset accuracy = mean over instances of [ŷ = y]; Hamming loss = wrong label decisions
    / (N·L); micro-F1 pools TP, FP, FN over every label; macro-F1 averages the per-label F1 over all L labels;
    example-F1 averages 2|y ∩ ŷ| / (|y| + |ŷ|) over the instances; an F1 whose denominator is 0 counts 0 (an empty
    prediction of an empty labelset included)
    """
    n = 0
    for i in range(24):
        rows, k = course.randint(g, 1, 30), course.randint(g, 2, 7)
        rng = _rng(g)
        Y = _labels(g, rows, k)
        P = Y ^ (rng.random(Y.shape) < (0.0, 0.1, 0.3, 0.6)[i % 4])  # perfect, close, noisy, far
        if i % 5 == 4:
            P[:] = False  # predicting nothing
        case = f"multilabel_scores(Y, P) for {rows} instances × {k} labels"
        if Y.size <= 12:
            case += f"; Y {Y.astype(int).tolist()}, P {P.astype(int).tolist()}"
        got = course.call(student, case, Y.copy(), P.copy())
        n += 1
        assert isinstance(got, dict), f"{case}: return a dict with the keys {', '.join(METRICS)}"
        missing = [m for m in METRICS if m not in got]
        assert not missing, f"{case}: no value for {', '.join(missing)}"
        want = ihomer.multilabel_scores(Y, P)
        for m in METRICS:
            assert course.rel_error(float(got[m]), want[m]) < 1e-9, (
                f"{case}: {m} = {float(got[m]):.6f}, the series gives {want[m]:.6f}")
    return n


# ---------------------------------------------------------------- 03.4 · merging small clusters, in the pipeline


def _merge_case(g) -> tuple[list[list[int]], int, np.ndarray]:
    """A partition of k labels into clusters of random sizes, a Jaccard-like distance matrix (sometimes on a coarse
    grid, or mostly 1 as for labels never on together, so that partners tie), and a threshold."""
    rng = _rng(g)
    k = course.randint(g, 2, 14)
    order = rng.permutation(k).tolist()
    cuts = sorted(rng.choice(np.arange(1, k), size=course.randint(g, 0, k - 1), replace=False).tolist())
    clusters = [sorted(order[a:b]) for a, b in zip([0, *cuts], [*cuts, k])]
    D = rng.random((k, k))
    D = (D + D.T) / 2
    grid = course.randint(g, 0, 2)
    if grid == 1:
        D = np.round(D * 4) / 4  # ties
    elif grid == 2:
        D = np.where(D < 0.6, 1.0, np.round(D * 2) / 2)  # mostly pairs never on together (d = 1): partners tie
    np.fill_diagonal(D, 0.0)
    return clusters, course.randint(g, 1, 5), D


@contextlib.contextmanager
def patched_merge(merge: Callable | None) -> Iterator[None]:
    """The series' label clustering (``ihomer.IHOMER``'s repartition, where it merges small ODAC leaves by Jaccard
    distance) with ``merge(clusters, min_size, distance)`` in place of ``ihomer.merge_small_clusters``; the
    tree-position merge stays the series'. Nothing replaced when ``merge`` is None."""
    if merge is None:
        yield
        return
    homes = {id(m): m for m in (ihomer, sys.modules[ihomer.IHOMER.__module__])}.values()
    original = ihomer.merge_small_clusters

    def merge_small_clusters(clusters, min_size, *, distance=None, paths=None):
        if distance is None:
            return original(clusters, min_size, paths=paths)
        return [sorted(int(i) for i in c) for c in merge([list(c) for c in clusters], min_size, distance)]

    for home in homes:
        home.merge_small_clusters = merge_small_clusters
    try:
        yield
    finally:
        for home in homes:
            home.merge_small_clusters = original


LAB_RUN = {"n": 3_000, "drift_at": 1_500, "n_min": 100, "ari_before": 0.8, "ari_after": 0.6, "react_within": 1_000}


def lab_traces(merge: Callable | None, run: dict, seeds: Sequence[int]) -> dict[int, dict]:
    """The series' label clustering alone (``ihomer.trace_partition``: iHOMER with a learner that learns nothing)
    over ``ihomer.drifting_blocks`` for each seed, with ``merge`` patched in (the series' when None)."""
    out = {}
    with patched_merge(merge):
        for seed in seeds:
            stream = ihomer.drifting_blocks(run["n"], drift_at=run["drift_at"], seed=seed)
            out[seed] = ihomer.trace_partition(stream, every=100, progress=False, n_min=run["n_min"])
    return out


def trace_rows(traces: dict[int, dict], run: dict = LAB_RUN) -> list[dict]:
    """Per seed: the ARI at the drift and at the end, and the instances from the drift to the tree's first event."""
    rows = []
    for seed, tr in sorted(traces.items()):
        post = [t for t, *_ in tr["events"] if t > run["drift_at"]]
        rows.append({"seed": seed, "ARI at drift": tr["ari"][tr["t"].index(run["drift_at"])],
                     "ARI at end": tr["ari"][-1], "clusters at end": tr["n_clusters"][-1],
                     "first event after drift": (post[0] - run["drift_at"]) if post else run["n"] - run["drift_at"]})
    return rows


def lab_claims(traces: dict[int, dict], run: dict = LAB_RUN, name: str = "lab-03.4"):
    """The claims table of a lab-sized run, in the shape of notebook 03's: the planted blocks found before the
    drift, the tree reacting to it, the new blocks found after it (per seed, against thresholds declared in
    ``LAB_RUN``)."""
    rows = trace_rows(traces, run)
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=rows[0]["seed"]))
    small = (f"a lab-sized run ({run['n']:,} instances, drift at {run['drift_at']:,}, {len(rows)} seeds) of the "
             "label clustering alone, on our planted-block stream")
    book.add("recover-blocks", f"the label clustering recovers the planted blocks before the drift (ARI ≥ "
             f"{run['ari_before']})", "abstract", f"ARI ≥ {run['ari_before']}", kind="paper", faithful=False,
             unfaithful_because=small,
             decision=claims.exceeds([r["ARI at drift"] for r in rows], threshold=run["ari_before"], side=">"))
    book.add("react-to-drift", f"the label tree reorganises within {run['react_within']:,} instances of the drift",
             "abstract", f"≤ {run['react_within']:,} instances", kind="paper", faithful=False,
             unfaithful_because=small,
             decision=claims.exceeds([r["first event after drift"] for r in rows], threshold=run["react_within"],
                                     side="<", digits=0, unit=" instances"))
    book.add("new-blocks", f"after the drift the partition matches the new blocks (ARI ≥ {run['ari_after']})",
             "abstract", f"ARI ≥ {run['ari_after']}", kind="paper", faithful=False, unfaithful_because=small,
             decision=claims.exceeds([r["ARI at end"] for r in rows], threshold=run["ari_after"], side=">"))
    return book.table()


@exercise("03.4", "merge_small_clusters", points=3)
def _check_merge_small_clusters(student, g) -> int:
    """Goal: why and how iHOMER grows small clusters (average linkage by Jaccard distance, smallest first), and that
    this one function in the series' label clustering gives the same claims table

    Hint: notebook 03, section 2: while there is more than one cluster and some cluster has fewer than min_size labels,
    take the smallest such cluster (ties: the smaller sorted label list), merge it with the cluster of smallest average
    distance between their labels (the mean of distance[a, b] over the pairs; ties: the smaller cluster, then the
    smaller label list); return the clusters, each sorted, in sorted order
    """
    n = 0
    for _ in range(32):
        clusters, min_size, D = _merge_case(g)
        kept = [list(c) for c in clusters], D.copy()
        case = f"merge_small_clusters({clusters}, min_size={min_size}, distance of {len(D)} labels)"
        got = course.call(student, case, [list(c) for c in clusters], min_size, D.copy())
        n += 1
        assert clusters == kept[0] and np.array_equal(D, kept[1]), f"{case} changed its inputs"
        got = sorted(sorted(int(i) for i in c) for c in got)
        labels = sorted(i for c in got for i in c)
        assert labels == list(range(len(D))), f"{case}: {got} is not a partition of the labels 0..{len(D) - 1}"
        assert len(got) == 1 or all(len(c) >= min_size for c in got), (
            f"{case}: {got} still has a cluster smaller than {min_size}")
        want = ihomer.merge_small_clusters(clusters, min_size, distance=D)
        assert got == want, f"{case}: you end with {got}, the series with {want}"
    # the integration: the series' label clustering with the student's merge, against the reference, same seeds
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    reference = lab_traces(None, LAB_RUN, seeds)
    mine = lab_traces(student, LAB_RUN, seeds)
    for seed in seeds:
        for t, a, b in zip(reference[seed]["t"], mine[seed]["ari"], reference[seed]["ari"]):
            assert a == b, (f"the label clustering (a planted-block stream of {LAB_RUN['n']:,} instances, seed {seed})"
                            f" with your merge: ARI {a:.4f} at t = {t}, the reference run gives {b:.4f}")
    course.same_claims_table(lab_claims(mine), lab_claims(reference), "your merge")
    return n + len(seeds)


# ---------------------------------------------------------------- 03.5 · predict, then run


def ihomer_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment, on label matrices set by hand or seeded. Deterministic; each entry is
    one prediction.

    Goal: what the Jaccard distance ignores, how the conventions of the F1s score empty labelsets, and when ODAC splits

    Hint: notebook 02, section 1 (n00 does not enter), notebook 01, section 3 (an F1 with a zero denominator counts 0)
    and notebook 03, sections 1 and 2 (the split test; merging small clusters) explain them
    """
    out: dict[str, Any] = {}
    # two labels over 100 instances: a on in the first 40, b in the first 20 (b only ever with a)
    Y = np.zeros((100, 2), dtype=bool)
    Y[:40, 0], Y[:20, 1] = True, True
    d = ihomer.jaccard_distance_matrix(Y)[0, 1]
    out["distance_of_b_inside_a"] = round(float(d), 4)
    more = np.vstack([Y, np.zeros((1_000, 2), dtype=bool)])
    out["distance_changes_with_1000_empty_instances"] = bool(ihomer.jaccard_distance_matrix(more)[0, 1] != d)
    out["tau_exceeds_eps_at_n_300"] = bool(0.1 > ihomer.hoeffding_bound(300, 0.9))
    # four instances, five labels: {0, 1}, {}, {2}, {0, 1, 2, 3}; label 4 never on
    Y = np.zeros((4, 5), dtype=bool)
    for row, on in enumerate(([0, 1], [], [2], [0, 1, 2, 3])):
        Y[row, on] = True
    nothing = ihomer.multilabel_scores(Y, np.zeros_like(Y))
    perfect = ihomer.multilabel_scores(Y, Y.copy())
    out["hamming_of_predicting_nothing"] = round(nothing["hamming"], 4)
    out["subset_acc_of_predicting_nothing"] = round(nothing["subset_acc"], 4)
    out["example_f1_of_the_perfect_prediction"] = round(perfect["example_f1"], 4)
    out["macro_f1_of_the_perfect_prediction"] = round(perfect["macro_f1"], 4)
    # ODAC on six labels in two blocks of three identical labels, and on six independent labels (n_min = 100)
    rng = np.random.default_rng(0)
    blocks = np.repeat(rng.random((600, 2)) < 0.5, 3, axis=1)
    independent = rng.random((3_000, 6)) < 0.5
    for name, Y in (("blocks", blocks), ("independent", independent)):
        odac = ihomer.JaccardODAC(6, n_min=100)
        for y in Y:
            odac.learn_one(y)
        out[f"clusters_{name}"] = len(odac.partition())
        if name == "blocks":
            out["first_split_at_blocks"] = odac.events[0][0] if odac.events else None
    D = ihomer.jaccard_distance_matrix(blocks)
    out["merged_partition"] = ihomer.merge_small_clusters([[0], [1, 2], [3], [4, 5]], 3, distance=D)
    return out


course.predictions_exercise("03.5", ihomer_experiment)

