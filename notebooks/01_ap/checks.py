"""The 01_ap lab's checks (``exercises.ipynb``): each exercise's function against ``ap.py``, the code the series
runs, on fresh random cases from a seed; the integration exercise runs the series' pipeline with the student's
function patched in. ``course.check("01.2", fn)`` imports this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ap
import torch
from prunebook import claims, config, course, prune, train
from prunebook.course import exercise
from torch import nn
from torch.nn.utils import prune as torch_prune

# ---------------------------------------------------------------- 01.1 · the dead-neuron rate


def _random_network(g, conv: bool) -> tuple[nn.Module, torch.Tensor]:
    """A small MLP or BatchNorm CNN with shifted biases, so that some neurons (and some whole conv channels) are
    dead on some inputs and the layers' rates differ; left in train mode, as a network is after training."""
    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    if conv:
        c1, c2 = course.randint(g, 2, 6), course.randint(g, 3, 8)
        size = course.randint(g, 3, 6)
        model = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                              nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
                              nn.Flatten(), nn.Linear(c2 * size * size, 7), nn.ReLU(), nn.Linear(7, 3))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.data = torch.rand(n, generator=g) + 0.2
                m.bias.data = torch.rand(n, generator=g) * 3 - 2.5  # many channels mostly, some wholly, dead
                m.running_mean = torch.randn(n, generator=g) * 0.3
                m.running_var = torch.rand(n, generator=g) + 0.5
        x = torch.randn(course.randint(g, 3, 9), 1, size, size, generator=g)
    else:
        widths = [course.randint(g, 4, 12) for _ in range(course.randint(g, 2, 3))]
        layers, d = [], course.randint(g, 3, 8)
        x = torch.randn(course.randint(g, 4, 12), d, generator=g)
        for w in widths:
            layers += [nn.Linear(d, w), nn.ReLU()]
            d = w
        model = nn.Sequential(*layers, nn.Linear(d, 3))
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.bias.add_(course.uniform(g, -1.0, 0.3))
    return model.train(), x


@exercise("01.1", "dead_neuron_rate", points=2)
def _check_dead_neuron_rate(student, g) -> int:
    """Goal: the dead-neuron rate as the series measures it: per element and per channel, one global ratio

    Hint: notebook 01, section 1 (the DNR equation): hook every nn.ReLU, count zero outputs / all outputs summed over
    every ReLU and input (one global ratio, not a mean of layer rates); per channel, a conv channel is dead on an input
    when its whole map is zero; measure in eval mode and put the model back in the mode it was in
    """
    n = 0
    for i in range(8):
        model, x = _random_network(g, conv=bool(i % 2))
        case = f"dead_neuron_rate(network #{i + 1}: {_layers(model)}, x of shape {tuple(x.shape)})"
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            got = course.call(student, case, model, x)
        n += 1
        assert model.training, f"{case} left the model in eval mode; put it back in the mode it was in"
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), \
            f"{case} changed the model (BatchNorm's running statistics?): measure in eval mode"
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (element_rate, channel_rate)"
        want = ap.static_dnr(model, x)
        for label, value, ref in (("per element", got[0], want["dnr"]), ("per channel", got[1], want["dnr_channel"])):
            assert abs(float(value) - ref) < 1e-9, (f"{case}: the rate {label} is {float(value):.6f}, the series "
                                                    f"measures {ref:.6f}")
    return n


def _layers(model: nn.Module) -> str:
    def one(m: nn.Module) -> str:
        if isinstance(m, nn.Linear):
            return f"Linear({m.in_features}, {m.out_features})"
        if isinstance(m, nn.Conv2d):
            return f"Conv2d({m.in_channels}, {m.out_channels}, {m.kernel_size[0]})"
        return type(m).__name__

    return " → ".join(one(m) for m in model.children() if not isinstance(m, nn.Flatten))


# ---------------------------------------------------------------- 01.2 · AP's selection


class _Holder(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())


def reference_choice(weights: Sequence[torch.Tensor], start: Sequence[torch.Tensor], k: int) -> list[torch.Tensor]:
    """``ap.ap_select`` on plain tensors: AP's metric as the series runs it."""
    return ap.ap_select([(_Holder(w), "weight") for w in weights], list(start), k)


