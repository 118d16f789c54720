"""The method: :class:`IHOMER`, one multi-label learner per cluster of the online label partition, with local and
global drift detection; :func:`ihomer_random`, the random-partition control; :class:`NullLearner`, to run the label
machinery alone.

:class:`IHOMER` looks :func:`merge_small_clusters` up in this module's namespace (a course lab patches it here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
from river import base, drift

from .clustering import JaccardODAC, merge_small_clusters, modal_labelset_size, random_partition_like
from .dependencies import jaccard_from_counts
from .learners import lc_tree


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
