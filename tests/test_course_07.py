"""The 07_rethinking course lab: its solutions pass their checks against rethinking.py, its stubs raise
NotImplementedError, its handout is clean, each check rejects plausible wrong answers, and the "predict, then run"
answers match."""

import copy
import math

import labs
import torch
from prunebook import prune

LAB = labs.Lab("07_rethinking", ids=["07.1", "07.2", "07.3", "07.4", "07.5"], written_ids=["07.q1"],
               preamble=("import copy\nimport math\nimport torch\nfrom torch import nn\nimport rethinking as R\n"
                         "from prunebook import course, prune\n"),
               seeds={"07.1": [0, 7, 12345], "07.2": [0, 7, 12345], "07.3": [0, 7, 12345], "07.4": [0], "07.5": [0]},
               experiment="rethinking_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _l1_kept(score="l1", largest=True, order="position", ties="low"):
    def l1_filters_kept(conv, n_keep):
        w = conv.weight.detach()
        s = {"l1": w.abs().sum(dim=(1, 2, 3)), "l2": w.pow(2).sum(dim=(1, 2, 3)).sqrt(),
             "signed": w.sum(dim=(1, 2, 3))}[score]
        if ties == "high":  # a reversed stable sort: on a tie the higher index wins
            idx = (len(s) - 1 - torch.argsort(s.flip(0), descending=largest, stable=True))[:n_keep]
        else:
            idx = torch.argsort(s, descending=largest, stable=True)[:n_keep]
        return idx.sort().values if order == "position" else idx
    return l1_filters_kept


def _slim_kept(compare="gt", count=round, per_layer=False, signed=False, guard=True):
    def slimming_kept(model, ratio):
        gammas = [bn.weight.detach() if signed else bn.weight.detach().abs() for _, bn in prune.conv_bn_pairs(model)]
        kept = []
        if per_layer:  # each layer thresholded at its own round(ratio · n)-th smallest
            for g in gammas:
                k = round(ratio * len(g))
                t = float(g.sort().values[k - 1]) if k else -math.inf
                idx = torch.nonzero(g > t).flatten()
                kept.append(idx if len(idx) else g.argmax().view(1))
            return kept
        pooled = torch.cat(gammas).sort().values
        k = count(ratio * len(pooled))
        t = float(pooled[k - 1]) if k else -math.inf
        for g in gammas:
            idx = torch.nonzero(g > t if compare == "gt" else g >= t).flatten()
            kept.append(idx if len(idx) or not guard else g.argmax().view(1))
        return kept
    return slimming_kept


def _budget(rounding=int, cap_on="factor", inverted=False):
    def scratch_b_epochs(epochs, macs_large, macs_small, cap=None):
        factor = macs_small / macs_large if inverted else macs_large / macs_small
        if cap is not None and cap_on == "factor":
            factor = min(factor, cap)
        value = epochs * factor
        if cap is not None and cap_on == "epochs":
            value = min(value, cap)
        return int(rounding(value + 1e-9) if rounding is not round else round(value))
    return scratch_b_epochs


def _slim_step(budget="macs", weights="inherited"):
    def slim_for_scratch(model, arch, ratio, epochs, example):
        import rethinking as R

        keep = prune.slimming_keep(model, ratio)
        params_large = prune.count_parameters(model)
        fresh = copy.deepcopy(model)
        prune.remove_channels(model, example, keep)
        found = {**arch, "widths": prune.conv_widths(model)}
        if weights == "fresh":  # the architecture built anew: what Scratch-B trains, not what fine-tuning inherits
            del fresh
            model = R.build(found)
        if budget == "macs":
            b = R.scratch_b_epochs(epochs, R.macs(arch, example), R.macs(found, example))
        elif budget == "params":
            b = R.scratch_b_epochs(epochs, params_large, R.params(found))
        else:  # the fraction of channels kept
            b = int(epochs / (1 - ratio))
        return model, found, b
    return slim_for_scratch


PREDICTED_07 = {"channels_removed_at_ratio_0_3": 5, "channel_with_gamma_minus_0_9_kept": True,
                "channels_layer_1_keeps_at_ratio_0_5": 1, "scratch_b_epochs_at_half_the_macs": 16,
                "scratch_b_epochs_at_a_fifth_capped_at_2": 16, "resnet20_b_first_block_filters": 6,
                "vgg11_a_removes_a_larger_share_of_params_than_of_flops": True}

WRONG_07 = {
    "07.1": {"the smallest filters kept": _l1_kept(largest=False), "the L2 norm": _l1_kept(score="l2"),
             "Σ w without the absolute value": _l1_kept(score="signed"),
             "indices in score order": _l1_kept(order="score"), "ties to the higher index": _l1_kept(ties="high")},
    "07.2": {">= for >": _slim_kept(compare="ge"), "a threshold per layer": _slim_kept(per_layer=True),
             "floor, not round": _slim_kept(count=int), "signed γ": _slim_kept(signed=True),
             "a layer left empty": _slim_kept(guard=False)},
    "07.3": {"round, not floor": _budget(rounding=round), "ceil": _budget(rounding=math.ceil),
             "the cap on the epochs, not the factor": _budget(cap_on="epochs"),
             "F_small / F_large": _budget(inverted=True)},
    "07.4": {"the budget from parameters": _slim_step(budget="params"),
             "the budget from the channels kept": _slim_step(budget="channels"),
             "a fresh network instead of the inherited weights": _slim_step(weights="fresh")},
    "07.5": {"exactly round(0.3·10) removed": {**PREDICTED_07, "channels_removed_at_ratio_0_3": 3},
             "a negative γ is small": {**PREDICTED_07, "channel_with_gamma_minus_0_9_kept": False},
             "a starved layer is emptied": {**PREDICTED_07, "channels_layer_1_keeps_at_ratio_0_5": 0},
             "the cap on the epochs": {**PREDICTED_07, "scratch_b_epochs_at_a_fifth_capped_at_2": 2}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_07, PREDICTED_07


def test_the_07_lab_records_its_run():
    cells = [c for c in labs.lab_notebook(LAB.series).cells if c.cell_type == "code"]
    assert "course.record_lab(" in cells[-1].source
    assert "'07.4'" in cells[-1].source or '"07.4"' in cells[-1].source
