"""The 07_rethinking lab's checks (``exercises.ipynb``): each exercise's function against ``rethinking.py`` (and the
``prunebook.prune`` functions it runs), on fresh random cases from a seed; the integration exercise runs the series'
slimming pipeline (notebook 02's: a sparse large VGG, pruned, fine-tuned and trained from scratch) with the student's
functions patched in. ``course.check("07.2", fn)`` imports this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import rethinking as R
import torch
from prunebook import claims, config, course, models, prune, train
from prunebook.course import exercise
from torch import nn

# ---------------------------------------------------------------- random small networks


def _vgg(g, depth: int | None = None, max_width: int = 12) -> tuple[nn.Module, dict[str, Any]]:
    """A freshly initialised VGG (depth 11 or 13) of random small widths, and its architecture spec."""
    depth = depth or (11, 13)[course.randint(g, 0, 1)]
    n_convs = sum(v != "M" for v in models.VGG_LAYERS[depth])
    widths = [course.randint(g, 2, max_width) for _ in range(n_convs)]
    arch = R.vgg_arch(depth, widths, "linear", course.randint(g, 1, 3), 10)
    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    return R.build(arch), arch


def _resnet(g) -> tuple[nn.Module, dict[str, Any]]:
    arch = R.resnet_arch(20, course.randint(g, 3, 6), in_channels=course.randint(g, 1, 3))
    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    return R.build(arch), arch


def _widths(arch: dict[str, Any]) -> list[int]:
    return arch["mids"] if arch["family"] == "resnet" else arch["widths"]


def _example(arch: dict[str, Any]) -> torch.Tensor:
    return torch.zeros(1, arch["in_channels"], 28, 28)


# ---------------------------------------------------------------- 07.1 · L1-norm filter pruning (Li et al.)


@torch.no_grad()
def _tie_filters(model: nn.Module, arch: dict[str, Any], g) -> None:
    """Give some filters of every prunable conv the exact L1 norm of another (a sign-flipped copy), so that the
    tie-break decides which one stays."""
    for conv in R.prunable_convs(model, arch):
        n = conv.out_channels
        for _ in range(course.randint(g, 1, max(1, n // 2))):
            i, j = course.randint(g, 0, n - 1), course.randint(g, 0, n - 1)
            if i != j:
                conv.weight[j] = -conv.weight[i]


@exercise("07.1", "l1_filters_kept", points=2)
def _check_l1_filters_kept(student, g) -> int:
    """Goal: Li et al.'s criterion: a filter's score is the sum of its absolute weights; the n largest stay

    Hint: notebook 01, 'The method' (s_j = Σ_l Σ_u,v |F_j(l, u, v)|): sum |w| over the input channels and the kernel of
    each output filter; keep the n_keep largest sums (ties: the lower index stays, a stable sort), and return their
    indices in increasing order
    """
    n = 0
    for i in range(10):
        model, arch = _resnet(g) if i % 3 == 2 else _vgg(g)
        tied = i % 2 == 1
        if tied:
            _tie_filters(model, arch, g)
        target = {**arch, ("mids" if arch["family"] == "resnet" else "widths"):
                  [course.randint(g, 1, w) for w in _widths(arch)]}
        want = R.filters_to_keep(model, arch, target)
        for j, (conv, idx) in enumerate(want.items()):
            n_keep = len(idx)
            case = (f"l1_filters_kept(conv #{j} of {R.describe(arch)}: {conv.out_channels} filters of "
                    f"{conv.in_channels}×{conv.kernel_size[0]}×{conv.kernel_size[1]}, n_keep={n_keep})"
                    + (" (some filters share an L1 norm)" if tied else ""))
            before = conv.weight.detach().clone()
            got = course.call(student, case, conv, n_keep)
            n += 1
            assert torch.equal(conv.weight.detach(), before), f"{case} changed the conv's weights"
            got = torch.as_tensor(got).long().flatten()
            assert len(got) == n_keep, f"{case}: {len(got)} indices returned, not n_keep = {n_keep}"
            if not torch.equal(got, idx.long()):
                norms = prune.filter_l1_norms(conv)
                why = ""
                if sorted(got.tolist()) == idx.tolist():
                    why = " (the right filters in another order: return them in increasing order)"
                elif set(got.tolist()) == set(norms.argsort()[:n_keep].tolist()):
                    why = " (these are the smallest: Li et al. remove those)"
                elif len(set(got.tolist()) ^ set(idx.tolist())) and tied:
                    why = " (on a tie of L1 norms the lower index stays)"
                raise AssertionError(f"{case}: kept {got.tolist()}, the series keeps {idx.tolist()}{why}; the "
                                     f"filters' L1 norms are {[round(v, 4) for v in norms.tolist()]}")
    return n


# ---------------------------------------------------------------- 07.2 · network slimming's global threshold


@torch.no_grad()
def _set_scales(model: nn.Module, g, ties: bool, signs: bool, starved: bool) -> None:
    """BN scales as after slimming's sparsity training: many near zero, some large; on a coarse grid when ``ties``
    (so that several channels sit at the threshold), some negative when ``signs``, and one layer with only tiny
    scales when ``starved`` (the threshold then takes all its channels)."""
    pairs = prune.conv_bn_pairs(model)
    for _, bn in pairs:
        n = bn.num_features
        gamma = torch.where(torch.rand(n, generator=g) < 0.5, 0.05 * torch.rand(n, generator=g),
                            0.2 + torch.rand(n, generator=g))
        if ties:
            gamma = (gamma * 10).round() / 10
        if signs:
            gamma = gamma * torch.where(torch.rand(n, generator=g) < 0.3, -1.0, 1.0)
        bn.weight.copy_(gamma)
    if starved:
        _, bn = pairs[course.randint(g, 0, len(pairs) - 1)]
        bn.weight.copy_(1e-4 * (1 + torch.rand(bn.num_features, generator=g)))


RATIOS = (0.0, 0.25, 0.3, 0.5, 0.5, 0.6, 0.7, 0.9)


@exercise("07.2", "slimming_kept", points=2)
def _check_slimming_kept(student, g) -> int:
    """Goal: network slimming's one global threshold on |γ| over every channel of the network, and the channels each
    layer keeps

    Hint: notebook 02, 'The method': pool |γ| of every BatchNorm after a conv (prune.conv_bn_pairs) into one list; the
    threshold is its round(ratio·N)-th smallest value (Python's round; none when that is 0); a channel stays when |γ| >
    threshold (strictly); a layer left with none keeps its largest |γ|. Return each layer's kept indices in increasing
    order
    """
    n = 0
    for i in range(16):
        model, arch = _vgg(g)
        ties, signs, starved = i % 4 == 1, i % 3 == 0, i % 4 == 2
        _set_scales(model, g, ties, signs, starved)
        ratio = RATIOS[course.randint(g, 0, len(RATIOS) - 1)]
        total = sum(bn.num_features for _, bn in prune.conv_bn_pairs(model))
        case = (f"slimming_kept({R.describe(arch)} ({total} channels), ratio={ratio})"
                + (" (|γ| on a grid of 0.1: ties at the threshold)" if ties else "")
                + (" (some γ < 0)" if signs else "") + (" (one layer's |γ| all tiny)" if starved else ""))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        got = course.call(student, case, model, ratio)
        n += 1
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), f"{case} changed the model"
        want = list(prune.slimming_keep(model, ratio).values())  # what R.slim_prune removes the others of
        assert isinstance(got, (list, tuple)) and len(got) == len(want), \
            f"{case}: return one tensor of kept indices per conv–BN pair ({len(want)})"
        got = [torch.as_tensor(x).long().flatten() for x in got]
        removed, want_removed = total - sum(len(x) for x in got), total - sum(len(x) for x in want)
        for j, (x, w) in enumerate(zip(got, want)):
            if not torch.equal(x, w):
                gamma = prune.conv_bn_pairs(model)[j][1].weight.detach()
                threshold = prune.slimming_threshold(model, ratio)
                raise AssertionError(
                    f"{case}: layer {j} keeps {x.tolist()}, the series keeps {w.tolist()} (|γ| > {threshold:.4g}, "
                    f"the round({ratio}·{total}) = {round(ratio * total)}-th smallest |γ| of the whole network); "
                    f"this layer's γ are {[round(v, 4) for v in gamma.tolist()]}; you remove {removed} channels in "
                    f"all, the series {want_removed}")
    return n


# ---------------------------------------------------------------- 07.3 · Scratch-B's budget


def _budget_case(g) -> tuple[int, int, int, float | None]:
    epochs = (8, 10, 20, 40, 160, 3)[course.randint(g, 0, 5)]
    small = course.randint(g, 1_000, 5_000_000)
    kind = course.randint(g, 0, 3)
    if kind == 0:  # the product is a whole number of epochs: floor and round agree, a float error would not
        num, den = course.randint(g, 2, 9), course.randint(g, 1, 4)
        small = den * course.randint(g, 1_000, 900_000)
        large = small * num // den
        epochs = den * course.randint(g, 1, 20)
    else:
        large = int(small * course.uniform(g, 1.01, 6.0))
    cap = (None, None, 2.0, 1.5)[course.randint(g, 0, 3)]
    return epochs, large, small, cap


@exercise("07.3", "scratch_b_epochs", points=1)
def _check_scratch_b_epochs(student, g) -> int:
    """Goal: Scratch-B's budget: the pruned model trains for as many epochs as the large model's computation buys

    Hint: notebook 01, 'The method': E_B = ⌊E · F_large / F_small⌋ (FLOPs per image; rounded down, as the official
    scripts do); cap, when given, limits the factor F_large / F_small (the paper's ImageNet rule caps it at 2), not the
    epochs; return an int
    """
    n = 0
    for _ in range(40):
        epochs, large, small, cap = _budget_case(g)
        case = f"scratch_b_epochs(epochs={epochs}, macs_large={large:,}, macs_small={small:,}, cap={cap})"
        got = course.call(student, case, epochs, large, small, cap)
        n += 1
        want = R.scratch_b_epochs(epochs, large, small, cap)
        assert isinstance(got, int) and not isinstance(got, bool), f"{case}: returned {got!r}; an int is wanted"
        assert got == want, (f"{case}: {got} epochs, the series gives {want} (E·F_large/F_small = "
                             f"{epochs * large / small:.4f}" + (f", the factor capped at {cap}" if cap else "") + ")")
    return n


# ---------------------------------------------------------------- 07.4 · slimming, then Scratch-B: the pipeline


def reference_slim_for_scratch(model: nn.Module, arch: dict[str, Any], ratio: float, epochs: int,
                               example: torch.Tensor) -> tuple[nn.Module, dict[str, Any], int]:
    """What notebook 02 does with a sparse large model: ``R.slim_prune`` in place, the architecture read back, and
    its Scratch-B epochs from the MACs (uncapped, as the paper's CIFAR runs)."""
    R.slim_prune(model, ratio, example)
    found = R.arch_of(model, arch)
    return model, found, R.scratch_b_epochs(epochs, R.macs(arch, example), R.macs(found, example))


def _sparse_vgg(g) -> tuple[nn.Module, dict[str, Any]]:
    model, arch = _vgg(g, max_width=10)
    _set_scales(model, g, ties=False, signs=course.randint(g, 0, 1) == 1, starved=course.randint(g, 0, 2) == 0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval(), arch


LAB_RUN = {"dataset": "fashion_mnist", "n_train": 256, "n_test": 500, "epochs": 2, "depth": 11, "width": 0.0625,
           "ratio": 0.5, "l1_bn": 6e-3, "batch_size": 64}


def _digest(model: nn.Module) -> str:
    """A short hash of a model's state: names, shapes and values (what a fine-tuning starts from)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_DATA: dict[tuple, R.Data] = {}


def _data(dataset: str, n_train: int, n_test: int, data_root: str | None) -> R.Data:
    """``R.load_data``, read once per process (the reference run and the student's share it)."""
    key = (dataset, n_train, n_test, data_root)
    if key not in _DATA:
        _DATA[key] = R.load_data(dataset, n_train, n_test, data_root)
    return _DATA[key]


def lab_runs(slim_fn: Callable | None, run: dict, seeds: Sequence[int], device: str = "cpu",
             data_root: str | None = None) -> dict[int, dict[str, Any]]:
    """Notebook 02's pipeline at a lab's size, per seed: the large VGG trained with slimming's penalty; ``slim_fn``
    (the reference's when None) prunes it and gives the architecture and the Scratch-B epochs; the pruned network
    fine-tuned for E epochs at 10⁻³; the architecture trained from scratch for E (Scratch-E) and E_B (Scratch-B)
    epochs. Every run goes through the series' cache, keyed by what it starts from (the fine-tuning by a hash of the
    pruned weights), so the same start is trained once."""
    slim_fn = slim_fn or reference_slim_for_scratch
    ds = _data(run["dataset"], run["n_train"], run["n_test"], data_root)
    x1 = ds.example
    base = R.vgg_arch(run["depth"], models.vgg_widths(run["depth"], run["width"]), "linear", ds.in_channels,
                      ds.num_classes)
    recipe = R.Recipe(epochs=run["epochs"], batch_size=run["batch_size"], crop_padding=0, flip=False)
    ft_recipe = recipe.but(lr=0.001, schedule="constant")
    out = {}
    for s in seeds:
        large = R.baseline(base, ds, recipe, s, device, l1_bn=run["l1_bn"], progress_bar=False)
        model = train.load_model_state(R.build(base), large["state"])
        pruned, found, b_epochs = slim_fn(model, base, run["ratio"], run["epochs"], x1)
        found = {**base, "widths": [int(w) for w in found["widths"]]}
        start = copy.deepcopy(pruned)
        how = {"slim": run["ratio"], "start": _digest(start)}  # the fine-tuning's start, named by its weights
        ft = R.finetune(R.parent_key(base, recipe, s, run["l1_bn"]), large["state"], how,
                        lambda _, start=start: copy.deepcopy(start), ds, ft_recipe, s, device, progress_bar=False)
        scratch_e = R.scratch(found, ds, recipe, s, device, progress_bar=False)
        scratch_b = R.scratch(found, ds, recipe.but(epochs=int(b_epochs)), s, device, progress_bar=False)
        out[s] = {"large": large["acc"], "fine-tuned": ft["acc"], "Scratch-E": scratch_e["acc"],
                  "Scratch-B": scratch_b["acc"], "b_epochs": int(b_epochs), "widths": found["widths"],
                  "params": R.params(found), "params_large": R.params(base)}
    return out


def lab_claims(runs: dict[int, dict[str, Any]], run: dict = LAB_RUN, name: str = "lab-07.4"):
    """The claims table of a lab-sized run, in the shape of notebook 02's: Scratch-B against the fine-tuned network
    (the paper's Table 4 claim, at a size that cannot test it), Scratch-B against Scratch-E (a control), and the
    pruned network really smaller (a check)."""
    seeds = sorted(runs)
    acc = {m: [runs[s][m] for s in seeds] for m in ("fine-tuned", "Scratch-E", "Scratch-B")}
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    epochs = f"{run['epochs']} epoch{'s' * (run['epochs'] != 1)}"
    small = (f"a lab-sized run ({run['n_train']} images, {epochs}, {len(seeds)} seeds) cannot test a claim about "
             "VGG-19 trained for 160 epochs on CIFAR")
    margin = R.NONINFERIORITY_MARGIN
    book.add("slim-scratch-b-vs-finetune", f"slimming {run['ratio']:.0%}: Scratch-B is at least as accurate as "
             "fine-tuning", "Table 4", "Scratch-B ≥ fine-tuned",
             decision=claims.paired(acc["Scratch-B"], acc["fine-tuned"], side=">", margin=-margin, scale=100,
                                    unit=" points"),
             kind="paper", faithful=False, unfaithful_because=small)
    book.add("scratch-b-vs-scratch-e", "Scratch-B's longer training beats Scratch-E", "ours", "above",
             decision=claims.paired(acc["Scratch-B"], acc["Scratch-E"], side=">", scale=100, unit=" points"),
             kind="control")
    shrinks = all(runs[s]["params"] < runs[s]["params_large"] for s in seeds)
    book.add("really-smaller", "the slimmed network has fewer parameters than the large one", "ours", "fewer",
             ", ".join(f"{runs[s]['params']:,} of {runs[s]['params_large']:,}" for s in seeds), holds=shrinks,
             kind="check")
    budgets = ", ".join(str(runs[s]["b_epochs"]) for s in seeds)
    book.add("budget", f"Scratch-B trains longer than E = {run['epochs']}", "ours", f"> {run['epochs']}", budgets,
             holds=all(runs[s]["b_epochs"] > run["epochs"] for s in seeds), kind="check")
    return book.table()


@exercise("07.4", "slim_for_scratch", points=3)
def _check_slim_for_scratch(student, g) -> int:
    """Goal: what network slimming hands on: a pruned network with inherited weights (to fine-tune), an architecture and
    a budget (to train from scratch); and that they give the series' claims table

    Hint: notebook 02, 'The architectures slimming finds': remove the channels your slimming_kept finds, for real and in
    place (prune.remove_channels needs a dict conv → kept indices, in the order of prune.conv_bn_pairs); the
    architecture is the large one's spec with the pruned model's conv widths (prune.conv_widths); Scratch-B's epochs
    come from your scratch_b_epochs on the MACs of both architectures (R.macs, no cap). It calls your slimming_kept and
    scratch_b_epochs: 07.2 and 07.3 must pass first
    """
    n = 0
    for _ in range(6):
        model, arch = _sparse_vgg(g)
        ratio, epochs = (0.3, 0.5, 0.7)[course.randint(g, 0, 2)], (8, 10, 40)[course.randint(g, 0, 2)]
        x1 = torch.randn(2, arch["in_channels"], 28, 28, generator=g)
        theirs = copy.deepcopy(model)
        case = f"slim_for_scratch({R.describe(arch)}, ratio={ratio}, epochs={epochs})"
        got = course.call(student, case, model, arch, ratio, epochs, x1[:1])
        n += 1
        assert isinstance(got, (tuple, list)) and len(got) == 3, f"{case}: return (pruned model, arch, epochs)"
        pruned, found, b_epochs = got
        w_model, w_arch, w_epochs = reference_slim_for_scratch(theirs, arch, ratio, epochs, x1[:1])
        assert isinstance(found, dict) and found.get("widths") == w_arch["widths"], (
            f"{case}: the architecture's widths are {found.get('widths') if isinstance(found, dict) else found}, "
            f"the series finds {w_arch['widths']} (large: {arch['widths']})")
        assert {k: v for k, v in found.items() if k != "widths"} == {k: v for k, v in arch.items() if k != "widths"}, \
            f"{case}: the architecture spec must be the large one's with other widths: {found}"
        assert isinstance(pruned, nn.Module) and prune.conv_widths(pruned) == w_arch["widths"], \
            f"{case}: the pruned model's conv widths are not the architecture's {w_arch['widths']}"
        assert prune.count_parameters(pruned) == R.params(w_arch), \
            f"{case}: the pruned model has {prune.count_parameters(pruned):,} parameters, the architecture " \
            f"{R.params(w_arch):,}: remove the channels for real"
        pruned.eval()
        with torch.no_grad():
            same = torch.allclose(pruned(x1), w_model.eval()(x1), rtol=1e-4, atol=1e-5)
        assert same, (f"{case}: the pruned model computes other outputs than the series' slimmed one: it must keep "
                      "the large model's surviving weights (fine-tuning inherits them), not a fresh initialisation")
        assert b_epochs == w_epochs and isinstance(b_epochs, int), (
            f"{case}: Scratch-B gets {b_epochs!r} epochs, the series {w_epochs} (the MACs fall from "
            f"{R.macs(arch, x1[:1]):,} to {R.macs(w_arch, x1[:1]):,})")
    # the integration: notebook 02's pipeline with the student's step, against the reference's, on the same seeds
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    reference = lab_runs(None, LAB_RUN, seeds)
    mine = lab_runs(student, LAB_RUN, seeds)
    for s in seeds:
        for key in ("widths", "b_epochs", "fine-tuned", "Scratch-E", "Scratch-B"):
            assert mine[s][key] == reference[s][key], (
                f"the slimming pipeline (VGG-11 at {LAB_RUN['width']} width, {LAB_RUN['n_train']} images, seed {s}) "
                f"with your step: {key} = {mine[s][key]}, the reference run gives {reference[s][key]}")
    course.same_claims_table(lab_claims(mine), lab_claims(reference), "your slimming step")
    return n + len(seeds)


# ---------------------------------------------------------------- 07.5 · predict, then run


def rethinking_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment: slimming's threshold on BN scales set by hand, Scratch-B's budget, Li
    et al.'s pruned ResNet-20-B and VGG-11-A. Deterministic; each entry is one prediction.

    Goal: what one global |γ| threshold does with ties, signs and a starved layer; how Scratch-B's budget scales; where
    a VGG's parameters and FLOPs sit

    Hint: notebook 02 ('The method': the threshold), notebook 01 ('The method': E_B, and the architecture table:
    parameters and MACs) explain them
    """
    out: dict[str, Any] = {}
    # two conv–BN layers, ten channels: |γ| = 0.1, 0.2, 0.2, 0.2, 0.5 | 0.9, -0.9, 0.3, 0.6, 0.05
    model = nn.Sequential(nn.Conv2d(1, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 5, 3), nn.BatchNorm2d(5))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, 0.2, 0.2, 0.2, 0.5]))
        model[4].weight.copy_(torch.tensor([0.9, -0.9, 0.3, 0.6, 0.05]))
    kept = list(prune.slimming_keep(model, 0.3).values())
    out["channels_removed_at_ratio_0_3"] = 10 - sum(len(k) for k in kept)
    out["channel_with_gamma_minus_0_9_kept"] = 1 in kept[1].tolist()
    starved = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        starved[1].weight.copy_(torch.tensor([0.01, 0.02, 0.03, 0.04]))
        starved[4].weight.copy_(torch.tensor([0.5, 0.6, 0.7, 0.8]))
    out["channels_layer_1_keeps_at_ratio_0_5"] = len(prune.slimming_keep(starved, 0.5)[starved[0]])
    out["scratch_b_epochs_at_half_the_macs"] = R.scratch_b_epochs(8, 2_000_000, 1_000_000)
    out["scratch_b_epochs_at_a_fifth_capped_at_2"] = R.scratch_b_epochs(8, 5_000_000, 1_000_000, cap=2)
    out["resnet20_b_first_block_filters"] = R.resnet_l1_widths(20, "B", 16)[0]
    x = torch.zeros(1, 1, 28, 28)
    large = R.vgg_arch(11, models.vgg_widths(11, 0.125), "linear", 1, 10)
    small = {**large, "widths": R.vgg_l1_widths(11, large["widths"])}
    params_removed = 1 - R.params(small) / R.params(large)
    flops_removed = 1 - R.macs(small, x) / R.macs(large, x)
    out["vgg11_a_removes_a_larger_share_of_params_than_of_flops"] = params_removed > flops_removed
    return out


course.predictions_exercise("07.5", rethinking_experiment)
