"""Neves, Lourenço, Cano & Marreiros, "Online hierarchical partitioning of the output space in extreme multi-label
data streams" (iHOMER, ECAI 2025, arXiv 2507.20894): the method code of the 03_ihomer series.

iHOMER keeps a tree over the *labels* that grows and shrinks online. Its active leaves partition the label space into
disjoint clusters of labels that tend to occur together; one multi-label learner is trained per cluster, and the
prediction for an instance is the union of the clusters' predictions.

The pieces, in the order the notebooks use them:

- **Streams.** :class:`MLStream` (features ``X``, boolean labels ``Y``) from river's bundled Yeast
  (:func:`yeast`), from MEKA/MULAN ARFF files for the ``paper`` profile (:func:`load_arff`, :func:`paper_dataset`),
  or from :func:`drifting_blocks`, a synthetic stream whose labels come in planted blocks that are reshuffled at a
  drift point.
- **Evaluation.** :func:`prequential` (test-then-train: predict each instance, then learn it) and
  :func:`multilabel_scores` (subset accuracy, Hamming loss, micro/macro/example-based F1).
- **Label dependencies.** :func:`jaccard_distance_matrix` from co-occurrence counts ``n11, n10, n01``;
  :func:`dependence_permutation_test`, a permutation test of label-pair dependence.
- **Online label clustering.** :class:`JaccardODAC`, the online divisive-agglomerative clustering (ODAC, Rodrigues,
  Gama & Pedroso 2008) run over the label streams with the Jaccard distance; :func:`hoeffding_bound`,
  :func:`split_test`, :func:`aggregate_test`; :func:`merge_small_clusters` grows clusters smaller than the modal
  labelset size.
- **The learner.** :class:`IHOMER`: one learner per label cluster (default: a label-combination Hoeffding tree,
  :func:`lc_tree`, our simplification of the paper's MLHAT), rebuilt when the partition changes, with ADWIN drift
  detection on each cluster's error (local) and on the whole model's error (global).
- **Baselines.** :func:`baselines` (river's binary-relevance and label-combination learners with the parameters of
  the paper's baselines) and :func:`random_partition_like` for the random-partition control.
- **Ranks.** :func:`average_ranks`, :func:`friedman`, :func:`nemenyi_cd` for notebook 05.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from river import base
from river.tree import HoeffdingTreeClassifier
from river.tree.nodes.htc_nodes import LeafMajorityClass, LeafNaiveBayesAdaptive

# ================================================================================================ streams


@dataclass
class MLStream:
    """A multi-label stream held in memory: ``X`` (n×d float), ``Y`` (n×L bool), names, and facts about it."""

    name: str
    X: np.ndarray
    Y: np.ndarray
    feature_names: list[str]
    label_names: list[str]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.Y = np.asarray(self.Y, dtype=bool)
        if len(self.X) != len(self.Y):
            raise ValueError(f"{self.name}: {len(self.X)} feature rows but {len(self.Y)} label rows")
        self._records: list[tuple[dict, dict]] | None = None

    def __len__(self) -> int:
        return len(self.Y)

    @property
    def n_labels(self) -> int:
        return self.Y.shape[1]

    def head(self, n: int) -> MLStream:
        """The first ``n`` instances (the whole stream if it is shorter)."""
        return MLStream(self.name, self.X[:n], self.Y[:n], self.feature_names, self.label_names, dict(self.info))

    def permuted(self, order: int) -> MLStream:
        """The same instances in another order: ``order`` 0 is the stream as it is (the file order), ``order`` k > 0 a
        permutation drawn with seed k. Stream orders are the replicates of a learner that draws no random numbers."""
        if order == 0:
            return self
        idx = np.random.default_rng(order).permutation(len(self))
        return MLStream(self.name, self.X[idx], self.Y[idx], self.feature_names, self.label_names,
                        {**self.info, "order": order})

    def records(self) -> list[tuple[dict, dict]]:
        """The stream as river wants it: ``(x, y)`` dicts, built once and kept."""
        if self._records is None:
            fn, ln = self.feature_names, self.label_names
            self._records = [(dict(zip(fn, row)), dict(zip(ln, lab)))
                             for row, lab in zip(self.X.tolist(), self.Y.tolist())]
        return self._records

    def describe(self) -> dict:
        sizes = self.Y.sum(1)
        return {"instances": len(self), "features": self.X.shape[1], "labels": self.n_labels,
                "cardinality": float(sizes.mean()), "density": float(self.Y.mean()),
                "distinct_labelsets": len({r.tobytes() for r in np.packbits(self.Y, axis=1)})}


def yeast() -> MLStream:
    """river's bundled Yeast (Elisseeff & Weston 2001): 2,417 instances, 103 features, 14 labels, in file order."""
    from river import datasets

    ds = datasets.Yeast()
    rows = list(ds)
    features = list(rows[0][0])
    labels = list(rows[0][1])
    X = np.array([[x[f] for f in features] for x, _ in rows], dtype=float)
    Y = np.array([[bool(y[label]) for label in labels] for _, y in rows], dtype=bool)
    return MLStream("Yeast", X, Y, features, labels)


