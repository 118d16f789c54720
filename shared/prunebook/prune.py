"""The pruning vocabulary several papers share.

Unstructured (weights become zeros, shapes stay), on top of ``torch.nn.utils.prune``: a pruned layer keeps
``weight_orig`` and a ``weight_mask`` buffer, and its forward uses ``weight_orig * weight_mask``, so the
mask holds through any number of optimizer steps.
- ``global_magnitude``: one threshold on |w| over all layers; ``layerwise_magnitude``: the same fraction in
  every layer; ``random_prune``: a random mask of exactly the requested size.
- ``iterative_magnitude_pruning``: train, prune a fraction of what remains, rewind the survivors to their
  early values, repeat (Frankle & Carbin's lottery tickets; ``snapshot``/``rewind`` do the rewinding).

Structured (filters and channels are removed, the model really shrinks): a method picks the channels each conv
keeps, and ``remove_channels`` removes the rest through ``torch-pruning``'s dependency graph (the next layers
shrink with them); ``mask_channels`` zeroes the same channels instead, for checking that the two agree.
- ``l1_keep``: Li et al.'s filter pruning, the filters with the largest L1 norm (``filter_l1_norms``);
- ``slimming_keep``: network slimming (Liu et al. 2017), one global threshold on |BN scale|
  (``slimming_threshold``), after training with ``BNL1Penalty`` (an L1 sub-gradient on BN scales).

Counting: ``sparsity``, ``count_parameters``, ``count_nonzero``, ``count_macs`` (``torch.utils.flop_counter``); timing:
``latency_rounds`` (several forward passes side by side, in paired rounds).

Plain-tensor helpers (no hooks): ``magnitude_mask`` (one tensor, exactly round(s·n) zeros), ``sensitivity_scan``
(each layer pruned alone, the model restored after) and ``channels_to_keep`` (what "prune 30 %" keeps).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.flop_counter import FlopCounterMode

from .train import Callback, TrainState, refresh_masked_weights

PRUNABLE = (nn.Conv2d, nn.Linear)
Params = Sequence[tuple[nn.Module, str]]


def prunable(model: nn.Module, types: tuple[type, ...] = PRUNABLE,
             exclude: Sequence[nn.Module] = ()) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs pruning acts on: every conv and linear layer unless excluded."""
    skip = {id(m) for m in exclude}
    return [(m, "weight") for m in model.modules() if isinstance(m, types) and id(m) not in skip]


def _effective(module: nn.Module, name: str) -> torch.Tensor:
    """The weight the forward pass uses (masked, if pruned)."""
    return getattr(module, name)


def _already_pruned(module: nn.Module, name: str) -> int:
    mask = getattr(module, f"{name}_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def global_magnitude(model: nn.Module, sparsity: float, params: Params | None = None) -> None:
    """Prune the smallest-|w| weights over all ``params`` together until ``sparsity`` of them are zero.

    ``sparsity`` is the total fraction, so calling it again with a larger value prunes further."""
    _check_fraction(sparsity)
    params = list(params) if params is not None else prunable(model)
    total = sum(_effective(m, n).numel() for m, n in params)
    extra = round(sparsity * total) - sum(_already_pruned(m, n) for m, n in params)
    if extra > 0:
        _make_contiguous(params)
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=extra)
    else:
        _ensure_masks(params)


def layerwise_magnitude(model: nn.Module, sparsity: float, params: Params | None = None) -> None:
    """Prune the smallest-|w| weights of each layer until ``sparsity`` of every layer is zero."""
    _check_fraction(sparsity)
    for m, n in params if params is not None else prunable(model):
        extra = round(sparsity * _effective(m, n).numel()) - _already_pruned(m, n)
        torch_prune.l1_unstructured(m, n, amount=max(extra, 0))


def random_prune(model: nn.Module, sparsity: float, params: Params | None = None, seed: int = 0,
                 layerwise: bool = True) -> None:
    """Zero a random ``sparsity`` of the weights (of each layer, or of all together), chosen by ``seed``."""
    _check_fraction(sparsity)
    params = list(params) if params is not None else prunable(model)
    g = torch.Generator().manual_seed(seed)
    if layerwise:
        for m, n in params:
            torch_prune.custom_from_mask(m, n, random_mask(_effective(m, n), sparsity, g))
        return
    sizes = [_effective(m, n).numel() for m, n in params]
    flat = random_mask(torch.empty(sum(sizes)), sparsity, g)
    for (m, n), chunk in zip(params, flat.split(sizes)):
        torch_prune.custom_from_mask(m, n, chunk.view_as(_effective(m, n)))


