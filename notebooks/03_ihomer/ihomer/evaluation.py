"""Prequential evaluation (test-then-train: predict each instance, then learn it), :func:`prequential` and its cached
form :func:`cached_prequential`, and the multi-label metrics :func:`multilabel_scores` and
:func:`rolling_exact_match`.

The functions the notebooks show (:func:`prequential`, :func:`multilabel_scores`) keep their text as shown,
imports inside them included."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from prunebook import cache
from river import base

from .model import IHOMER
from .streams import MLStream


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


def cached_prequential(name: str, factory: Callable[[], base.MultiLabelClassifier], stream: MLStream,
                       key: dict, progress: bool = True) -> Run:
    """:func:`prequential` through prunebook's cache, keyed by ``name``, ``key`` (what identifies the stream and
    the model's settings), and the series' code (``prunebook.cache``). The stored wall time is that of the run
    that computed it."""
    def compute():
        model = factory()
        run = prequential(model, stream, name, progress=progress)
        extra = {"events": list(model.events), "history": list(model.history)} if isinstance(model, IHOMER) else {}
        return {"P": run.P, "seconds": run.seconds, "extra": extra}

    out = cache.cached("03_ihomer/prequential", {"name": name, "n": len(stream), **key}, compute)
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