def block_labels(blocks: Sequence[Sequence[int]], n_labels: int) -> np.ndarray:
    """Block index of every label (a flat label assignment, the form adjusted Rand index wants)."""
    out = np.full(n_labels, -1)
    for b, members in enumerate(blocks):
        out[list(members)] = b
    if (out < 0).any():
        raise ValueError("the blocks do not cover every label")
    return out


def moved_blocks(n_labels: int, n_blocks: int) -> list[list[int]]:
    """The blocks after the drift: the second half of block ``b`` moves into block ``b + 1`` (cyclically).

    With 12 labels in 3 blocks, ``{0..3}, {4..7}, {8..11}`` become ``{0,1,10,11}, {2,3,4,5}, {6,7,8,9}``: every
    block keeps half its labels and receives half of another's, so no old block survives."""
    size = n_labels // n_blocks
    half = size // 2
    before = [list(range(b * size, (b + 1) * size)) for b in range(n_blocks)]
    return [before[b][:half] + before[(b - 1) % n_blocks][half:] for b in range(n_blocks)]


def drifting_blocks(n: int = 10_000, *, n_labels: int = 16, n_blocks: int = 4, drift_at: int | None = 5_000,
                    p_on: float = 0.35, p_miss: float = 0.05, p_spurious: float = 0.02,
                    n_informative: int = 3, n_noise: int = 8, separation: float = 1.2, seed: int = 0) -> MLStream:
    """A synthetic multi-label stream with planted label blocks and a drift that moves labels between blocks.

    Each block ``b`` has a hidden on/off state ``z_b ~ Bernoulli(p_on)``, drawn independently per instance. A label
    of an active block is on with probability ``1 - p_miss``; a label of an inactive block with ``p_spurious``. The
    features are ``n_informative`` Gaussian dimensions per block, whose mean is ``+separation/2`` or
    ``-separation/2`` times a fixed random sign pattern according to ``z_b``, plus ``n_noise`` pure-noise dimensions.

    At ``drift_at`` the labels are reassigned to blocks (:func:`moved_blocks`): the features still show the hidden
    states, but half the labels of each block now follow another block's state (a real drift of p(y|x), and a
    change of the label dependencies).
    ``info`` holds ``blocks_before``, ``blocks_after``, ``drift_at`` and the expected cardinality."""
    if n_labels % n_blocks:
        raise ValueError(f"n_labels={n_labels} must be a multiple of n_blocks={n_blocks}")
    rng = np.random.default_rng(seed)
    size = n_labels // n_blocks
    before = [list(range(b * size, (b + 1) * size)) for b in range(n_blocks)]
    after = moved_blocks(n_labels, n_blocks)
    drift = n if drift_at is None else int(drift_at)

    z = rng.random((n, n_blocks)) < p_on
    signs = rng.choice([-1.0, 1.0], size=(n_blocks, n_informative))
    means = (z[:, :, None] * 2.0 - 1.0) * 0.5 * separation * signs[None]
    X = np.concatenate([(means + rng.standard_normal(means.shape)).reshape(n, -1),
                        rng.standard_normal((n, n_noise))], axis=1)

    owner_before, owner_after = block_labels(before, n_labels), block_labels(after, n_labels)
    owner = np.where((np.arange(n) < drift)[:, None], owner_before[None], owner_after[None])
    state = np.take_along_axis(z, owner, axis=1)
    u = rng.random((n, n_labels))
    Y = np.where(state, u >= p_miss, u < p_spurious)

    features = [f"b{b}_{j}" for b in range(n_blocks) for j in range(n_informative)]
    features += [f"noise{j}" for j in range(n_noise)]
    labels = [f"y{j}" for j in range(n_labels)]
    p_label = p_on * (1 - p_miss) + (1 - p_on) * p_spurious
    info = {"blocks_before": before, "blocks_after": after, "drift_at": drift_at,
            "expected_cardinality": n_labels * p_label, "seed": seed}
    return MLStream("Synthetic blocks", X, Y, features, labels, info)


def topic_stream(n: int = 3_000, *, n_labels: int = 10, n_features: int = 20, drift_at: int | None = 1_500,
                 seed: int = 0) -> MLStream:
    """A multi-label stream from scikit-learn's ``make_multilabel_classification`` (a bag-of-words topic model: each
    instance draws a number of labels, the labels from their prior, and word counts from the labels' word
    distributions), streamed in its order. At ``drift_at`` a second draw of the generator (other priors and word
    distributions) takes over: an abrupt drift. Nothing in it is shaped for label clustering: the labels depend on
    each other only through the number of labels per instance."""
    from sklearn.datasets import make_multilabel_classification

    drift = n if drift_at is None else int(drift_at)
    parts = []
    for k, size in enumerate((drift, n - drift)):
        if size:
            X, Y = make_multilabel_classification(n_samples=size, n_features=n_features, n_classes=n_labels,
                                                  n_labels=2, allow_unlabeled=True, random_state=seed + 10_000 * k)
            parts.append((X.astype(float), Y.astype(bool)))
    X = np.concatenate([p[0] for p in parts])
    Y = np.concatenate([p[1] for p in parts])
    return MLStream("sklearn topics", X, Y, [f"w{j}" for j in range(n_features)], [f"y{j}" for j in range(n_labels)],
                    {"drift_at": drift_at, "seed": seed})


