"""The foundations lab's checks (``exercises.ipynb``): each exercise's function against ``prunebook.prune``, the
code the series run, on fresh random cases from a seed. ``course.check("00.1", fn)`` imports this file."""

from __future__ import annotations

import copy
from typing import Any

import torch
from prunebook import course, prune
from prunebook.course import exercise
from torch import nn
from torch.nn.utils import prune as torch_prune


def _weights(g, shape: tuple[int, ...], tied: bool):
    """Gaussian weights, or (``tied``) weights on a coarse grid, so many |w| are equal (as in quantized models)."""

    w = torch.randn(shape, generator=g)
    return (w * 2).round() / 4 if tied else w


@exercise("00.1", "magnitude_mask", points=2)
def _check_magnitude_mask(student, g) -> int:
    """Goal: fine-grained magnitude pruning of one tensor, exact sparsity

    Hint: equation (1) of the lab: k = round(s·n) entries with the smallest |w| get m = 0, exactly k of them even when
    several |w| tie at the threshold (topk on |w| picks exactly k; a comparison with the k-th value does not)
    """
    shapes = [(6,), (3, 4), (2, 3, 2, 2), (10, 9), (8, 4, 3, 3), (64,)]
    n = 0
    for shape in shapes:
        for tied in (False, True):
            for s in (course.uniform(g, 0.05, 0.95), course.uniform(g, 0.05, 0.95), 0.0, 1.0) if shape != (6,) else \
                    (course.uniform(g, 0.05, 0.95),):
                w = _weights(g, shape, tied)
                before = w.clone()
                case = f"magnitude_mask({course.brief(w)}, sparsity={s:.4g})"
                m = course.call(student, case, w, s)
                n += 1
                assert isinstance(m, torch.Tensor), f"{case} returned {type(m).__name__}, not a tensor"
                assert tuple(m.shape) == shape, f"{case}: the mask has shape {tuple(m.shape)}, not {shape}"
                assert torch.equal(w, before), f"{case} changed the weight it was given"
                m = m.detach().float()
                assert bool(((m == 0) | (m == 1)).all()), f"{case}: the mask holds values other than 0 and 1"
                k, zeros = round(s * w.numel()), int((m == 0).sum())
                assert zeros == k, (f"{case}: {zeros} zeros, but round({s:.4g}·{w.numel()}) = {k} are wanted"
                                    + (" (|w| has ties at the threshold)" if tied else ""))
                a = w.abs()
                if 0 < k < w.numel():
                    assert float(a[m == 0].max()) <= float(a[m == 1].min()), \
                        f"{case}: a pruned weight has a larger |w| than a kept one"
                if not tied:
                    assert torch.equal(m, prune.magnitude_mask(w, s)), f"{case}: not the reference's mask"
    return n


def pitfalls_experiment() -> dict[str, int]:
    """The lab's "predict, then run" experiment: what ``torch.nn.utils.prune``, hand-made masks, a threshold with ties
    and a channel count really do. Deterministic; each entry is one prediction to make.

    Goal: what torch.nn.utils.prune, hand-made masks, ties and channel counts really do

    Hint: the section 'Four things that bite' explains each one
    """

    torch.manual_seed(0)
    layer = nn.Linear(8, 8)  # 64 weights, 8 biases
    torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    out = {"parameters_after_l1_unstructured": sum(p.numel() for p in layer.parameters()),
           "zeros_in_state_dict_weight_orig": int((layer.state_dict()["weight_orig"] == 0).sum())}
    torch_prune.remove(layer, "weight")
    out["zeros_after_prune_remove"] = int((layer.weight == 0).sum())

    hand = nn.Linear(8, 8)  # zero half the weights by hand, then one SGD step without re-applying the mask
    with torch.no_grad():
        hand.weight.mul_(prune.magnitude_mask(hand.weight, 0.5))
    opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    hand(torch.randn(16, 8)).pow(2).sum().backward()
    opt.step()
    out["zeros_after_one_step_by_hand"] = int((hand.weight == 0).sum())

    w = torch.tensor([0.9, -0.2, 0.1, 0.2, -0.5, 0.2])  # prune 50 %: k = 3, and |w| = 0.2 three times
    threshold = w.abs().kthvalue(3).values
    out["zeros_with_kthvalue_threshold"] = int((w.abs() <= threshold).sum())  # mask = |w| > threshold
    out["zeros_with_topk"] = int((prune.magnitude_mask(w, 0.5) == 0).sum())
    out["channels_kept_prune_30pct_of_64_rounded"] = prune.channels_to_keep(64, 0.3)
    out["channels_kept_prune_30pct_of_64_floored"] = int(64 * (1 - 0.3))
    return out