def _ap_case(g) -> tuple[list[torch.Tensor], list[torch.Tensor], int, bool]:
    """Weights of a few layers (some pruned to 0) and the round's start weights; ``tied``: values on a coarse grid,
    so that several candidates move by the same amount."""
    tied = course.randint(g, 0, 1) == 1
    shapes = [(course.randint(g, 2, 6), course.randint(g, 2, 6)) for _ in range(course.randint(g, 1, 3))]
    start = [torch.randn(s, generator=g) for s in shapes]
    weights = [w0 + 0.5 * torch.randn(s, generator=g) for w0, s in zip(start, shapes)]
    if tied:
        start = [(w * 4).round() / 4 for w in start]
        weights = [(w * 4).round() / 4 for w in weights]
    weights = [w * (torch.rand(w.shape, generator=g) > course.uniform(g, 0.0, 0.5)) for w in weights]  # pruned: 0
    candidates = sum(int((w < 0).sum()) for w in weights)
    return weights, start, course.randint(g, 0, candidates), tied


@exercise("01.2", "ap_choose", points=2)
def _check_ap_choose(student, g) -> int:
    """Goal: AP's pruning metric: the surviving negative weights that moved least, under one global ranking

    Hint: notebook 02, section 1 (the rule): candidates are the surviving (non-zero) weights with w < 0; score each by
    |w − w_start|; choose the k smallest under one ranking over all tensors together, ties by position (tensor order,
    then flat index: a stable sort)
    """
    n = 0
    for _ in range(16):
        weights, start, k, tied = _ap_case(g)
        kept = [w.clone() for w in weights], [s.clone() for s in start]
        shapes = [tuple(w.shape) for w in weights]
        case = (f"ap_choose(weights of shapes {shapes}, start, k={k})"
                + (" (several candidates moved by the same amount)" if tied else ""))
        if sum(w.numel() for w in weights) <= 12:
            case += f"; weights {[course.brief(w) for w in weights]}, start {[course.brief(s) for s in start]}"
        got = course.call(student, case, [w.clone() for w in weights], [s.clone() for s in start], k)
        n += 1
        assert all(torch.equal(a, b) for a, b in zip(weights + start, kept[0] + kept[1])), f"{case} changed its inputs"
        assert isinstance(got, (list, tuple)) and len(got) == len(weights), \
            f"{case}: return one bool tensor per weight tensor ({len(weights)})"
        got = [torch.as_tensor(c) for c in got]
        assert all(tuple(c.shape) == s for c, s in zip(got, shapes)), \
            f"{case}: shapes {[tuple(c.shape) for c in got]}, not {shapes}"
        got = [c.bool() for c in got]
        chosen = sum(int(c.sum()) for c in got)
        assert chosen == k, f"{case}: {chosen} weights chosen, not k = {k}"
        flat_w, flat_c = torch.cat([w.flatten() for w in weights]), torch.cat([c.flatten() for c in got])
        assert bool((flat_w[flat_c] < 0).all()), (
            f"{case}: a chosen weight is {'zero (already pruned)' if bool((flat_w[flat_c] == 0).any()) else 'positive'}"
            "; AP takes only surviving negative weights")
        want = reference_choice(weights, start, k)
        for j, (c, r) in enumerate(zip(got, want)):
            if not torch.equal(c, r):
                moved = [(w - s).abs() for w, s in zip(weights, start)]
                extra, missing = (c & ~r), (r & ~c)
                detail = ""
                if extra.any() and missing.any():
                    detail = (f" (it chose a weight that moved {float(moved[j][extra].min()):.4g} and left out one "
                              f"that moved {float(moved[j][missing].min()):.4g})")
                raise AssertionError(f"{case}: tensor {j}: not AP's choice{detail}; AP chooses "
                                     f"{[int(x.sum()) for x in want]} weights per tensor, you chose "
                                     f"{[int(x.sum()) for x in got]}")
    return n


