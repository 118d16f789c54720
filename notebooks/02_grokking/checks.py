"""The 02_grokking lab's checks (``exercises.ipynb``): each exercise's function against ``grokking.py``, the code the
series runs, on fresh random cases from a seed; the integration exercise prunes lab-sized trained networks with the
student's function in the pruning pipeline of notebooks 02-03. ``course.check("02.1", fn)`` imports this file (with
this folder on ``sys.path``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import grokking as gk
import numpy as np
import torch
from prunebook import claims, config, course
from prunebook.course import exercise

# ---------------------------------------------------------------- 02.1 · the IPR of a neuron


def _weights_case(g) -> dict[str, torch.Tensor]:
    """Stacked weights (B, N, p), (B, N, p), (B, p, N) in float64: rows that are Gaussian, pure cosines (one Fourier
    mode, some with noise) or one-hot, so that IPRs span [0.02, 1] and the conventions give different numbers."""
    b, n, p = course.randint(g, 1, 3), course.randint(g, 2, 12), course.randint(g, 5, 31)
    if p == n:  # W's rows and columns then have the same length: keep them apart so a mix-up is seen
        p += 1
    out = {}
    for key, shape in (("U", (b, n, p)), ("V", (b, n, p)), ("W", (b, p, n))):
        w = torch.randn(shape, generator=g, dtype=torch.float64)
        vectors = w if key != "W" else w.transpose(1, 2)  # (B, N, p): one vector per neuron
        kind = torch.randint(0, 4, (b, n), generator=g)  # 0 Gaussian, 1 cosine, 2 cosine + noise, 3 one-hot
        i = torch.arange(p, dtype=torch.float64)
        for bi in range(b):
            for k in range(n):
                freq = course.randint(g, 1, (p - 1) // 2)
                cos = course.uniform(g, 0.2, 3.0) * torch.cos(2 * math.pi * freq * i / p + course.uniform(g, -3, 3))
                if kind[bi, k] == 1:
                    vectors[bi, k] = cos
                elif kind[bi, k] == 2:
                    vectors[bi, k] = cos + 0.3 * vectors[bi, k]
                elif kind[bi, k] == 3:
                    vectors[bi, k] = 0
                    vectors[bi, k, course.randint(g, 0, p - 1)] = course.uniform(g, 0.5, 2.0)
        out[key] = w
    return out


def _shapes(params: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in params.items())


@exercise("02.1", "neuron_ipr", points=2)
def _check_neuron_ipr(student, g) -> int:
    """Goal: the inverse participation ratio of a neuron's weights in Fourier space (Eqs. 3-4), with the official code's
    rfft

    Hint: notebook 01, section 3 (Eqs. 3-4): for each weight vector of length p take c = torch.fft.rfft (the one-sided
    transform of the official code, not the full FFT), IPR = Σ|c_j|⁴ / (Σ|c_j|²)²; a neuron's vectors are row k of U,
    row k of V and column k of W (not row k of W); IPR_k is the mean of the three
    """
    n = 0
    for _ in range(12):
        params = _weights_case(g)
        b, width, p = params["U"].shape
        case = f"neuron_ipr(weights {_shapes(params)})"
        kept = {k: v.clone() for k, v in params.items()}
        got = course.call(student, case, {k: v.clone() for k, v in params.items()})
        n += 1
        assert isinstance(got, torch.Tensor), f"{case}: return a tensor, not a {type(got).__name__}"
        got = got.detach().to(torch.float64)
        assert tuple(got.shape) == (b, width), (f"{case}: shape {tuple(got.shape)}, not (B, N) = {(b, width)}: one IPR "
                                                "per model and neuron")
        assert all(torch.equal(v, kept[k]) for k, v in params.items()), f"{case} changed the weights"
        want = gk.neuron_ipr(params)
        if course.rel_error(got, want) > 1e-5:
            _, parts = gk.neuron_ipr(params, parts=True)
            full = (gk.ipr(params["U"], full_fft=True) + gk.ipr(params["V"], full_fft=True)
                    + gk.ipr(params["W"], dim=-2, full_fft=True)) / 3
            why = ""
            if course.rel_error(got, full) < 1e-5:
                why = " (this is the full FFT's IPR: a cosine then scores 1/2; the series follows the code's rfft)"
            elif course.rel_error(got, parts["U"]) < 1e-5:
                why = " (this is U's IPR alone: average the three vectors)"
            k = int((got - want).abs().flatten().argmax())
            raise AssertionError(f"{case}: model {k // width}, neuron {k % width}: IPR {got.flatten()[k]:.6f}, the "
                                 f"series' {want.flatten()[k]:.6f} (relative error "
                                 f"{course.rel_error(got, want):.2g}){why}")
    return n


# ---------------------------------------------------------------- 02.2 · accuracy on the corrupted and clean labels


def _mixed_network(g, p: int, width: int) -> dict[str, torch.Tensor]:
    """A network (B = 1, float64) that is partly the periodic solution of Eq. 2 and partly random neurons, so that
    it answers the true sum on many pairs but not all."""
    n_per = course.randint(g, 0, width)
    per = gk.analytic_params(p, max(n_per, 1), seed=course.randint(g, 0, 10_000))
    rnd = gk.init_params([course.randint(g, 0, 10_000)], p, width - n_per + 1)
    noise = course.uniform(g, 0.0, 8.0)  # from none to random neurons that drown the periodic ones
    out = {}
    for k in ("U", "V", "W"):
        axis = 2 if k == "W" else 1
        a, r = per[k].double(), rnd[k].double() * noise
        if n_per == 0:
            a = a[:, :, :0] if k == "W" else a[:, :0]
        out[k] = torch.cat([a, r], dim=axis)
    return out


@exercise("02.2", "subset_accuracies", points=2)
def _check_subset_accuracies(student, g) -> int:
    """Goal: what 'train', 'test', 'corrupted' and 'clean' accuracy mean: f = W(U e_m + V e_n)², scored on the labels
    each subset was given

    Hint: notebook 01, section 2 (Eq. 1) and notebook 02, section 1: the prediction for the pair (m, n) is the argmax
    over q of f_q = Σ_k W_qk (U_km + V_kn)²; 'train' (positions :n_train) and 'corrupted' (:n_noise) are scored on
    task.labels, the labels the network was given, random where corrupted; 'clean' is n_noise:n_train and 'test'
    n_train: (task.subset(name) gives these slices)
    """
    n = 0
    for _ in range(10):
        p = (7, 11, 13, 17, 19, 23)[course.randint(g, 0, 5)]
        width = course.randint(g, 8, 48)
        alpha, xi = round(course.uniform(g, 0.3, 0.7), 2), round(course.uniform(g, 0.1, 0.6), 2)
        task = gk.modular_task(p, alpha, xi, seed=course.randint(g, 0, 1000))
        params = _mixed_network(g, p, width)
        case = (f"subset_accuracies(a network of width {params['U'].shape[1]}, task p={p}, alpha={alpha}, xi={xi}: "
                f"{task.n_train} training pairs, {task.n_noise} corrupted)")
        kept = {k: v.clone() for k, v in params.items()}
        got = course.call(student, case, params, task)
        n += 1
        assert all(torch.equal(v, kept[k]) for k, v in params.items()), f"{case} changed the weights"
        assert isinstance(got, dict) and set(gk.SUBSETS) <= set(got), \
            f"{case}: return a dict with the keys {', '.join(gk.SUBSETS)}"
        want = {k: float(v[0]) for k, v in gk.evaluate(params, [task]).items()}
        sizes = {k: len(range(task.p ** 2)[task.subset(k)]) for k in gk.SUBSETS}
        for k in gk.SUBSETS:
            right, want_right = round(float(got[k]) * sizes[k]), round(want[k] * sizes[k])
            if right != want_right or abs(float(got[k]) - want[k]) > 1e-6:
                why = _accuracy_mistake(params, task, {j: float(got[j]) for j in gk.SUBSETS})
                raise AssertionError(f"{case}: {k} accuracy {float(got[k]):.4f} ({right} of {sizes[k]} pairs), the "
                                     f"series' {want[k]:.4f} ({want_right} of {sizes[k]}){why}")
    return n


def _accuracy_mistake(params, task, got: dict[str, float]) -> str:
    """A reason for wrong accuracies, when a common mistake explains all four."""
    m, n_ = task.pairs[:, 0], task.pairs[:, 1]
    h = params["U"][0][:, m] + params["V"][0][:, n_]
    squared, linear = (params["W"][0] @ (h * h)).argmax(0), (params["W"][0] @ h).argmax(0)
    for pred, labels, why in ((squared, task.true_labels, "scored on the true sums: the series scores the labels "
                               "the network was given, random where corrupted"),
                              (linear, task.labels, "no square: phi(x) = x² in Eq. 1")):
        if all(abs(float((pred[task.subset(k)] == labels[task.subset(k)]).double().mean()) - got[k]) < 1e-9
               for k in gk.SUBSETS):
            return f" ({why})"
    return ""


# ---------------------------------------------------------------- 02.3 · pruning the memorizing neurons


def reference_prune(params: dict[str, torch.Tensor], fraction: float, lowest_first: bool = True
                    ) -> dict[str, torch.Tensor]:
    """The series' pruning of one network (notebook 03): rank the neurons by ``gk.neuron_ipr``, lowest first (or its
    reverse), and remove the first ``round(fraction * N)`` with ``gk.prune_neurons``."""
    order = torch.argsort(gk.neuron_ipr(params)[0])
    if not lowest_first:
        order = order.flip(0)
    return gk.prune_neurons(params, order[:int(round(fraction * params["W"].shape[-1]))])


def _inputs_off(w: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) True where neuron k's rows of U and V are zero."""
    return (w["U"][0] == 0).all(1) & (w["V"][0] == 0).all(1)