course.predictions_exercise("00.2", pitfalls_experiment)


def _random_model(g, conv: bool):
    """A small MLP or CNN whose layers have very different weight scales (so a global and a per-layer ranking
    disagree)."""

    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    if conv:
        c1, c2 = course.randint(g, 2, 6), course.randint(g, 2, 6)
        model = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                              nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(c2, 3))
        example = torch.randn(4, 1, 6, 6, generator=g)
    else:
        a, b, c = course.randint(g, 3, 9), course.randint(g, 3, 9), course.randint(g, 2, 5)
        model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, b), nn.ReLU(), nn.Linear(b, c))
        example = torch.randn(5, a, generator=g)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(10 ** course.uniform(g, -1.5, 1.0))
    return model.eval(), example


def _state(model) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before: dict[str, Any]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


@exercise("00.3", "global_magnitude_masks", points=2)
def _check_global_masks(student, g) -> int:
    """Goal: one threshold over all layers: global ranking

    Hint: equation (2) of the lab: rank |w| over every conv and linear weight together (not layer by layer), prune the k
    = round(s·N) smallest, N the number of those weights; biases and BatchNorm stay; leave the model as it was
    """
    n = 0
    for i in range(8):
        model, _ = _random_model(g, conv=bool(i % 2))
        s = course.uniform(g, 0.1, 0.9)
        before = _state(model)
        case = f"global_magnitude_masks(model #{i + 1}: {_describe(model)}, sparsity={s:.4g})"
        masks = course.call(student, case, model, s)
        n += 1
        assert _unchanged(model, before) and not any(hasattr(m, "weight_orig") for m in model.modules()), \
            f"{case} changed the model; return the masks and leave the weights as they are"
        reference = copy.deepcopy(model)
        prune.global_magnitude(reference, s)
        want = prune.masks(reference)
        assert isinstance(masks, dict), f"{case} returned {type(masks).__name__}, not a dict"
        assert sorted(masks) == sorted(want), f"{case}: keys {sorted(masks)}, expected {sorted(want)}"
        for key in want:
            assert tuple(masks[key].shape) == tuple(want[key].shape), \
                f"{case}: masks[{key!r}] has shape {tuple(masks[key].shape)}, not {tuple(want[key].shape)}"
            m = masks[key].detach().float()
            assert bool(((m == 0) | (m == 1)).all()), f"{case}: masks[{key!r}] holds values other than 0 and 1"
        total = sum(m.numel() for m in want.values())
        zeros = sum(int((masks[k].detach() == 0).sum()) for k in want)
        k = round(s * total)
        assert zeros == k, f"{case}: {zeros} zeros in all, but round({s:.4g}·{total}) = {k} are wanted"
        weights = {f"{name}.weight": mod.weight.detach().abs() for name, mod in model.named_modules()
                   if isinstance(mod, (nn.Conv2d, nn.Linear))}
        pruned = torch.cat([weights[key][masks[key].detach() == 0] for key in want])
        kept = torch.cat([weights[key][masks[key].detach() != 0] for key in want])
        per_layer = {key: f"{float((masks[key].detach() == 0).float().mean()):.2f}" for key in want}
        assert float(pruned.max()) <= float(kept.min()), (
            f"{case}: a pruned |w| = {float(pruned.max()):.4g} is larger than a kept |w| = {float(kept.min()):.4g} "
            f"in another layer; sparsity per layer {per_layer} (a global ranking gives the layers different "
            f"sparsities)")
        for key in want:
            assert torch.equal(masks[key].detach().float(), want[key].float()), f"{case}: masks[{key!r}] differs"
    return n