# ------------------------------------------------------------------------------------------------ ARFF (paper profile)

# The 22 datasets of the paper's tables (names as in its result files) and the ARFF file stems they usually have in
# the MEKA/MULAN distributions (https://www.uco.es/kdis/mllresources/).
PAPER_DATASETS = {
    "Flags": ["flags"], "WaterQuality": ["water-quality", "waterquality", "water_quality"],
    "Emotions": ["emotions"], "VirusGO": ["virusgo", "virus"], "Birds": ["birds"], "Yeast": ["yeast"],
    "Scene": ["scene"], "Human": ["human", "humanpseaac"], "Yelp": ["yelp"], "Medical": ["medical"],
    "Eukaryote": ["eukaryote", "eukaryotepseaac"], "Slashdot": ["slashdot"], "Enron": ["enron"],
    "Hypercube": ["hypercube"], "Langlog": ["langlog"], "Stackex": ["stackex", "stackex_chess", "stackexchess"],
    "Tmc": ["tmc", "tmc2007", "tmc2007-500", "tmc2007_500"], "Ohsumed": ["ohsumed"],
    "D20ng": ["d20ng", "20ng"], "Bibtex": ["bibtex"],
    "Nuswidec": ["nuswidec", "nus-wide-cvladplus", "nuswide_cvladplus"],
    "Imdb": ["imdb"],
}

DATA_HOW_TO = ("download the datasets' ARFF files from the KDIS multi-label repository "
               "(https://www.uco.es/kdis/mllresources/, MEKA format, one <name>.arff per dataset; MULAN files need "
               "their <name>.xml beside them) and put them in one folder, then pass data_root='<folder>' or set "
               "$PRUNEBOOK_DATA. Yeast alone also ships with river (the cpu profile uses that copy).")


def _arff_attributes(lines: Iterable[str]) -> tuple[str, list[tuple[str, list[str] | None]], int]:
    relation, attrs = "", []
    for i, raw in enumerate(lines):
        line = raw.strip()
        low = line.lower()
        if not line or line.startswith("%"):
            continue
        if low.startswith("@relation"):
            relation = line[len("@relation"):].strip()
        elif low.startswith("@attribute"):
            m = re.match(r"@attribute\s+('(?:[^']|\\')*'|\"[^\"]*\"|\S+)\s+(.*)$", line, flags=re.I)
            if not m:
                raise ValueError(f"cannot read ARFF attribute line: {line[:80]}")
            name, kind = m.group(1).strip("'\""), m.group(2).strip()
            values = None
            if kind.startswith("{"):
                values = [v.strip().strip("'\"") for v in kind.strip("{}").split(",")]
            attrs.append((name, values))
        elif low.startswith("@data"):
            return relation, attrs, i + 1
    raise ValueError("no @data section")


def _label_count_from_relation(relation: str) -> int | None:
    m = re.search(r"-C\s+(-?\d+)", relation)
    return int(m.group(1)) if m else None


def load_arff(path: str | os.PathLike, n_labels: int | None = None, name: str | None = None) -> MLStream:
    """A MEKA or MULAN multi-label ARFF file, dense or sparse, streamed in file order by river's ``iter_arff``.

    The labels are found from, in order: ``n_labels`` (positive: the first ``n_labels`` attributes; negative: the
    last ones), MEKA's ``-C n`` in the relation name (same sign convention), or a MULAN ``<stem>.xml`` beside the
    file listing the label names. Nominal features become the index of their value (a simplification); missing
    values (``?``, or absent from a sparse row) are 0."""
    from river import stream

    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    relation, attrs, start = _arff_attributes(lines)
    names = [a for a, _ in attrs]
    if n_labels is None:
        n_labels = _label_count_from_relation(relation)
    if n_labels is not None:
        idx = list(range(n_labels)) if n_labels > 0 else list(range(len(attrs) + n_labels, len(attrs)))
    else:
        xml = path.with_suffix(".xml")
        if not xml.is_file():
            raise ValueError(f"{path.name}: no '-C n' in the relation and no {xml.name} beside it; pass n_labels=")
        wanted = re.findall(r'<label\s+name="([^"]+)"', xml.read_text())
        idx = [names.index(w) for w in wanted]
    labels = [names[i] for i in idx]
    features = [names[i] for i in range(len(attrs)) if i not in set(idx)]
    nominal = dict(attrs)
    data = [line.strip() for line in lines[start:] if line.strip() and not line.lstrip().startswith("%")]
    sparse = bool(data) and data[0].startswith("{")

    def number(feature: str, v: object) -> float:
        # river gives numbers, or strings (nominal values, and every value of a sparse row)
        values = nominal[feature]
        if values is not None:
            return float(values.index(v)) if v in values else 0.0
        return float(v)

    X_rows, Y_rows = [], []
    for x, y in stream.iter_arff(path, target=labels, sparse=sparse):
        X_rows.append([number(f, x[f]) if f in x else 0.0 for f in features])
        Y_rows.append([float(y[label]) == 1.0 for label in labels])
    X = np.array(X_rows, dtype=float).reshape(len(X_rows), len(features))
    Y = np.array(Y_rows, dtype=bool).reshape(len(Y_rows), len(labels))
    return MLStream(name or path.stem, X, Y, features, labels, {"file": path.name})


