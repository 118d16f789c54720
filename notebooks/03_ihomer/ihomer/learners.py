"""The learners: label combination (:class:`LabelCombination`) over a Hoeffding tree whose naive-Bayes leaves
compare classes on equal terms (:class:`HoeffdingTreeLC`, :class:`LeafNBA`, :func:`naive_bayes_votes`), which is
the per-cluster learner of our iHOMER (:func:`lc_tree`); the paper's river baselines (:func:`baselines`,
:func:`more_baselines`, :class:`ThresholdedRegressor`), and :class:`DriftReset`, a baseline given iHOMER's local
drift handling."""

from __future__ import annotations

import math
from collections.abc import Callable

from river import base, drift, ensemble, forest, linear_model, naive_bayes, neighbors, tree
from river.multioutput import PerOutputClassifier
from river.tree import HoeffdingTreeClassifier
from river.tree.nodes.htc_nodes import LeafMajorityClass, LeafNaiveBayesAdaptive


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