def _describe(model) -> str:
    return " → ".join(f"{type(m).__name__}{tuple(m.weight.shape)}" for m in model.modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear)))


@exercise("00.4", "sensitivity_scan", points=2)
def _check_sensitivity(student, g) -> int:
    """Goal: prune one layer at a time to see which layers tolerate it

    Hint: section 'Sensitivity scan': for each layer and each sparsity, prune only that layer (magnitude_mask of its
    dense weight), evaluate, and put the dense weight back before the next sparsity and the next layer; keys are the
    module names of the conv and linear layers
    """
    n = 0
    for i in range(6):
        model, example = _random_model(g, conv=bool(i % 2))
        target = model(example).detach()
        evaluate = lambda m, x=example, t=target: float((m(x) - t).pow(2).mean())
        sparsities = sorted(round(course.uniform(g, 0.1, 0.95), 3) for _ in range(3))
        before = _state(model)
        case = f"sensitivity_scan(model #{i + 1}: {_describe(model)}, evaluate=output MSE, sparsities={sparsities})"
        with torch.no_grad():
            got = course.call(student, case, model, evaluate, sparsities)
        n += 1
        assert _unchanged(model, before), f"{case} left the model changed: restore each layer after its scan"
        want = prune.sensitivity_scan(copy.deepcopy(model), evaluate, sparsities)
        assert isinstance(got, dict), f"{case} returned {type(got).__name__}, not a dict"
        assert list(got) == list(want), f"{case}: layers {list(got)}, expected {list(want)} (in model order)"
        for layer, values in want.items():
            assert len(got[layer]) == len(values), f"{case}: layer {layer!r} has {len(got[layer])} values"
            err = course.rel_error(got[layer], values)
            assert err < 1e-5, (f"{case}: layer {layer!r}: {[round(float(v), 6) for v in got[layer]]}, the "
                                f"reference gives {[round(v, 6) for v in values]} (relative error {err:.2g})")
    return n