def find_arff(dataset: str, data_root: str | os.PathLike | None = None) -> Path:
    """The ARFF file of one of the paper's datasets, searched in ``data_root`` then ``$PRUNEBOOK_DATA`` (each folder
    itself, its ``multilabel/`` and ``<Dataset>/`` subfolders, any case); the clear prunebook error if absent."""
    from prunebook.data import missing_dataset, search_roots

    stems = PAPER_DATASETS.get(dataset, [dataset.lower()])
    tried = []
    for label, folder in search_roots(data_root):
        if folder is None:
            tried.append(f"{label} (not set)")
            continue
        for sub in (folder, folder / "multilabel", folder / dataset, folder / dataset.lower()):
            if not sub.is_dir():
                continue
            by_lower = {p.name.lower(): p for p in sub.iterdir() if p.suffix.lower() == ".arff"}
            for stem in stems:
                if f"{stem}.arff" in by_lower:
                    return by_lower[f"{stem}.arff"]
        tried.append(f"{label}: {folder} (and its multilabel/, {dataset}/ subfolders): no "
                     + " or ".join(f"{s}.arff" for s in stems))
    raise missing_dataset(f"The {dataset} multi-label ARFF file", tried, DATA_HOW_TO)


def paper_dataset(dataset: str, data_root: str | os.PathLike | None = None) -> MLStream:
    """One of the paper's 22 datasets from a local ARFF file (see :func:`find_arff`)."""
    return load_arff(find_arff(dataset, data_root), name=dataset)


def load_stream(name: str, profile: str, data_root: str | os.PathLike | None = None, seed: int = 0,
                n: int = 0) -> MLStream:
    """A stream by name: ``"Synthetic"`` (:func:`drifting_blocks`), river's Yeast at ``smoke``/``cpu``, otherwise
    the paper's ARFF file. ``n > 0`` keeps the first ``n`` instances."""
    if name == "Synthetic":
        stream = drifting_blocks(seed=seed)
    elif name == "Yeast" and profile != "paper":
        stream = yeast()
    else:
        stream = paper_dataset(name, data_root)
    return stream.head(n) if n else stream


# ================================================================================================ evaluation


@dataclass
class Run:
    """The predictions of one prequential run and how long it took."""

    name: str
    P: np.ndarray
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return len(self.P) / self.seconds if self.seconds > 0 else float("inf")


def prediction_vector(pred: dict | None, labels: Sequence[str]) -> list[bool]:
    """A river multi-label prediction as booleans in ``labels`` order (a missing or ``None`` label is False)."""
    if not pred:
        return [False] * len(labels)
    return [bool(pred.get(label)) for label in labels]


def prequential(model: base.MultiLabelClassifier, stream: MLStream, name: str = "", progress: bool = True) -> Run:
    """Test-then-train: for every instance, predict it with the model as it stands, then learn it.

    Returns the predictions (``n×L`` bool, row ``t`` made before instance ``t`` was learnt) and the wall time of
    the whole loop (prediction and learning)."""
    from prunebook import progress as bar

    records = stream.records()
    labels = stream.label_names
    P = np.zeros((len(records), len(labels)), dtype=bool)
    start = time.perf_counter()
    for t, (x, y) in enumerate(bar(records, desc=name or stream.name, enabled=progress, leave=False)):
        P[t] = prediction_vector(model.predict_one(x), labels)
        model.learn_one(x, y)
    return Run(name, P, time.perf_counter() - start)


CODE_VERSION = 1  # part of every cache key: bump when a change to this module changes results


def cached_prequential(name: str, factory: Callable[[], base.MultiLabelClassifier], stream: MLStream,
                       key: dict, progress: bool = True) -> Run:
    """:func:`prequential` through prunebook's cache, keyed by ``name``, ``key`` (what identifies the stream and
    the model's settings) and :data:`CODE_VERSION`. The stored wall time is that of the run that computed it."""
    from prunebook import cache

    def compute():
        model = factory()
        run = prequential(model, stream, name, progress=progress)
        extra = {"events": list(model.events), "history": list(model.history)} if isinstance(model, IHOMER) else {}
        return {"P": run.P, "seconds": run.seconds, "extra": extra}

    out = cache.cached("03_ihomer/prequential", {"name": name, "code": CODE_VERSION, "n": len(stream), **key}, compute)
    return Run(name, out["P"], out["seconds"], out.get("extra", {}))


def multilabel_scores(Y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """Subset accuracy, Hamming loss, micro-, macro- and example-based F1 of predictions ``P`` for labels ``Y``
    (scikit-learn's metrics). An F1 whose denominator is zero (no true and no predicted positive) counts as 0,
    river's convention."""
    from sklearn import metrics

    Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)
    return {
        "subset_acc": float(metrics.accuracy_score(Y, P)),
        "hamming": float(metrics.hamming_loss(Y, P)),
        **{f"{avg}_f1": float(metrics.f1_score(Y, P, average=avg, zero_division=0)) for avg in ("micro", "macro")},
        "example_f1": float(metrics.f1_score(Y, P, average="samples", zero_division=0)),
    }