# ---------------------------------------------------------------- 01.3 · one round of iterative magnitude pruning


def _pruned_network(weights: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> nn.Sequential:
    net = nn.Sequential(*(nn.Linear(w.shape[1], w.shape[0], bias=False) for w in weights))
    with torch.no_grad():
        for layer, w, m in zip(net, weights, masks):
            layer.weight.copy_(w)
            torch_prune.custom_from_mask(layer, "weight", m)
    return net


def reference_round(weights, masks, init, r: int, rate: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """What ``prune.iterative_magnitude_pruning`` does after round ``r``'s training: ``prune.global_magnitude`` to
    the round's target, then ``prune.rewind`` to the initialisation. Returns (masks, the weights the next round
    starts from)."""
    net = _pruned_network(weights, masks)
    prune.global_magnitude(net, 1 - (1 - rate) ** (r + 1))
    prune.rewind(net, {f"{i}.weight": w0 for i, w0 in enumerate(init)})
    return [layer.weight_mask.clone() for layer in net], [layer.weight.detach().clone() for layer in net]


def _round_case(g):
    shapes = [(course.randint(g, 3, 12), course.randint(g, 3, 12)) for _ in range(course.randint(g, 2, 3))]
    scale = [10 ** course.uniform(g, -1, 0.5) for _ in shapes]  # layers of different scales
    total = sum(a * b for a, b in shapes)
    r, rate = course.randint(g, 0, 5), (0.2, 0.2, 0.3, 0.1)[course.randint(g, 0, 3)]
    pruned = round((1 - (1 - rate) ** r) * total)  # the zeros the r rounds before this one left
    flat = torch.ones(total)
    flat[torch.randperm(total, generator=g)[:pruned]] = 0
    masks = [m.view(s) for m, s in zip(flat.split([a * b for a, b in shapes]), shapes)]
    init = [torch.randn(s, generator=g) * c for s, c in zip(shapes, scale)]
    weights = [(w0 + 0.5 * c * torch.randn(s, generator=g)) * m for w0, s, c, m in zip(init, shapes, scale, masks)]
    return weights, masks, init, r, rate


@exercise("01.3", "imp_round", points=2)
def _check_imp_round(student, g) -> int:
    """Goal: one round of iterative magnitude pruning with rewinding, as the series runs it

    Hint: notebook 01, section 2: after round r the sparsity is s = 1 − (1 − p)^(r+1) of all N weights, so k =
    round(s·N) weights are zero in all (those pruned before and the smallest surviving |w|), under one ranking over
    every layer; the survivors go back to their initial values, the pruned stay 0
    """
    n = 0
    for _ in range(16):
        weights, masks, init, r, rate = _round_case(g)
        shapes = [tuple(w.shape) for w in weights]
        total = sum(w.numel() for w in weights)
        zeros_before = sum(int((m == 0).sum()) for m in masks)
        case = (f"imp_round(weights of shapes {shapes} ({total} weights, {zeros_before} pruned before), masks, init, "
                f"r={r}, rate={rate})")
        got = course.call(student, case, [w.clone() for w in weights], [m.clone() for m in masks],
                          [w.clone() for w in init], r, rate)
        n += 1
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (masks, rewound weights)"
        new_masks, rewound = [list(x) for x in got]
        assert len(new_masks) == len(rewound) == len(weights), f"{case}: one mask and one weight per layer"
        assert all(tuple(m.shape) == s for m, s in zip(new_masks, shapes)), f"{case}: mask shapes differ from {shapes}"
        new_masks = [m.detach().float() for m in new_masks]
        assert all(bool(((m == 0) | (m == 1)).all()) for m in new_masks), f"{case}: a mask holds other than 0 and 1"
        want_masks, want_weights = reference_round(weights, masks, init, r, rate)
        target = 1 - (1 - rate) ** (r + 1)
        zeros = sum(int((m == 0).sum()) for m in new_masks)
        want_zeros = round(target * total)
        assert zeros == want_zeros, (
            f"{case}: {zeros} weights pruned in all, but round((1 − (1 − {rate})^{r + 1})·{total}) = {want_zeros} are "
            f"wanted ({want_zeros - zeros_before} more this round)")
        assert all(bool((m[old == 0] == 0).all()) for m, old in zip(new_masks, masks)), \
            f"{case}: a weight pruned before came back (the masks only ever lose ones)"
        for j, (m, wm) in enumerate(zip(new_masks, want_masks)):
            if not torch.equal(m, wm):
                per_layer = [f"{float((a == 0).float().mean()):.2f}" for a in new_masks]
                want_layer = [f"{float((a == 0).float().mean()):.2f}" for a in want_masks]
                raise AssertionError(f"{case}: layer {j}'s mask is not the global magnitude ranking's; sparsity per "
                                     f"layer {per_layer}, the series gets {want_layer}")
        for j, (w, ww) in enumerate(zip(rewound, want_weights)):
            w = torch.as_tensor(w).detach()
            assert tuple(w.shape) == shapes[j] and torch.allclose(w, ww, rtol=0, atol=1e-7), (
                f"{case}: layer {j}'s weights are not the survivors rewound to init (w0 ⊙ m): "
                + ("a pruned weight is not 0" if bool((w[want_masks[j] == 0] != 0).any()) else
                   "the trained values were kept" if torch.allclose(w, weights[j] * want_masks[j]) else
                   "other values"))
    return n


# ---------------------------------------------------------------- 01.4 · AP inside a round, in the series' pipeline

LAB_RUN = {"dataset": "fashion-mnist", "rate": 0.2, "lr": 0.05, "batch_size": 128, "n_train": 600, "n_test": 500,
           "epochs": 1, "rounds": 2, "dnr_images": 200, "model": "lenet", "method": "lth"}


def _step_cases(g) -> Iterator[tuple[str, Callable[[], nn.Module], dict[str, torch.Tensor], float, float]]:
    """Small MLPs partly pruned (``make()`` builds one afresh, the same each time), the round's start snapshot (its
    rewind point) and the round's target."""
    for i in range(6):
        init_seed, move_seed = course.randint(g, 0, 2**31 - 1), course.randint(g, 0, 2**31 - 1)
        d, h1, h2 = course.randint(g, 4, 10), course.randint(g, 6, 16), course.randint(g, 4, 10)
        r, p2 = course.randint(g, 0, 4), (0.02, 0.05, 0.1)[i % 3]

        def initial(d=d, h1=h1, h2=h2, init_seed=init_seed) -> nn.Module:
            torch.manual_seed(init_seed)
            return nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, 3))

        def make(r=r, move_seed=move_seed, initial=initial) -> nn.Module:
            net, moves = initial(), torch.Generator().manual_seed(move_seed)
            with torch.no_grad():
                for m in net.modules():
                    if isinstance(m, nn.Linear):  # "training" moved the weights
                        m.weight.add_(0.3 * torch.randn(m.weight.shape, generator=moves))
            if r:
                prune.global_magnitude(net, 1 - 0.8 ** r)
            return net

        net = make()
        yield (f"network #{i + 1} ({_layers(net)}), round r={r}, p2={p2}", make, prune.snapshot(initial()),
               1 - 0.8 ** (r + 1), p2)