@exercise("00.5", "prune_channels", points=3)
def _check_prune_channels(student, g) -> int:
    """Goal: channel pruning that really shrinks the model

    Hint: section 'Channel pruning': keep the n − round(r·n) filters with the largest L1 norm (prune.channels_to_keep),
    in their original order; slice the conv's weight and bias, the BatchNorm's weight, bias, running_mean and
    running_var with the same indices, and the next conv's input channels
    """
    n = 0
    for i in range(8):
        torch.manual_seed(course.randint(g, 0, 2**31 - 1))
        c_in, c, c2 = course.randint(g, 1, 4), course.randint(g, 4, 16), course.randint(g, 2, 6)
        bias = bool(i % 2)
        model = nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=bias), nn.BatchNorm2d(c), nn.ReLU(),
                              nn.Conv2d(c, c2, 3, padding=1))
        bn = model[1]
        bn.weight.data = torch.rand(c, generator=g) + 0.5
        bn.bias.data = torch.rand(c, generator=g) - 0.5
        bn.running_mean = torch.rand(c, generator=g) - 0.5
        bn.running_var = torch.rand(c, generator=g) + 0.5
        model.eval()
        ratio = round(course.uniform(g, 0.05, 0.9), 2)
        example = torch.randn(2, c_in, 5, 5, generator=g)
        n_keep = prune.channels_to_keep(c, ratio)
        keep = prune.l1_keep(model[0], n_keep)
        reference = copy.deepcopy(model)
        prune.remove_channels(reference, example, {reference[0]: keep})
        work = copy.deepcopy(model)
        case = (f"prune_channels(Conv2d({c_in}, {c}, 3{', bias=False' if not bias else ''}), BatchNorm2d({c}), "
                f"Conv2d({c}, {c2}, 3), ratio={ratio})")
        out = course.call(student, case, work[0], work[1], work[3], ratio)
        n += 1
        assert isinstance(out, (tuple, list)) and len(out) == 3, f"{case}: return (conv, bn, next_conv)"
        conv, norm, nxt = out
        assert conv.out_channels == n_keep and conv.weight.shape[0] == n_keep, (
            f"{case}: the conv keeps {conv.weight.shape[0]} channels; pruning {ratio:.0%} of {c} keeps "
            f"{c} − round({ratio}·{c}) = {n_keep}")
        assert torch.equal(conv.weight.detach(), reference[0].weight.detach()), (
            f"{case}: not the filters with the largest L1 norms; keep indices {keep.tolist()} (in this order)")
        if bias:
            assert conv.bias is not None and torch.equal(conv.bias.detach(), reference[0].bias.detach()), \
                f"{case}: the conv's bias is not sliced with its filters"
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(norm, name)
            assert t is not None and t.shape[0] == n_keep and torch.equal(t.detach(), getattr(reference[1], name)), (
                f"{case}: the BatchNorm's {name} has {t.shape[0] if t is not None else 0} entries or other values; "
                f"BatchNorm must be sliced with its conv (channels {keep.tolist()})")
        assert norm.num_features == n_keep, f"{case}: bn.num_features is {norm.num_features}, not {n_keep}"
        assert nxt.in_channels == n_keep and torch.equal(nxt.weight.detach(), reference[3].weight.detach()), (
            f"{case}: the next conv must lose the same input channels ({keep.tolist()} kept)")
        small = nn.Sequential(conv, norm, nn.ReLU(), nxt).eval()
        with torch.no_grad():
            err = course.rel_error(small(example), reference(example))
        assert err < 1e-5, f"{case}: the pruned layers' output differs from the reference (relative error {err:.2g})"
    return n


@exercise("00.6", "conv_cost", points=2)
def _check_conv_cost(student, g) -> int:
    """Goal: count parameters and multiply-accumulates (MACs) of a conv

    Hint: equation (3) of the lab: params = C_out·(C_in/groups)·k_h·k_w (+ C_out for the bias); MACs =
    H_out·W_out·C_out·(C_in/groups)·k_h·k_w with H_out = ⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1 (the bias adds no multiply)
    """
    n = 0
    for i in range(16):
        groups = (1, 1, 2, 4)[i % 4]
        c_in, c_out = groups * course.randint(g, 1, 4), groups * course.randint(g, 1, 4)
        kh, kw = course.randint(g, 1, 5), course.randint(g, 1, 5) if i % 3 else None
        kernel = (kh, kw) if kw else kh
        stride, padding, dilation = course.randint(g, 1, 3), course.randint(g, 0, 2), (1, 2)[i % 2]
        h, w = course.randint(g, 9, 20), course.randint(g, 9, 20)
        conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=bool(i % 2))
        case = (f"conv_cost(Conv2d({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding}, "
                f"dilation={dilation}, groups={groups}, bias={bool(i % 2)}), height={h}, width={w})")
        got = course.call(student, case, conv, h, w)
        n += 1
        want = (prune.count_parameters(conv), prune.count_macs(conv, torch.zeros(1, c_in, h, w)))
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (params, macs)"
        assert int(got[0]) == want[0], f"{case}: {got[0]} parameters, the layer stores {want[0]}"
        assert int(got[1]) == want[1], f"{case}: {got[1]} MACs, the layer does {want[1]} on one {h}×{w} input"
    return n