def rolling_exact_match(Y: np.ndarray, P: np.ndarray, window: int = 500) -> np.ndarray:
    """Exact match averaged over the last ``window`` instances (fewer at the start), one value per instance."""
    hit = (np.asarray(Y) == np.asarray(P)).all(1).astype(float)
    c = np.concatenate([[0.0], np.cumsum(hit)])
    t = np.arange(1, len(hit) + 1)
    lo = np.maximum(t - window, 0)
    return (c[t] - c[lo]) / (t - lo)


# ================================================================================================ label dependencies


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


# ============================================================================================ online label clustering


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
    from sklearn.metrics import adjusted_rand_score

    n = sum(len(c) for c in truth)
    return float(adjusted_rand_score(block_labels(truth, n), block_labels(partition, n)))


# ================================================================================================ learners


class LabelCombination(base.MultiLabelClassifier):
    """Label combination (label powerset): every distinct labelset seen is one class of a multi-class learner.

    Predicts the labelset of the predicted class; before it has learnt anything, the empty labelset. river's
    ``multioutput.MultiClassEncoder`` encodes the same way, but its prediction turns each label of the winning
    labelset off when that class's probability is below 0.5 (it predicts per label from p and 1 − p), which is
    the common case with many labelsets; hence this class."""

    def __init__(self, model: base.Classifier):
        self.model = model
        self._code: dict[tuple, int] = {}
        self._sets: list[frozenset] = []
        self._labels: list = []

    def learn_one(self, x, y):
        if not self._labels:
            self._labels = list(y)
        key = tuple(sorted(k for k, v in y.items() if v))
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self._sets)
            self._sets.append(frozenset(key))
        self.model.learn_one(x, code)

    def predict_one(self, x, **kwargs):
        code = self.model.predict_one(x) if self._sets else None
        on = self._sets[code] if code is not None else frozenset()
        return {label: label in on for label in self._labels}

    @property
    def n_labelsets(self) -> int:
        return len(self._sets)


HT_SETTINGS = {"grace_period": 200, "delta": 1e-5, "tau": 0.05}


def hoeffding_tree(**kw):
    """A Hoeffding tree with the paper's baseline settings (grace period 200, delta 1e-5, tau 0.05, naive-Bayes
    adaptive leaves, Gaussian splitter; MLHAT's README table)."""
    return HoeffdingTreeClassifier(**{**HT_SETTINGS, **kw})


def naive_bayes_votes(x: dict, stats: dict, splitters: dict) -> dict:
    """Class probabilities of a leaf's Gaussian naive Bayes, comparing classes on equal terms.

    river 0.26's ``do_naive_bayes_prediction`` adds nothing for a feature whose density a class cannot estimate yet
    (a class seen once has no variance), so such a class is scored by its prior alone while the others pay a
    log-density per feature: with many classes seen once, as label combination makes, the rarest labelsets win.
    Here a class needs two observations to be a candidate, and a feature is used only if every candidate has a
    finite log-density for it. No candidate: the majority class."""
    total = sum(stats.values())
    classes = [c for c, w in stats.items() if w >= 2]
    if not classes or total <= 0:
        return normalize_counts(stats)
    votes = {c: math.log(stats[c] / total) for c in classes}
    for att, obs in splitters.items():
        if att not in x:
            continue
        log_p = getattr(obs, "cond_log_proba", None)
        if log_p is not None:
            values = [log_p(x[att], c) for c in classes]
        else:
            probs = [obs.cond_proba(x[att], c) for c in classes]
            values = [math.log(p) if p > 0 else -math.inf for p in probs]
        if all(v > -math.inf for v in values):
            for c, v in zip(classes, values):
                votes[c] += v
    top = max(votes.values())
    norm = sum(math.exp(v - top) for v in votes.values())
    return {c: math.exp(v - top) / norm for c, v in votes.items()}


def normalize_counts(stats: dict) -> dict:
    total = sum(stats.values())
    return {c: w / total for c, w in stats.items()} if total > 0 else {}


class LeafNBA(LeafNaiveBayesAdaptive):
    """river's naive-Bayes-adaptive leaf with :func:`naive_bayes_votes` in place of its naive Bayes."""

    def learn_one(self, x, y, *, w=1.0, tree=None):
        if self.is_active():
            mc = normalize_counts(self.stats)
            if not self.stats or max(mc, key=mc.get) == y:
                self._mc_correct_weight += w
            nb = naive_bayes_votes(x, self.stats, self.splitters)
            if nb and max(nb, key=nb.get) == y:
                self._nb_correct_weight += w
        LeafMajorityClass.learn_one(self, x, y, w=w, tree=tree)

    def prediction(self, x, *, tree=None):
        if self.is_active() and self._nb_correct_weight >= self._mc_correct_weight:
            return naive_bayes_votes(x, self.stats, self.splitters)
        return normalize_counts(self.stats)