def random_mask(weight: torch.Tensor, sparsity: float, g: torch.Generator) -> torch.Tensor:
    """A mask with exactly round(sparsity·n) zeros, placed at random."""
    mask = torch.ones(weight.numel())
    mask[torch.randperm(weight.numel(), generator=g)[: round(sparsity * weight.numel())]] = 0
    return mask.view_as(weight).to(weight.device)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """m_i = 0 for the k = round(s·n) entries with the smallest |w_i|, 1 elsewhere: exactly k zeros, whatever the
    ties (among equal |w| the order ``topk`` gives decides, as in ``torch.nn.utils.prune.L1Unstructured``)."""
    _check_fraction(sparsity)
    k = round(sparsity * weight.numel())
    mask = torch.ones(weight.shape, device=weight.device)  # contiguous even for a channels-last weight
    if k:
        mask.view(-1)[torch.topk(weight.detach().abs().flatten(), k, largest=False).indices] = 0
    return mask


@torch.no_grad()
def sensitivity_scan(model: nn.Module, evaluate: Callable[[nn.Module], float], sparsities: Sequence[float],
                     layers: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Layer name → ``evaluate(model)`` with only that layer pruned by magnitude to each sparsity in turn (every
    other layer dense). Each layer's weight is restored before the next, so the model ends as it began. ``layers``
    defaults to every conv and linear layer; the model must hold plain weights (no ``torch.nn.utils.prune`` hooks:
    call ``make_permanent`` first)."""
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else [n for n, m in modules.items() if isinstance(m, PRUNABLE)]
    scan = {}
    for name in names:
        if hasattr(modules[name], "weight_orig"):
            raise ValueError(f"layer {name!r} is pruned with torch.nn.utils.prune: call prune.make_permanent first")
        weight = modules[name].weight
        dense = weight.detach().clone()
        scores = []
        try:
            for s in sparsities:
                weight.copy_(dense * magnitude_mask(dense, s).to(dense))
                scores.append(float(evaluate(model)))
        finally:
            weight.copy_(dense)
        scan[name] = scores
    return scan


def channels_to_keep(n_channels: int, ratio: float) -> int:
    """How many of ``n_channels`` "prune ``ratio``" keeps: n − round(ratio·n), at least one. The same count rule as
    the unstructured masks (round(s·n) removed); ``int(n·(1 − ratio))`` (a floor) keeps one channel fewer whenever
    ratio·n has a fractional part of at least one half (64 channels at 30 %: 45 here, 44 by the floor)."""
    if n_channels < 1:
        raise ValueError(f"n_channels={n_channels}: a layer has at least one channel")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio}: a fraction in [0, 1] is needed")
    return max(1, n_channels - round(ratio * n_channels))


@torch.no_grad()
def _make_contiguous(params: Params) -> None:
    """Weights (and masks) in the default memory format: ``global_unstructured`` flattens them with ``view``, which
    fails on the channels-last convs that ``train.fit`` leaves behind (``fit`` converts them back)."""
    for m, n in params:
        for attr in (f"{n}_orig", f"{n}_mask") if hasattr(m, f"{n}_mask") else (n,):
            t = getattr(m, attr)
            t.data = t.data.contiguous()
        refresh_masked_weights(m)


def _ensure_masks(params: Params) -> None:
    for m, n in params:
        if not hasattr(m, f"{n}_mask"):
            torch_prune.identity(m, n)


def _check_fraction(sparsity: float) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity}: a fraction in [0, 1] is needed")


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every pruning mask in ``model``, keyed like its parameter (``"features.0.weight"``)."""
    return {key[: -len("_mask")]: buf.clone() for key, buf in model.named_buffers() if key.endswith("_mask")}


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights (zeros stay zeros) and drop the pruning hooks."""
    for m in model.modules():
        for name in [k[: -len("_orig")] for k in list(m._parameters) if k.endswith("_orig")]:
            torch_prune.remove(m, name)
    return model


def sparsity(model: nn.Module, params: Params | None = None) -> float:
    """The fraction of zero weights among ``params`` (default: every conv and linear weight)."""
    params = list(params) if params is not None else prunable(model)
    zeros = sum(int((_effective(m, n) == 0).sum()) for m, n in params)
    return zeros / sum(_effective(m, n).numel() for m, n in params)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights in each conv and linear layer, by module name."""
    return {name: int((m.weight == 0).sum()) / m.weight.numel()
            for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def count_parameters(model: nn.Module) -> int:
    """All parameters the model stores; a weight pruned by a mask counts in full (``count_nonzero`` does
    not)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not zero, counting masked weights after the mask."""
    return sum(int((_effective(m, name) != 0).sum()) for m in model.modules() for name in _own_params(m))


def _own_params(module: nn.Module) -> list[str]:
    return [k[: -len("_orig")] if k.endswith("_orig") else k for k, v in module._parameters.items() if v is not None]


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (what most pruning papers call FLOPs).

    ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate; we halve it. Zeroed weights still
    count: unstructured sparsity saves no dense compute."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return counter.get_total_flops() // 2


@torch.no_grad()
@torch.no_grad()
def latency_rounds(calls: dict[Any, Callable[[], Any]], rounds: int = 15, repeats: int = 5,
                   warmup: int = 3) -> dict[Any, list[float]]:
    """Seconds per call of several forward passes timed side by side in one process, in paired rounds.

    After ``warmup`` calls each, every round times each call ``repeats`` times (their median), in an order that
    alternates round by round, so a slow or busy stretch of the machine hits all of them alike: round r of one
    call pairs with round r of another (compare them by their ratios, round by round). CUDA work is synchronised
    before and after each call. Returns, per key, one median per round."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() and torch.cuda.is_initialized() else (lambda: None)
    for call in calls.values():
        for _ in range(warmup):
            call()
    out: dict[Any, list[float]] = {key: [] for key in calls}
    for r in range(rounds):
        for key in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                calls[key]()
                sync()
                times.append(time.perf_counter() - t0)
            out[key].append(statistics.median(times))
    return out


# ---------------------------------------------------------------- iterative magnitude pruning


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights, to rewind to later."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("_mask")}


@torch.no_grad()
def rewind(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Put the surviving weights (and every other parameter and buffer) back to ``weights``; masks stay."""
    for key, tensor in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        source = weights.get(key, weights.get(key.removesuffix("_orig")))
        if source is None:
            raise KeyError(f"the snapshot has no value for {key!r}")
        tensor.copy_(source)
    refresh_masked_weights(model)


def iterative_magnitude_pruning(
    model: nn.Module,
    train_fn: Callable[[nn.Module, int], dict[str, Any]],
    rounds: int,
    rate: float = 0.2,
    rewind_to: dict[str, torch.Tensor] | str | None = None,
    params: Params | None = None,
    layerwise: bool = False,
    prune_step: Callable[[nn.Module, float, Params], None] | None = None,
) -> list[dict[str, Any]]:
    """Train, prune ``rate`` of the remaining weights by magnitude, rewind, and repeat ``rounds`` times.

    ``train_fn(model, round)`` trains in place and returns metrics; ``rewind_to`` is a :func:`snapshot`
    taken at initialisation (lottery tickets) or early in training (rewinding), or ``"none"`` to go on from the
    pruned weights (pruning with fine-tuning, Han et al. 2015). After the last pruning the model is trained once
    more, so the result has ``rounds + 1`` rows, sparsity 0 first.

    ``prune_step(model, sparsity, params)`` replaces the magnitude pruning of each round: it must bring ``params``
    to the total ``sparsity`` given (a method that runs on top of magnitude pruning, such as AP, plugs in here)."""
    if rewind_to is None:
        raise ValueError("rewind_to is required: take prune.snapshot(model) at the point to rewind to, "
                         "or pass rewind_to='none' to fine-tune the pruned weights instead")
    params = list(params) if params is not None else prunable(model)
    rows = []
    for r in range(rounds + 1):
        rows.append({"round": r, "sparsity": sparsity(model, params), **train_fn(model, r)})
        if r == rounds:
            break
        target = 1 - (1 - rate) ** (r + 1)
        (prune_step or (layerwise_magnitude if layerwise else global_magnitude))(model, target, params)
        if rewind_to != "none":
            rewind(model, rewind_to)
    return rows


class ApplyMasks(Callback):
    """Zero the masked weights after every optimizer step, for masks kept outside ``torch.nn.utils.prune``."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        named = dict(model.named_parameters())
        self.pairs = [(named[k], m.bool()) for k, m in masks.items()]

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        for param, mask in self.pairs:
            param.mul_(mask.to(param.device))


# ---------------------------------------------------------------- structured pruning (torch-pruning)
# One implementation: a method chooses which output channels of each conv to keep (``l1_keep``,
# ``slimming_keep``), and ``remove_channels`` removes the others with torch-pruning's dependency graph.


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Each conv with the BatchNorm2d registered right after it (VGG layers, ResNet blocks, the stem)."""
    pairs, pending = [], None
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            pending = m
        elif isinstance(m, nn.BatchNorm2d) and pending is not None:
            pairs.append((pending, m))
            pending = None
    return pairs


def remove_channels(model: nn.Module, example: torch.Tensor, keep: dict[nn.Conv2d, torch.Tensor]) -> nn.Module:
    """Remove every output channel of each conv in ``keep`` whose index is not listed, with torch-pruning:
    the BN after it and the next layer's inputs shrink too, so the model really gets smaller. In place.

    The dependency graph is traced in eval mode, so the trace does not touch BN running statistics."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for conv, idx in keep.items():
        kept = set(int(i) for i in idx)
        if not kept:
            raise ValueError("a layer must keep at least one channel")
        drop = [i for i in range(conv.out_channels) if i not in kept]
        if drop:
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()
    model.train(was_training)
    return model


@torch.no_grad()
def mask_channels(model: nn.Module, keep: dict[nn.Conv2d, torch.Tensor]) -> nn.Module:
    """Zero, in place, the filters and the following BN's scale and shift of every channel not kept: the masked
    counterpart of :func:`remove_channels` (the same function, the same size as before)."""
    bn_of = dict(conv_bn_pairs(model))
    for conv, idx in keep.items():
        mask = torch.zeros(conv.out_channels, dtype=torch.bool)
        mask[torch.as_tensor(idx, dtype=torch.long)] = True
        conv.weight[~mask] = 0
        if conv.bias is not None:
            conv.bias[~mask] = 0
        bn = bn_of[conv]
        bn.weight[~mask] = 0
        bn.bias[~mask] = 0
    return model


def filter_l1_norms(conv: nn.Conv2d) -> torch.Tensor:
    """s_j = Σ |F_j|: the sum of absolute kernel weights of each output filter (Li et al., 2017)."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def l1_keep(conv: nn.Conv2d, n_keep: int) -> torch.Tensor:
    """The ``n_keep`` filters with the largest L1 norm (ties go to the lower index), in ascending order."""
    if not 1 <= n_keep <= conv.out_channels:
        raise ValueError(f"n_keep={n_keep}: a conv with {conv.out_channels} filters keeps 1 to {conv.out_channels}")
    norms = filter_l1_norms(conv)
    order = sorted(range(len(norms)), key=lambda j: (-float(norms[j]), j))
    return torch.tensor(sorted(order[:n_keep]))


def slimming_threshold(model: nn.Module, ratio: float) -> float:
    """Network slimming's one global threshold on |γ| over all channels: the ``round(ratio · N)``-th smallest |γ|.
    Channels with |γ| above it stay, so exactly that many are removed when the scales are distinct.
    (The official script takes the next value, removing one channel more.)"""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio={ratio}: a fraction in [0, 1) is needed")
    scales = torch.cat([bn.weight.detach().abs().flatten() for _, bn in conv_bn_pairs(model)]).sort().values
    k = round(ratio * len(scales))
    return -math.inf if k == 0 else float(scales[k - 1])


def slimming_keep(model: nn.Module, ratio: float) -> dict[nn.Conv2d, torch.Tensor]:
    """For every conv, the channels whose BN |γ| exceeds the global threshold (at least the largest one)."""
    threshold = slimming_threshold(model, ratio)
    keep = {}
    for conv, bn in conv_bn_pairs(model):
        scale = bn.weight.detach().abs()
        idx = torch.nonzero(scale > threshold).flatten()
        keep[conv] = idx if len(idx) else scale.argmax().view(1)
    return keep


class BNL1Penalty(Callback):
    """Adds ``strength · sign(γ)`` to every BN scale's gradient: the L1 penalty network slimming trains with."""

    def __init__(self, strength: float = 1e-4):
        self.strength = strength

    @torch.no_grad()
    def after_backward(self, state: TrainState) -> None:
        for m in state.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and m.weight.grad is not None:
                m.weight.grad.add_(self.strength * torch.sign(m.weight))


def conv_widths(model: nn.Module) -> list[int]:
    """Output channels of each conv, in order: the architecture a structured pruning method found."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