@contextlib.contextmanager
def _fresh_cache() -> Iterator[None]:
    """Runs in a cache of their own (a patched function must not find the reference's rounds), removed after."""
    old = os.environ.get("PRUNEBOOK_CACHE")
    with tempfile.TemporaryDirectory(prefix="prunebook-lab-") as tmp:
        os.environ["PRUNEBOOK_CACHE"] = tmp
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PRUNEBOOK_CACHE", None)
            else:
                os.environ["PRUNEBOOK_CACHE"] = old


@contextlib.contextmanager
def patched_step(step: Callable | None) -> Iterator[None]:
    """The series' pipeline (``ap.imp_run``) with AP's round, ``ap.ap_step``, replaced by ``step(net, target,
    params, start, p2)``; nothing replaced when ``step`` is None."""
    if step is None:
        yield
        return
    original = ap.ap_step

    def factory(start, model, *, p2=0.02, rate=0.2, score="delta", negative_only=True, seed=0, **_):
        return lambda net, target, params: step(net, target, params, start, p2)

    ap.ap_step = factory
    try:
        yield
    finally:
        ap.ap_step = original


def lab_runs(step: Callable | None, run: dict, seeds: Sequence[int], data_root: str | None = None,
             x_rows: dict[int, list[dict]] | None = None) -> dict[str, dict[int, list[dict]]]:
    """The X and X+AP runs of the series' pipeline for ``seeds``, in a fresh cache, with ``step`` patched in as AP's
    round (the reference's when None). ``x_rows``: X's rows when already run (X does not use AP's round)."""
    out: dict[str, dict[int, list[dict]]] = {"X": dict(x_rows or {}), "X+AP": {}}
    with _fresh_cache(), patched_step(step):
        for seed in seeds:
            for arm in ("X", "X+AP"):
                if seed not in out[arm]:
                    out[arm][seed] = ap.imp_run({**run, "arm": arm, "seed": seed}, data_root=data_root,
                                                progress=False)
    return out


