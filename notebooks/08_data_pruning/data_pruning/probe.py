"""The linear-probe regime of notebooks 03-04: fixed features (:func:`whitened_pcs`, cached :func:`probe_features`,
the realizable :func:`teacher_task`), a softmax probe fitted to convergence (:func:`fit_probe`, :func:`probe_error`),
its EL2N, GraNd and forgetting scores (:func:`early_probe_scores`, cached :func:`probe_scores`), and
:func:`probe_runs` (prune, fit and test for every seed, through the cache)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from prunebook import cache, data
from prunebook.config import dry_steps

from .scores import forgetting_events
from .selection import class_balance, pruned_indices

# A softmax linear probe on fixed features, trained to convergence: the regime of the paper's theory (a model with
# few parameters, data plentiful relative to them, every kept set fitted to its optimum).

# The features, the probe and its scores of each profile: one table for notebooks 03 and 04, so that notebook 04
# reuses notebook 03's scores and runs through the cache. l2: a weak ridge, so that a kept set smaller than the
# 650 parameters still has one optimum; the same for every size, fraction and rule (not tuned). tol: L-BFGS stops
# when every gradient entry is below it. Scores: EL2N and GraNd after score_epoch of score_epochs SGD epochs,
# forgetting over all of them, averaged over score_runs probes from independent initialisations.
PROBE = {
    "smoke": dict(dataset="fashion_mnist", probe_pool=3000, n_pcs=16, l2=1e-3, tol=1e-5, max_iter=500,
                  score_runs=2, score_epochs=2, score_epoch=1, score_batch=128, score_lr=0.05, labels="real"),
    "cpu": dict(dataset="fashion_mnist", probe_pool=60000, n_pcs=64, l2=1e-3, tol=1e-5, max_iter=2000,
                score_runs=4, score_epochs=10, score_epoch=1, score_batch=128, score_lr=0.05, labels="real"),
}
# paper: the cpu setting (the paper's ResNets are notebook 2's); a dry run trains the scoring probes two epochs and
# stops every L-BFGS fit after two iterations
PROBE["paper"] = {**PROBE["cpu"], "score_epochs": dry_steps(PROBE["cpu"]["score_epochs"]),
                  "max_iter": dry_steps(PROBE["cpu"]["max_iter"])}
# labels: "real" (Fashion-MNIST's) or "teacher" (the realizable task of teacher_task); part of every cache key
PROBE_KEYS = ("dataset", "probe_pool", "n_pcs", "l2", "tol", "max_iter", "score_runs", "score_epochs", "score_epoch",
              "score_batch", "score_lr", "labels")


def whitened_pcs(train_x: torch.Tensor, test_x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``k`` principal components of the training images (pixels, centred), each scaled to unit variance
    on the training set, for the training and the test images. Returns ``(z_train, z_test, explained)``:
    float64 ``n×k`` arrays and the fraction of the pixel variance the ``k`` components hold. Deterministic (each
    component's sign is fixed by its largest coordinate)."""
    x, t = train_x.flatten(1).double(), test_x.flatten(1).double()
    mean = x.mean(0)
    xc = x - mean
    evals, evecs = torch.linalg.eigh(xc.T @ xc / len(x))
    order = evals.argsort(descending=True)[:k]
    v, lam = evecs[:, order], evals[order]
    v = v * torch.sign(v[v.abs().argmax(0), torch.arange(k)])
    proj = v / lam.sqrt()
    return xc @ proj, (t - mean) @ proj, float(lam.sum() / evals.sum())


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float, tol: float = 1e-6,
              max_iter: int = 2000) -> torch.Tensor:
    """Multinomial logistic regression, ``mean cross-entropy + l2/2 |W|^2`` (the bias is not penalised), fitted
    to convergence by L-BFGS (strong Wolfe line search; stops when every gradient entry is below ``tol``).

    ``x`` is ``B×n×d`` and ``y`` ``B×n``: ``B`` independent problems of the same size, fitted together (their
    objectives add up and share no parameter, so the joint minimum is each one's minimum). The objective is
    strictly convex, so the result does not depend on an initialisation. Single precision (twice as fast as double
    here; the test errors agree to a test image or two). Returns ``B×(d+1)×C`` weights."""
    b, n, _ = x.shape
    xb = _with_bias(x.float())
    w = torch.zeros(b, xb.shape[-1], num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.bmm(xb, w).reshape(-1, num_classes)
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="sum") / n + 0.5 * l2 * w[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe_error(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Test error of each of the ``B`` probes ``w`` (``B×(d+1)×C``) on ``x`` (``n×d``), ``y`` (``n``)."""
    pred = (_with_bias(x.float()) @ w.float()).argmax(-1)
    return (pred != y).double().mean(-1)


def early_probe_scores(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, runs: int, epochs: int,
                       score_epoch: int, batch_size: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    """EL2N, GraNd and forgetting scores for a linear softmax probe, the paper's (Paul et al.'s) way: ``runs``
    probes from independent small random initialisations, trained by plain minibatch SGD (each its own order);

    - ``el2n``: ``|softmax - onehot|`` after ``score_epoch`` epochs, averaged over runs;
    - ``grand``: the norm of the example's own gradient at the same epoch; for a linear probe it is exactly
      ``|softmax - onehot| * sqrt(|x|^2 + 1)``, averaged over runs;
    - ``forgetting``: correct-to-wrong transitions between the end-of-epoch checks of all ``epochs``, averaged.

    The runs train side by side as one batched model."""
    g = torch.Generator().manual_seed(seed)
    xb = _with_bias(x.double())
    n, d = xb.shape
    w = 0.01 * torch.randn(runs, d, num_classes, generator=g, dtype=torch.float64)
    onehot = F.one_hot(y, num_classes).double()
    history, out = [], {}
    for epoch in range(1, epochs + 1):
        order = torch.stack([torch.randperm(n, generator=g) for _ in range(runs)])
        for i in range(0, n, batch_size):
            idx = order[:, i:i + batch_size]
            xi = xb[idx]
            err = torch.softmax(torch.bmm(xi, w), -1) - onehot[idx]
            w -= lr * torch.bmm(xi.transpose(1, 2), err) / idx.shape[1]
        p = torch.softmax(xb @ w, -1)  # runs×n×C
        history.append(p.argmax(-1) == y)
        if epoch == score_epoch:
            e = (p - onehot).norm(dim=-1)
            out["el2n"] = e.mean(0)
            out["grand"] = (e * (x.double().pow(2).sum(-1) + 1).sqrt()).mean(0)
    correct = torch.stack(history, 1)  # runs×epochs×n
    out["forgetting"] = torch.stack([forgetting_events(c) for c in correct]).mean(0)
    return {k: v.float() for k, v in out.items()}


def probe_features(s: dict, seed: int = 0, data_root: str | None = None) -> dict:
    """The fixed features of notebooks 03–04: ``s['n_pcs']`` whitened principal components of the training
    images (all of them, or a stratified ``s['probe_pool']`` at smoke), and of the test images; cached. ``index``
    holds the rows of the training set used, in order."""
    def compute():
        if s["dataset"] != "fashion_mnist":
            raise ValueError(f"dataset={s['dataset']!r}: the linear-probe experiments use 'fashion_mnist'")
        train, test = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
        index = torch.arange(len(train))
        if s["probe_pool"] < len(train):
            index = data.stratified_indices(train.y, s["probe_pool"], seed)
        z_train, z_test, explained = whitened_pcs(train.x[index], test.x, s["n_pcs"])
        return {"x": z_train, "y": train.y[index], "index": index, "test_x": z_test, "test_y": test.y,
                "explained": explained, "classes": list(train.classes)}

    key = {k: s[k] for k in ("dataset", "probe_pool", "n_pcs")}
    return cache.cached("08_data_pruning/pcs", {**key, "seed": seed}, compute)


def teacher_task(feats: dict, s: dict, seed: int = 0) -> dict:
    """The realizable version of the probe's task, the perceptron theory's setting on real images: a *teacher*
    probe ``W*`` is fitted to convergence on every training image with its real label (``s['l2']``), and each
    training and test image is relabelled ``y* = argmax_c (W*^T [x, 1])_c``. A student probe of the same form can
    then fit the labels exactly, as the theory's student can fit its teacher. Returns ``feats`` with ``y`` and
    ``test_y`` replaced, plus ``agreement`` (the fraction of training images whose teacher label is the real
    one) and ``teacher`` (``W*``); cached."""
    def compute():
        num_classes = len(feats["classes"])
        w = fit_probe(feats["x"][None], feats["y"][None], num_classes, l2=s["l2"], tol=s["tol"],
                      max_iter=s["max_iter"])[0]
        y = (_with_bias(feats["x"].float()) @ w).argmax(-1)
        test_y = (_with_bias(feats["test_x"].float()) @ w).argmax(-1)
        return {**feats, "y": y, "test_y": test_y, "teacher": w,
                "agreement": float((y == feats["y"]).double().mean())}

    key = {k: s[k] for k in ("dataset", "probe_pool", "n_pcs", "l2", "tol", "max_iter")}
    return cache.cached("08_data_pruning/teacher_task", {**key, "seed": seed}, compute)


def probe_scores(feats: dict, s: dict, seed: int) -> dict[str, torch.Tensor]:
    """:func:`early_probe_scores` of every training example for one seed; cached."""
    key = {k: s[k] for k in PROBE_KEYS}
    return cache.cached("08_data_pruning/probe_scores", {**key, "seed": seed}, lambda: early_probe_scores(
        feats["x"], feats["y"], len(feats["classes"]), runs=s["score_runs"], epochs=s["score_epochs"],
        score_epoch=s["score_epoch"], batch_size=s["score_batch"], lr=s["score_lr"], seed=seed))


def probe_runs(feats: dict, s: dict, *, n0: int, frac: float, keep: str, metric: str,
               scores: Sequence[torch.Tensor], seeds: Sequence[int], groups: Sequence[torch.Tensor] | None = None,
               balance: str = "class") -> dict[str, list]:
    """Prune, fit the probe to convergence, test: one value per seed; cached.

    Seed ``seeds[i]`` draws its original dataset of ``n0`` examples, prunes it by ``scores[i]`` (that seed's
    scores) within ``groups[i]`` (classes when ``None``) and fits a probe on what is kept. ``metric`` and
    ``balance`` name the score and the grouping in the cache key (a random keep ignores both and balances
    classes). Seeds whose kept sets have the same size are fitted together."""
    key = {**{k: s[k] for k in PROBE_KEYS}, "n0": n0, "frac": frac, "keep": keep, "seeds": list(seeds),
           "metric": "none" if keep == "random" else metric, "balance": "class" if keep == "random" else balance}
    y, num_classes = feats["y"], len(feats["classes"])

    def compute():
        idx = [pruned_indices(y, scores[i], n0, frac, keep, seed,
                              None if keep == "random" or groups is None else groups[i])
               for i, seed in enumerate(seeds)]
        error = [0.0] * len(seeds)
        for size in sorted({len(i) for i in idx}):
            which = [j for j, i in enumerate(idx) if len(i) == size]
            sel = torch.stack([idx[j] for j in which])
            w = fit_probe(feats["x"][sel], y[sel], num_classes, l2=s["l2"], tol=s["tol"], max_iter=s["max_iter"])
            for j, e in zip(which, probe_error(w, feats["test_x"], feats["test_y"]).tolist()):
                error[j] = e
        return {"error": error, "n": [len(i) for i in idx],
                "min_ratio": [class_balance(y, i, num_classes)["min_ratio"] for i in idx]}

    return cache.cached("08_data_pruning/probe_run", key, compute)
