"""Multi-label streams held in memory: :class:`MLStream` (features ``X``, boolean labels ``Y``), river's bundled
Yeast (:func:`yeast`), and two synthetic streams with a drift: :func:`drifting_blocks` (planted label blocks that
are reshuffled at the drift, :func:`moved_blocks`, :func:`block_labels`) and :func:`topic_stream` (scikit-learn's
topic model, nothing shaped for label clustering)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from river import datasets
from sklearn.datasets import make_multilabel_classification


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
