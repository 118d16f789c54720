"""The 01_ap course lab: its solutions pass their checks against ap.py, its stubs raise NotImplementedError, its
handout is clean, each check rejects plausible wrong answers, and the "predict, then run" answers match the run."""

import labs
import torch
from prunebook import prune
from torch import nn

LAB = labs.Lab("01_ap", ids=["01.1", "01.2", "01.3", "01.4", "01.5"], written_ids=["01.q1"],
               preamble="import torch\nfrom torch import nn\nimport ap\nfrom prunebook import course, prune\n",
               seeds={"01.1": [0, 7], "01.2": [0, 7], "01.3": [0, 7], "01.4": [3], "01.5": [0]},
               experiment="ap_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _dnr(per_layer_mean=False, any_zero=False, train_mode=False):
    def dead_neuron_rate(model, x):
        outs = []
        hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach().clone()))
                 for m in model.modules() if isinstance(m, nn.ReLU)]
        was = model.training
        model.train(train_mode)
        with torch.no_grad():
            model(x)
        model.train(was)
        for h in hooks:
            h.remove()
        rates = [float((o == 0).float().mean()) for o in outs]
        element = sum(rates) / len(rates) if per_layer_mean else \
            sum(int((o == 0).sum()) for o in outs) / sum(o.numel() for o in outs)
        dead = [((o.flatten(2) == 0).any(2) if any_zero else (o.flatten(2) == 0).all(2)) if o.ndim > 2 else o == 0
                for o in outs]
        return element, sum(int(d.sum()) for d in dead) / sum(d.numel() for d in dead)
    return dead_neuron_rate


def _choose(candidates=lambda w: w < 0, score=lambda w, w0: (w - w0).abs(), largest=False, per_layer=False,
            stable=True):
    def ap_choose(weights, start, k):
        w, w0 = torch.cat([t.flatten() for t in weights]), torch.cat([t.flatten() for t in start])
        s = torch.where(candidates(w), score(w, w0), torch.full_like(w, float("inf") if not largest else -1.0))
        chosen = torch.zeros(w.numel(), dtype=torch.bool)
        if per_layer:  # k shared out over the tensors by their candidates, each ranked on its own
            sizes, c = [t.numel() for t in weights], candidates(w)
            counts = [int(x.sum()) for x in c.split(sizes)]
            ks = [round(k * n / max(sum(counts), 1)) for n in counts]
            ks[-1] = k - sum(ks[:-1])
            offset = 0
            for size, kk, part in zip(sizes, ks, s.split(sizes)):
                chosen[offset + torch.argsort(part, stable=True)[:max(kk, 0)]] = True
                offset += size
        elif stable:
            chosen[torch.argsort(s, stable=True, descending=largest)[:k]] = True
        else:
            chosen[torch.topk(s, k, largest=largest).indices] = True
        return [c.view_as(t) for c, t in zip(chosen.split([t.numel() for t in weights]), weights)]
    return ap_choose


def _imp_round(count="total", rewind="masked", per_layer=False):
    def imp_round(weights, masks, init, r, rate):
        eff = [w * m for w, m in zip(weights, masks)]
        n = sum(w.numel() for w in weights)
        if count == "total":
            k = round((1 - (1 - rate) ** (r + 1)) * n)
        elif count == "linear":
            k = min(n, round(rate * (r + 1) * n))
        else:  # round(rate · alive) more than before
            pruned = sum(int((m == 0).sum()) for m in masks)
            k = pruned + round(rate * (n - pruned))
        if per_layer:
            new = [prune.magnitude_mask(w, k / n) for w in eff]
        else:
            flat = prune.magnitude_mask(torch.cat([w.flatten() for w in eff]), k / n)
            new = [m.view_as(w) for m, w in zip(flat.split([w.numel() for w in eff]), eff)]
        back = {"masked": [w0 * m for w0, m in zip(init, new)], "none": [w * m for w, m in zip(weights, new)],
                "revive": [w0.clone() for w0 in init]}[rewind]
        return new, back
    return imp_round


def _ap_step(k_of="alive", base_to="target - k"):
    def ap_prune_step(net, target, params, start, p2):
        import ap

        zeros, total = ap.count_zeros(params)
        k = round(p2 * (total - zeros if k_of == "alive" else total))
        goal = round(target * total)
        prune.global_magnitude(net, (goal - k if base_to == "target - k" else goal) / total, params)
        weights = [getattr(m, n).detach() for m, n in params]
        before = [ap.start_weight(start, net, m, n) for m, n in params]
        ap.prune_chosen(params, _choose()(weights, before, k))
    return ap_prune_step


PREDICTED_01 = {"zeros_after_3_rounds_of_20pct": 488, "removed_by_magnitude_in_round_4": 92,
                "removed_by_ap_in_round_4": 10, "positive_weights_ap_removes": 0, "layer1_preactivations_lowered": True,
                "layer2_preactivations_lowered": 0, "same_sparsity_as_without_ap": True}

WRONG_01 = {
    "01.1": {"the mean of the layers' rates": _dnr(per_layer_mean=True),
             "a channel dead when any of its map is zero": _dnr(any_zero=True),
             "measured in train mode": _dnr(train_mode=True)},
    "01.2": {"either sign": _choose(candidates=lambda w: w != 0),
             "pruned (zero) weights as candidates": _choose(candidates=lambda w: w <= 0),
             "|w| instead of |Δw|": _choose(score=lambda w, w0: w.abs()),
             "the weights that moved most": _choose(largest=True),
             "a ranking per layer": _choose(per_layer=True)},
    "01.3": {"round(p·alive) more, not a total target": _imp_round(count="alive"),
             "p·(r+1) of all weights": _imp_round(count="linear"),
             "a ranking per layer": _imp_round(per_layer=True),
             "no rewind": _imp_round(rewind="none"),
             "a rewind that revives pruned weights": _imp_round(rewind="revive")},
    "01.4": {"AP's share of all weights": _ap_step(k_of="all"),
             "the base method to the full target first": _ap_step(base_to="target")},
    "01.5": {"20 % of all weights a round": {**PREDICTED_01, "zeros_after_3_rounds_of_20pct": 600},
             "AP's 2 % of all weights": {**PREDICTED_01, "removed_by_ap_in_round_4": 20,
                                         "removed_by_magnitude_in_round_4": 82},
             "layer 2 can fall too": {**PREDICTED_01, "layer2_preactivations_lowered": 1}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_01, PREDICTED_01