def lab_claims(runs: dict[str, dict[int, list[dict]]], run: dict = LAB_RUN, name: str = "lab-01.4"):
    """The claims table of a lab-sized run, in the shape of notebook 03's: both arms at the same sparsity (a
    check), and AP's effect on the dynamic DNR and on accuracy over the seeds (the paper's claims, at a size
    that cannot test them)."""
    seeds = sorted(runs["X"])
    x, a = [runs["X"][s] for s in seeds], [runs["X+AP"][s] for s in seeds]
    rounds = range(1, len(x[0]))
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    same = all(rx["sparsity"] == ra["sparsity"] for ox, oa in zip(x, a) for rx, ra in zip(ox, oa))
    book.add("same-sparsity", "both arms reach the same sparsity in every round", "ours", "equal",
             "equal in every round" if same else "differ", holds=same, kind="check")
    epochs = f"{run['epochs']} epoch{'s' * (run['epochs'] != 1)}"
    small = (f"a lab-sized run ({run['n_train']:,} images, {epochs} a training, {len(x[0]) - 1} rounds, "
             f"{len(seeds)} seeds) cannot test the paper's CIFAR-scale claims")
    book.add("ap-lowers-dnr", "AP lowers the dynamic DNR at every sparsity", "abstract", "lower with AP",
             decision=claims.all_of(*(claims.paired([o[r]["dnr"] for o in x], [o[r]["dnr"] for o in a], side=">",
                                                    scale=100, unit=" points") for r in rounds)),
             kind="paper", faithful=False, unfaithful_because=small)
    last = rounds[-1]
    book.add("ap-raises-accuracy", f"AP raises test accuracy at {x[0][last]['sparsity']:.1%}", "abstract",
             "+3 to +4 points", decision=claims.paired([o[last]["test_acc"] for o in a],
                                                      [o[last]["test_acc"] for o in x], side=">", scale=100,
                                                      unit=" points"),
             kind="paper", faithful=False, unfaithful_because=small)
    return book.table()