class HoeffdingTreeLC(HoeffdingTreeClassifier):
    """A Hoeffding tree whose naive-Bayes-adaptive leaves are :class:`LeafNBA` (for label combination)."""

    def _new_leaf(self, initial_stats=None, parent=None):
        if self._leaf_prediction != self._NAIVE_BAYES_ADAPTIVE:
            return super()._new_leaf(initial_stats, parent)
        depth = 0 if parent is None else parent.depth + 1
        return LeafNBA(initial_stats or {}, depth, self.splitter)


def lc_hoeffding_tree(**kw) -> HoeffdingTreeLC:
    """:class:`HoeffdingTreeLC` with the paper's Hoeffding-tree settings."""
    return HoeffdingTreeLC(**{**HT_SETTINGS, **kw})


def lc_tree() -> LabelCombination:
    """The per-cluster learner of our iHOMER: a label-combination Hoeffding tree (a simplification of MLHAT)."""
    return LabelCombination(lc_hoeffding_tree())


def baselines(seed: int = 0) -> dict[str, Callable[[], base.MultiLabelClassifier]]:
    """The river baselines of the paper's tables that river provides, with the MLHAT README's parameters.

    Binary relevance (one learner per label): Hoeffding tree, Gaussian naive Bayes, adaptive random forest, kNN,
    ADWIN bagging of logistic regressions; and label combination over one Hoeffding tree (all labels at once)."""
    from river import ensemble, forest, linear_model, naive_bayes, neighbors
    from river.multioutput import PerOutputClassifier

    return {
        "BR+HT": lambda: PerOutputClassifier(hoeffding_tree()),
        "BR+NB": lambda: PerOutputClassifier(naive_bayes.GaussianNB()),
        "BR+ARF": lambda: PerOutputClassifier(forest.ARFClassifier(
            n_models=10, max_features="sqrt", grace_period=50, delta=0.01, tau=0.05, lambda_value=6, seed=seed)),
        "BR+kNN": lambda: PerOutputClassifier(neighbors.KNNClassifier(
            n_neighbors=5, engine=neighbors.LazySearch(window_size=200), weighted=True)),
        "BR+ABALR": lambda: PerOutputClassifier(ensemble.ADWINBaggingClassifier(
            linear_model.LogisticRegression(), n_models=10, seed=seed)),
        "LC+HT": lc_tree,
    }


# The paper's baselines (its tables' columns) by group, and the river learner that runs each one here; None: river
# has none (MLHAT, MLHT, MLHT with pruned sets and MLBELS need porting; AMRules is a regressor in river; MT is a single
# Mondrian tree, which river has only inside its forest).
GLOBAL_BASELINES = {"MLHAT": None, "MLHT": None, "MLHTPS": None, "iSOUPT": "iSOUPT", "MLBELS": None}
LOCAL_BASELINES = {"KNN": "BR+kNN", "NB": "BR+NB", "AMR": None, "HT": "BR+HT", "HAT": "BR+HAT", "EFDT": "BR+EFDT",
                   "SGT": "BR+SGT", "MT": None, "ARF": "BR+ARF", "AMF": "BR+AMF", "ABALR": "BR+ABALR",
                   "ABOLR": "BR+ABOLR"}


class ThresholdedRegressor(base.MultiLabelClassifier):
    """A multi-target regressor used as a multi-label classifier: it regresses the 0/1 labels and predicts a label
    when its output is at least ``threshold`` (how iSOUP-Tree, a multi-target regression tree, enters the paper's
    multi-label tables)."""

    def __init__(self, regressor, threshold: float = 0.5):
        self.regressor, self.threshold = regressor, threshold

    def learn_one(self, x, y):
        self.regressor.learn_one(x, {k: float(v) for k, v in y.items()})

    def predict_one(self, x, **kwargs):
        return {k: v >= self.threshold for k, v in self.regressor.predict_one(x).items()}


def more_baselines(seed: int = 0) -> dict[str, Callable[[], base.MultiLabelClassifier]]:
    """The rest of the paper's baselines that river has, with the MLHAT README's parameters: binary relevance with
    a Hoeffding adaptive tree, an extremely fast decision tree, a stochastic gradient tree, an Aggregated Mondrian
    forest and ADWIN boosting of logistic regressions, and iSOUP-Tree (a global learner)."""
    from river import ensemble, forest, linear_model, tree
    from river.multioutput import PerOutputClassifier

    return {
        "BR+HAT": lambda: PerOutputClassifier(tree.HoeffdingAdaptiveTreeClassifier(
            **HT_SETTINGS, drift_window_threshold=50, switch_significance=0.05, seed=seed)),
        "BR+EFDT": lambda: PerOutputClassifier(tree.ExtremelyFastDecisionTreeClassifier(
            **HT_SETTINGS, min_samples_reevaluate=20)),
        "BR+SGT": lambda: PerOutputClassifier(tree.SGTClassifier(
            grace_period=200, delta=1e-5, init_pred=0.0, lambda_value=0.1, gamma=1.0)),
        "BR+AMF": lambda: PerOutputClassifier(forest.AMFClassifier(
            n_estimators=10, step=1.0, use_aggregation=True, dirichlet=0.5, seed=seed)),
        "BR+ABOLR": lambda: PerOutputClassifier(ensemble.ADWINBoostingClassifier(
            linear_model.LogisticRegression(), n_models=10, seed=seed)),
        "iSOUPT": lambda: ThresholdedRegressor(tree.ISOUPTreeRegressor(
            **HT_SETTINGS, leaf_prediction="adaptive", model_selector_decay=0.95)),
    }


