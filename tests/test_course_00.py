"""The 00_pruning_basics course lab: its solutions pass their checks against prunebook.prune, its stubs raise
NotImplementedError, its handout is clean, each check rejects plausible wrong answers, and the "predict, then run"
answers match the run."""

import labs
import torch
from prunebook import prune
from torch import nn

LAB = labs.Lab("00_pruning_basics", ids=["00.1", "00.2", "00.3", "00.4", "00.5", "00.6"], written_ids=["00.q1"],
               preamble="import torch\nfrom torch import nn\nfrom prunebook import course, prune\n",
               seeds={f"00.{k}": [0, 1, 12345] for k in range(1, 7)}, experiment="pitfalls_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _kthvalue_mask(strict: bool):
    def mask(weight, sparsity):
        k = round(sparsity * weight.numel())
        if k == 0:
            return torch.ones(weight.shape)
        threshold = weight.abs().flatten().kthvalue(k).values
        return (weight.abs() > threshold if strict else weight.abs() >= threshold).float()
    return mask


def _floor_mask(weight, sparsity):
    k = int(sparsity * weight.numel())
    mask = torch.ones(weight.shape)
    if k:
        mask.view(-1)[torch.topk(weight.abs().flatten(), k, largest=False).indices] = 0
    return mask


def _layerwise_masks(model, sparsity):
    return {f"{n}.weight": prune.magnitude_mask(m.weight, sparsity) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _global_masks_with_biases(model, sparsity):
    params = {k: p.detach() for k, p in model.named_parameters() if p.dim() > 1 or k.endswith(".bias")}
    flat = prune.magnitude_mask(torch.cat([p.flatten() for p in params.values()]), sparsity)
    masks = dict(zip(params, flat.split([p.numel() for p in params.values()])))
    return {k: m.view_as(params[k]) for k, m in masks.items()}


def _global_masks_floor(model, sparsity):
    weights = {f"{n}.weight": m.weight.detach() for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    flat = _floor_mask(torch.cat([w.flatten() for w in weights.values()]), sparsity)
    return {k: m.view_as(w) for (k, w), m in zip(weights.items(), flat.split([w.numel() for w in weights.values()]))}


@torch.no_grad()
def _scan_without_restoring(model, evaluate, sparsities):
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            dense = layer.weight.clone()
            out[name] = []
            for s in sparsities:
                layer.weight.copy_(dense * prune.magnitude_mask(dense, s))
                out[name].append(evaluate(model))
    return out


@torch.no_grad()
def _scan_all_layers_at_once(model, evaluate, sparsities):  # every layer pruned together, one curve for all
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    dense = [m.weight.clone() for m in layers]
    scores = []
    for s in sparsities:
        for m, w in zip(layers, dense):
            m.weight.copy_(w * prune.magnitude_mask(w, s))
        scores.append(evaluate(model))
    for m, w in zip(layers, dense):
        m.weight.copy_(w)
    return {n: list(scores) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _channels(keep_count, bn_sliced=True, smallest=False, next_sliced=True):
    def prune_channels(conv, bn, next_conv, ratio):
        n_keep = keep_count(conv.out_channels, ratio)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        keep = torch.topk(norms, n_keep, largest=not smallest).indices.sort().values
        c = nn.Conv2d(conv.in_channels, n_keep, conv.kernel_size, padding=conv.padding, bias=conv.bias is not None)
        c.weight.data = conv.weight.data[keep].clone()
        if conv.bias is not None:
            c.bias.data = conv.bias.data[keep].clone()
        b = bn
        if bn_sliced:
            b = nn.BatchNorm2d(n_keep)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(b, name).data = getattr(bn, name).data[keep].clone()
            b.eval()
        nxt = next_conv
        if next_sliced:
            nxt = nn.Conv2d(n_keep, next_conv.out_channels, next_conv.kernel_size, padding=next_conv.padding)
            nxt.weight.data = next_conv.weight.data[:, keep].clone()
            nxt.bias.data = next_conv.bias.data.clone()
        return c.eval(), b, nxt.eval()
    return prune_channels


ROUNDED = prune.channels_to_keep
FLOORED = lambda n, r: max(1, int(n * (1 - r)))


def _conv_cost(stride=True, groups=True, dilation=True):
    def conv_cost(conv, height, width):
        kh, kw = conv.kernel_size
        g = conv.groups if groups else 1
        per = conv.in_channels // g * kh * kw
        params = conv.out_channels * per + (conv.out_channels if conv.bias is not None else 0)
        hw = [(n + 2 * p - (d if dilation else 1) * (k - 1) - 1) // (s if stride else 1) + 1
              for n, k, s, p, d in zip((height, width), conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
        return params, hw[0] * hw[1] * conv.out_channels * per
    return conv_cost


PREDICTED = {"parameters_after_l1_unstructured": 72, "zeros_in_state_dict_weight_orig": 0,
             "zeros_after_prune_remove": 32, "zeros_after_one_step_by_hand": 0, "zeros_with_kthvalue_threshold": 4,
             "zeros_with_topk": 3, "channels_kept_prune_30pct_of_64_rounded": 45,
             "channels_kept_prune_30pct_of_64_floored": 44}

WRONG = {
    "00.1": {"|w| > kthvalue (ties)": _kthvalue_mask(True), "|w| >= kthvalue": _kthvalue_mask(False),
             "int() for round()": _floor_mask},
    "00.2": {"the mask counted as a parameter": {**PREDICTED, "parameters_after_l1_unstructured": 136},
             "the state dict seen as sparse": {**PREDICTED, "zeros_in_state_dict_weight_orig": 32},
             "ties pruned exactly": {**PREDICTED, "zeros_with_kthvalue_threshold": 3}},
    "00.3": {"per-layer instead of global ranking": _layerwise_masks, "biases pruned too": _global_masks_with_biases,
             "off by one in the number pruned": _global_masks_floor},
    "00.4": {"a layer not restored": _scan_without_restoring, "all layers pruned at once": _scan_all_layers_at_once},
    "00.5": {"BatchNorm not sliced": _channels(ROUNDED, bn_sliced=False),
             "the smallest filters kept": _channels(ROUNDED, smallest=True),
             "a floor for the channel count": _channels(FLOORED),
             "next conv not sliced": _channels(ROUNDED, next_sliced=False)},
    "00.6": {"stride left out": _conv_cost(stride=False), "groups left out": _conv_cost(groups=False),
             "dilation left out": _conv_cost(dilation=False)},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG, PREDICTED

    def test_the_experiment_is_what_the_lab_predicts(self, solved):
        measured = self.measured()
        labs.assert_predicted("00.2", PREDICTED, measured, solved)
        assert all(type(v) is int for v in measured.values())