@exercise("01.4", "ap_prune_step", points=3)
def _check_ap_prune_step(student, g) -> int:
    """Goal: AP's share of a round's budget, and AP inside the series' pipeline: the same claims table

    Hint: notebook 02, section 1 and notebook 03, section 1: of the n weights alive before the round AP takes k =
    round(p2·n); the base method first brings the network to (round(target·N) − k)/N with prune.global_magnitude; then
    AP chooses k among the weights as they are now, scored from the round's start (ap.start_weight), and ap.prune_chosen
    removes them; the round ends at the target. It calls your ap_choose: 01.2 must pass first
    """
    n = 0
    for case, make, start, target, p2 in _step_cases(g):
        ours, theirs = make(), make()
        params = prune.prunable(ours)
        label = f"ap_prune_step({case}, target={target:.4f})"
        course.call(student, label, ours, target, params, start, p2)
        n += 1
        ap.ap_step(start, theirs, p2=p2)(theirs, target, prune.prunable(theirs))
        mine, want = prune.masks(ours), prune.masks(theirs)
        total = sum(m.numel() for m in want.values())
        zeros = sum(int((m == 0).sum()) for m in mine.values())
        assert zeros == round(target * total), (f"{label}: {zeros} of {total} weights pruned after the round, but the "
                                                f"target is round({target:.4f}·{total}) = {round(target * total)}")
        for key in want:
            assert key in mine and torch.equal(mine[key], want[key]), (
                f"{label}: the mask of {key} differs from the series' round (base method to the target minus AP's "
                f"k, then AP's choice)")
    # the integration: the series' pipeline with the student's round, against the reference's, on the same seeds
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    reference = lab_runs(None, LAB_RUN, seeds)
    student_runs = lab_runs(student, LAB_RUN, seeds, x_rows=reference["X"])
    for seed in seeds:
        for r, (mine, want) in enumerate(zip(student_runs["X+AP"][seed], reference["X+AP"][seed])):
            for key in ("sparsity", "test_acc", "dnr"):
                assert mine[key] == want[key], (
                    f"the pipeline (LeNet-300-100, {LAB_RUN['n_train']} images, seed {seed}) with your round: "
                    f"{key} = {mine[key]:.6f} after round {r}, the reference run gives {want[key]:.6f}")
    course.same_claims_table(lab_claims(student_runs), lab_claims(reference), "your round")
    return n + len(seeds)


# ---------------------------------------------------------------- 01.5 · predict, then run


def ap_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment: a 20-40-5 MLP with exactly 1,000 prunable weights, three rounds of 20 %
    magnitude pruning, then a fourth round with AP (p2 = 2 %). Deterministic; each entry is one prediction.

    Goal: how the schedule compounds, how a round's budget splits, and why AP's removals can only activate

    Hint: notebook 01, section 2 (1 − 0.8^r) and notebook 02, section 1 ('Why it activates') explain them
    """
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Linear(40, 5))  # 800 + 200 weights (biases not pruned)
    params = prune.prunable(net)
    start = prune.snapshot(net)
    g = torch.Generator().manual_seed(1)

    def train_a_little() -> None:  # stands in for a round's training: every surviving weight moves a little
        with torch.no_grad():
            for m, _ in params:
                dense = m.weight_orig if hasattr(m, "weight_orig") else m.weight
                dense.add_(0.05 * torch.randn(dense.shape, generator=g))
        train.refresh_masked_weights(net)

    for r in range(3):
        train_a_little()
        prune.global_magnitude(net, 1 - 0.8 ** (r + 1))
        prune.rewind(net, start)
    out: dict[str, Any] = {"zeros_after_3_rounds_of_20pct": ap.count_zeros(params)[0]}
    train_a_little()
    zeros, total = ap.count_zeros(params)
    k = round(0.02 * (total - zeros))
    goal = round((1 - 0.8 ** 4) * total)
    prune.global_magnitude(net, (goal - k) / total, params)
    out["removed_by_magnitude_in_round_4"] = ap.count_zeros(params)[0] - zeros
    x = torch.randn(500, 20, generator=g)  # standardised inputs: of either sign
    with torch.no_grad():
        z1_before = net[0](x)
        a1 = torch.relu(z1_before)  # layer 2's inputs, held fixed: non-negative
        z2_before = net[2](a1)
    chosen = ap.ap_select(params, [ap.start_weight(start, net, m, n) for m, n in params], k)
    out["removed_by_ap_in_round_4"] = sum(int(c.sum()) for c in chosen)
    w = torch.cat([getattr(m, n).detach().flatten() for m, n in params])
    out["positive_weights_ap_removes"] = int((w[torch.cat([c.flatten() for c in chosen])] > 0).sum())
    ap.prune_chosen(params, chosen)
    with torch.no_grad():
        out["layer1_preactivations_lowered"] = int((net[0](x) < z1_before).sum()) > 0
        out["layer2_preactivations_lowered"] = int((net[2](a1) < z2_before - 1e-6).sum())
    out["same_sparsity_as_without_ap"] = ap.count_zeros(params)[0] == goal
    return out


course.predictions_exercise("01.5", ap_experiment)