class DriftReset(base.MultiLabelClassifier):
    """A baseline given iHOMER's local drift handling: ADWIN watches the error and the model restarts on a rise.

    ``per_label=False`` (label combination: one model for all labels): one ADWIN on the exact-match error, the whole
    model restarts, as iHOMER restarts a cluster's model. ``per_label=True`` (binary relevance: one model per label,
    a river ``PerOutputClassifier``): one ADWIN per label on that label's error, and that label's model restarts,
    as iHOMER would restart a cluster of one label."""

    def __init__(self, factory: Callable[[], base.MultiLabelClassifier], per_label: bool = False,
                 adwin_delta: float = 0.002):
        from river import drift

        self.factory, self.per_label, self.adwin_delta = factory, per_label, adwin_delta
        self.model = factory()
        self._adwin = drift.ADWIN
        self.monitors: dict = {}
        self.resets: list[tuple[int, object]] = []
        self.t = 0

    def predict_one(self, x, **kwargs):
        return self.model.predict_one(x)

    def _rise(self, key, wrong: bool) -> bool:
        mon = self.monitors.setdefault(key, self._adwin(delta=self.adwin_delta))
        before = mon.estimation
        mon.update(float(wrong))
        if mon.drift_detected and mon.estimation > before:
            self.monitors[key] = self._adwin(delta=self.adwin_delta)
            return True
        return False

    def learn_one(self, x, y):
        pred = self.model.predict_one(x) or {}
        self.t += 1
        if self.per_label:
            for label, v in y.items():
                if self._rise(label, bool(pred.get(label)) != bool(v)) and label in self.model:
                    del self.model[label]          # PerOutputClassifier builds a fresh copy on next use
                    self.resets.append((self.t, label))
        elif self._rise(None, any(bool(pred.get(k)) != bool(v) for k, v in y.items())):
            self.model = self.factory()
            self.resets.append((self.t, None))
        self.model.learn_one(x, y)