def _removed(w: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,) True where neuron k is removed: its rows of U and V and its column of W all zero."""
    return _inputs_off(w) & (w["W"][0] == 0).all(0)


def _prune_case(g) -> tuple[dict[str, torch.Tensor], float, bool]:
    params = _weights_case(g)
    # one network, as the series prunes; a little noise so that no two neurons tie in IPR (pure cosines all score 1)
    params = {k: v[:1] + 1e-3 * torch.randn(v[:1].shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    width = params["U"].shape[1]
    k = course.randint(g, 0, width - 1)
    # fractions whose count f·N has a fractional part above one half half of the time (round and floor differ)
    frac = course.uniform(g, 0.55, 0.95) if course.randint(g, 0, 1) else course.uniform(g, 0.05, 0.45)
    return params, min(1.0, (k + frac) / width), course.randint(g, 0, 2) > 0


@exercise("02.3", "prune_by_ipr", points=3)
def _check_prune_by_ipr(student, g) -> int:
    """Goal: pruning by the memorizing-neuron score: remove the round(f·N) lowest-IPR (or highest-IPR) neurons, and that
    this one function in the series' pruning pipeline gives the reference run's claims table

    Hint: notebook 03, section 2: rank the N neurons by IPR_k (your neuron_ipr, 02.1), lowest first (highest first when
    lowest_first is False); remove the first round(f·N) (round, not floor) by setting row k of U and of V and column k
    of W (W is (B, p, N)) to 0, on a copy. It calls your neuron_ipr: 02.1 must pass first
    """
    n = 0
    for _ in range(16):
        params, fraction, lowest = _prune_case(g)
        width = params["U"].shape[1]
        case = f"prune_by_ipr(weights {_shapes(params)}, fraction={fraction:.4f}, lowest_first={lowest})"
        kept = {k: v.clone() for k, v in params.items()}
        got = course.call(student, case, params, fraction, lowest)
        n += 1
        assert all(torch.equal(v, kept[k]) for k, v in params.items()), \
            f"{case} changed the weights it was given: prune a copy"
        assert isinstance(got, dict) and {"U", "V", "W"} <= set(got), f"{case}: return a dict of U, V and W"
        assert all(tuple(got[k].shape) == tuple(params[k].shape) for k in ("U", "V", "W")), \
            f"{case}: shapes {_shapes({k: got[k] for k in ('U', 'V', 'W')})}, not {_shapes(params)}"
        want = reference_prune(params, fraction, lowest)
        count, want_count = int(_inputs_off(got).sum()), int(round(fraction * width))
        if count != want_count:
            raise AssertionError(f"{case}: {count} neurons removed (their U and V rows zero), but "
                                 f"round({fraction:.4f}·{width}) = {want_count} are wanted"
                                 + (" (floor, not round)" if count == int(fraction * width) else ""))
        if not torch.equal(_removed(got), _inputs_off(got)):
            half = torch.nonzero(_inputs_off(got) & ~_removed(got)).flatten().tolist()
            raise AssertionError(f"{case}: neurons {half} "
                                 f"have zero U and V rows but not a zero column of W (W is (B, p, N): neuron k "
                                 f"writes through column k)")
        for k in ("U", "V", "W"):
            if not torch.equal(got[k].to(want[k].dtype), want[k]):
                ipr = gk.neuron_ipr(params)[0]
                removed = torch.nonzero(_removed(got)).flatten().tolist()
                wanted = torch.nonzero(_removed(want)).flatten().tolist()
                raise AssertionError(f"{case}: {k} differs from the series'; you removed neurons {removed}, the series "
                                     f"{wanted} (their IPRs: {[round(float(ipr[i]), 4) for i in wanted]}; the IPRs of "
                                     f"yours: {[round(float(ipr[i]), 4) for i in removed]})")
    # the integration: lab-sized networks pruned in the series' pipeline with the student's function
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    nets, tasks = lab_networks(LAB_RUN, seeds)
    reference = lab_curves(None, nets, tasks, LAB_RUN)
    mine = lab_curves(student, nets, tasks, LAB_RUN)
    for s in seeds:
        for order, by_fraction in reference[s].items():
            for f, want in by_fraction.items():
                for k in gk.SUBSETS:
                    assert mine[s][order][f][k] == want[k], (
                        f"the pruning pipeline (p = {LAB_RUN['p']}, width {LAB_RUN['width']}, {LAB_RUN['steps']} "
                        f"steps, seed {s}) with your prune_by_ipr, {order}, {f:.0%} pruned: {k} accuracy "
                        f"{mine[s][order][f][k]:.4f}, the reference run gives {want[k]:.4f}")
    course.same_claims_table(lab_claims(mine, LAB_RUN), lab_claims(reference, LAB_RUN), "your prune_by_ipr")
    return n + len(seeds)


# The check's own size: the coexistence setting of notebooks 02-03 (alpha 0.5, xi 0.35, wd 0) at p = 59 and width 128,
# where 300 steps already give a network that fits most corrupted labels and generalizes in part (2 s a network).
LAB_RUN = {"p": 59, "width": 128, "alpha": 0.5, "xi": 0.35, "weight_decay": 0.0, "steps": 300,
           "fractions": (0.0, 0.3, 0.6)}
# Notebook 03's THRESHOLDS (Fig. 6), so the lab's table has that notebook's shape.
THRESHOLDS = {"low60_test": 0.95, "low60_corrupted": 0.10, "high30_test": 0.10, "high30_corrupted": 0.90}
ORDERS = {"lowest IPR first": True, "highest IPR first": False}


def lab_networks(run: dict, seeds: Sequence[int], device: str = "cpu"
                 ) -> tuple[dict[int, dict[str, torch.Tensor]], dict[int, gk.ModularTask]]:
    """The trained networks of ``gk.regimes`` (notebooks 02-03: one corrupted task per seed, at one weight decay),
    one per seed, with their tasks."""
    trained = gk.regimes(run["p"], run["width"], run["alpha"], run["xi"], [run["weight_decay"]], run["steps"],
                         list(seeds), log_every=run["steps"], device=device)
    nets = {s: trained.model(i) for i, s in enumerate(seeds)}
    tasks = {s: gk.modular_task(run["p"], run["alpha"], run["xi"], seed=s) for s in seeds}
    return nets, tasks


def lab_curves(prune: Callable | None, nets: dict, tasks: dict, run: dict) -> dict[int, dict[str, dict]]:
    """seed → order → pruned fraction → the four accuracies (``gk.evaluate``) of the network pruned by ``prune(params,
    fraction, lowest_first)`` (the series' :func:`reference_prune` when None); no retraining, as in Fig. 6."""
    prune = prune or reference_prune
    out: dict[int, dict[str, dict]] = {}
    for s, net in nets.items():
        out[s] = {}
        for order, lowest in ORDERS.items():
            out[s][order] = {}
            for f in run["fractions"]:
                pruned = prune({k: v.clone() for k, v in net.items()}, f, lowest)
                acc = gk.evaluate({k: torch.as_tensor(pruned[k]).to(net[k].dtype) for k in ("U", "V", "W")},
                                  [tasks[s]])
                out[s][order][f] = {k: float(v[0]) for k, v in acc.items()}
    return out


def lab_claims(curves: dict[int, dict[str, dict]], run: dict = LAB_RUN, name: str = "lab-02.3"):
    """The claims table of a lab-sized run, in the shape of notebook 03's: Fig. 6's two pruning orders and the
    abstract's gain in test accuracy, at a size that cannot test them."""
    seeds = sorted(curves)
    T = THRESHOLDS

    def at(order: str, fraction: float, subset: str) -> np.ndarray:
        return np.array([curves[s][order][fraction][subset] for s in seeds])

    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    small = (f"a lab-sized run (p = {run['p']}, width {run['width']}, {run['steps']} steps, {len(seeds)} seeds) is not "
             "the paper's setting (p = 97, width 500); notebook 03 tests the claim there")
    low_test, low_corr = at("lowest IPR first", 0.6, "test"), at("lowest IPR first", 0.6, "corrupted")
    book.add("prune-low-60", "removing the 60 % lowest-IPR neurons keeps test >= 0.95 and drops the corrupted subset "
             "to <= 0.10", "Fig. 6a", paper="corrupted about 0 % by 0.6, test about 97-100 %", kind="paper",
             decision=claims.all_of(claims.exceeds(low_test, threshold=T["low60_test"], digits=3),
                                    claims.exceeds(low_corr, threshold=T["low60_corrupted"], side="<", digits=3)),
             faithful=False, unfaithful_because=small)
    high_test, high_corr = at("highest IPR first", 0.3, "test"), at("highest IPR first", 0.3, "corrupted")
    book.add("prune-high-30", "removing the 30 % highest-IPR neurons drops test to <= 0.10 while the corrupted subset "
             "stays >= 0.90", "Fig. 6b", paper="test about 0 by 0.3, corrupted about 97 %", kind="paper",
             decision=claims.all_of(claims.exceeds(high_test, threshold=T["high30_test"], side="<", digits=3),
                                    claims.exceeds(high_corr, threshold=T["high30_corrupted"], digits=3)),
             faithful=False, unfaithful_because=small)
    book.add("prune-low-forgets", "removing the 60 % lowest-IPR neurons lowers the corrupted subset's accuracy more "
             "than the clean subset's", "abstract (ii)", paper="memorization removed, generalization kept",
             kind="paper", decision=claims.paired(at("lowest IPR first", 0.0, "corrupted") - low_corr,
                                                  at("lowest IPR first", 0.0, "clean")
                                                  - at("lowest IPR first", 0.6, "clean"),
                                                  side=">", scale=100, digits=1, unit=" points"),
             faithful=False, unfaithful_because=small)
    return book.table()


# ---------------------------------------------------------------- 02.4 · predict, then run


def grokking_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment, on hand-built weights and the official split. Deterministic; each entry
    is one prediction.

    Goal: what the IPR measures and what it ignores, how many labels are corrupted, and what a network that answers the
    true sum scores on corrupted labels

    Hint: notebook 01, section 3 (the rfft convention, a one-hot vector's 1/49), notebook 02, section 1 (int(ξ·n_train),
    the 1/p chance hits) and Appendix C's rules (gk.classify_phase) explain them
    """
    p = gk.P
    i = torch.arange(p, dtype=torch.float64)
    cosine = torch.cos(2 * math.pi * 5 * i / p + 0.4)
    one_hot = torch.zeros(p, dtype=torch.float64)
    one_hot[3] = 1.0
    out: dict[str, Any] = {
        "ipr_of_a_cosine_rfft": round(float(gk.ipr(cosine)), 4),
        "ipr_of_a_cosine_full_fft": round(float(gk.ipr(cosine, full_fft=True)), 4),
        "ipr_of_a_one_hot_vector_rfft": round(float(gk.ipr(one_hot)), 4),
        "ipr_changes_when_the_weights_are_scaled_by_10": bool(abs(float(gk.ipr(10 * cosine) - gk.ipr(cosine)))
                                                              > 1e-12),
    }
    neuron = {"U": cosine.view(1, 1, p), "V": torch.roll(cosine, 7).view(1, 1, p), "W": one_hot.view(1, p, 1)}
    out["ipr_of_a_neuron_with_cosine_inputs_and_a_one_hot_output"] = round(float(gk.neuron_ipr(neuron)), 4)
    task = gk.modular_task(p, 0.5, 0.35, seed=0)
    out["corrupted_training_examples"] = task.n_noise
    # 150 neurons of the periodic solution (Eq. 2) beside 150 as initialised: a network that answers the true sum
    per, rnd = gk.analytic_params(p, 150, seed=0), gk.init_params([0], p, 150)
    net = {k: torch.cat([per[k], rnd[k]], dim=2 if k == "W" else 1) for k in ("U", "V", "W")}
    acc = {k: float(v[0]) for k, v in gk.evaluate(net, [task]).items()}
    out["test_accuracy"] = round(acc["test"], 4)
    out["train_accuracy_above_1_minus_xi"] = bool(acc["train"] > 1 - 0.35)
    out["phase"] = gk.classify_phase(acc["train"], acc["test"], 0.35)
    low = {k: float(v[0]) for k, v in gk.evaluate(reference_prune(net, 0.5, True), [task]).items()}
    high = {k: float(v[0]) for k, v in gk.evaluate(reference_prune(net, 0.5, False), [task]).items()}
    out["test_accuracy_after_removing_the_lowest_ipr_half"] = round(low["test"], 4)
    out["test_accuracy_after_removing_the_highest_ipr_half_below_0.1"] = bool(high["test"] < 0.1)
    return out


course.predictions_exercise("02.4", grokking_experiment)