class IHOMER(base.MultiLabelClassifier):
    """iHOMER: one multi-label learner per cluster of the online label partition.

    - The label partition comes from :class:`JaccardODAC` over the label vectors, then :func:`merge_small_clusters`
      grows clusters smaller than the modal labelset size (partners by Jaccard distance from co-occurrence counts
      that fade with factor ``fading``, or by tree position with ``merge="tree"``).
    - ``learner()`` builds each cluster's model (default :func:`lc_tree`). When the partition changes, clusters
      that survive keep their model; new clusters get a new one.
    - Local drift: an ADWIN per cluster watches the cluster's exact-match error; when it detects a rise the
      cluster's model is rebuilt the same way. Global drift: an ADWIN on the whole prediction's exact-match error;
      a rise makes the label tree run its tests at once.
    - ``partition="random"`` is the control: at every change of the ODAC partition, a random partition with the
      same cluster sizes is used instead.

    ``events`` logs ``(t, kind, detail)``; ``history`` the partitions in force, as ``(t, clusters)``."""

    def __init__(self, learner: Callable[[], base.MultiLabelClassifier] = lc_tree, *, n_min: int = 300,
                 delta: float = 0.9, tau: float = 0.1, merge: str = "jaccard", fading: float = 0.995,
                 local_drift: bool = True, global_drift: bool = True, adwin_delta: float = 0.002,
                 partition: str = "odac", seed: int = 0):
        if merge not in ("jaccard", "tree", "none"):
            raise ValueError(f"merge={merge!r}; choose 'jaccard', 'tree' or 'none'")
        if partition not in ("odac", "random"):
            raise ValueError(f"partition={partition!r}; choose 'odac' or 'random'")
        self.learner, self.n_min, self.delta, self.tau = learner, n_min, delta, tau
        self.merge, self.fading = merge, fading
        self.local_drift, self.global_drift, self.adwin_delta = local_drift, global_drift, adwin_delta
        self.partition, self.seed = partition, seed
        self._rng = np.random.default_rng(seed)
        self.labels: list = []
        self.t = 0
        self.events: list[tuple[int, str, object]] = []
        self.history: list[tuple[int, list[list[int]]]] = []
        self._last: tuple[object, dict] | None = None

    # ---------------------------------------------------------------- set-up
    def _start(self, y: dict) -> None:
        from river import drift

        self.labels = list(y)
        L = len(self.labels)
        self.odac = JaccardODAC(L, self.n_min, self.delta, self.tau)
        self.n11, self.n1 = np.zeros((L, L)), np.zeros(L)
        self.sizes: Counter = Counter()
        self._adwin = drift.ADWIN
        self.global_adwin = drift.ADWIN(delta=self.adwin_delta)
        self.clusters: list[tuple[int, ...]] = []
        self.models: dict[tuple[int, ...], base.MultiLabelClassifier] = {}
        self.monitors: dict = {}
        self._set_partition([list(range(L))])

    def _set_partition(self, clusters: list[list[int]]) -> None:
        new = [tuple(c) for c in sorted(clusters)]
        models = {c: self.models[c] if c in self.models else self.learner() for c in new}
        monitors = {c: self.monitors.get(c) or self._adwin(delta=self.adwin_delta) for c in new}
        self.clusters, self.models, self.monitors = new, models, monitors
        self.history.append((self.t, [list(c) for c in new]))

    def current_partition(self) -> list[list[int]]:
        return [list(c) for c in self.clusters]

    def _repartition(self) -> None:
        clusters, paths = self.odac.partition(), self.odac.paths()
        if self.merge != "none":
            min_size = modal_labelset_size(self.sizes)
            if self.merge == "jaccard":
                clusters = merge_small_clusters(clusters, min_size, distance=jaccard_from_counts(self.n11, self.n1))
            else:
                clusters = merge_small_clusters(clusters, min_size, paths=paths)
        if self.partition == "random":
            clusters = random_partition_like(clusters, self._rng)
        if sorted(map(tuple, clusters)) != self.clusters:
            self._set_partition(clusters)
            self.events.append((self.t, "partition", [list(c) for c in self.clusters]))

    # ---------------------------------------------------------------- river API
    def _cluster_predictions(self, x: dict) -> dict[tuple[int, ...], np.ndarray]:
        out = {}
        for c in self.clusters:
            pred = self.models[c].predict_one(x)
            out[c] = np.array([bool(pred.get(self.labels[i])) if pred else False for i in c])
        return out

    def predict_one(self, x: dict, **kwargs) -> dict:
        if not self.labels:
            return {}
        preds = self._cluster_predictions(x)
        self._last = (x, preds)
        out = {}
        for c, p in preds.items():
            for i, v in zip(c, p):
                out[self.labels[i]] = bool(v)
        return out

    def learn_one(self, x: dict, y: dict) -> None:
        if not self.labels:
            self._start(y)
        yv = np.array([bool(y[label]) for label in self.labels])
        preds = self._last[1] if self._last is not None and self._last[0] is x else self._cluster_predictions(x)
        self._last = None
        self.t += 1

        # local drift: each cluster's exact-match error; global drift: the whole prediction's
        wrong_any = False
        for c in self.clusters:
            wrong = bool((preds[c] != yv[list(c)]).any())
            wrong_any |= wrong
            if self.local_drift:
                mon = self.monitors[c]
                before = mon.estimation
                mon.update(float(wrong))
                if mon.drift_detected and mon.estimation > before:
                    self.models[c] = self.learner()
                    self.monitors[c] = self._adwin(delta=self.adwin_delta)
                    self.events.append((self.t, "local drift", list(c)))
        for c in self.clusters:
            self.models[c].learn_one(x, {self.labels[i]: bool(yv[i]) for i in c})
        if self.global_drift:
            before = self.global_adwin.estimation
            self.global_adwin.update(float(wrong_any))
            if self.global_adwin.drift_detected and self.global_adwin.estimation > before:
                self.odac.force_check()
                self.events.append((self.t, "global drift", None))

        # the label structure (the faded co-occurrence counts are read only by the Jaccard merge)
        if self.merge == "jaccard":
            yf = yv.astype(float)
            self.n11 *= self.fading
            self.n1 *= self.fading
            self.n11 += np.outer(yf, yf)
            self.n1 += yf
        self.sizes[int(yv.sum())] += 1
        if self.odac.learn_one(yv):
            self._repartition()


def ihomer_random(**kw) -> IHOMER:
    """The random-partition control: iHOMER whose partition is redrawn at random (same cluster sizes)."""
    return IHOMER(partition="random", **kw)


class NullLearner(base.MultiLabelClassifier):
    """Learns nothing and predicts no label: runs :class:`IHOMER`'s label machinery alone (for traces, timing)."""

    def learn_one(self, x, y):
        pass

    def predict_one(self, x, **kwargs):
        return {}


def trace_partition(stream: MLStream, every: int = 100, snapshots: Sequence[int] = (), progress: bool = True,
                    **kw) -> dict:
    """Run iHOMER's label clustering alone over ``stream`` and record, every ``every`` instances, the adjusted Rand
    index of the partition in force (ODAC leaves after merging) and of the raw ODAC leaves against the planted
    blocks (``blocks_before`` up to the drift, ``blocks_after`` from it), plus the ODAC tree at ``snapshots``."""
    from prunebook import progress as bar

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
    from prunebook import cache

    stream = drifting_blocks(n, drift_at=drift_at, seed=seed)
    snaps = (1000, drift_at, drift_at + 1000, n)
    key = {"seed": seed, "n": n, "drift": drift_at, "code": CODE_VERSION, "n_min": n_min, **kw}
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


# ================================================================================================ ranks (notebook 05)


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
