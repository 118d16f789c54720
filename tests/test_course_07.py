"""The 07_rethinking course lab: its solutions pass their checks against rethinking.py, its stubs raise
NotImplementedError, each check rejects plausible wrong answers, and the "predict, then run" answers match."""

import copy
import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from prunebook import course, prune
from test_course import namespace
from test_course import test_each_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it as marked_for_nbgrader

ROOT = Path(__file__).resolve().parents[1]
LAB_07 = ROOT / "notebooks" / "07_rethinking" / "exercises.ipynb"
IDS_07 = ["07.1", "07.2", "07.3", "07.4", "07.5"]
PREAMBLE_07 = ("import copy\nimport math\nimport torch\nfrom torch import nn\nimport rethinking as R\n"
               "from prunebook import course, prune\n")


def lab_07():
    return nbformat.read(str(LAB_07), as_version=4)


@pytest.fixture(scope="module")
def solved_07():
    course.lab_checks("07")  # puts the lab folder (rethinking.py) on sys.path
    return namespace(lab_07(), PREAMBLE_07)


def test_the_07_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it():
    marked_for_nbgrader(LAB_07, IDS_07, "07_rethinking")


def test_the_07_lab_records_its_run():
    cells = [c for c in lab_07().cells if c.cell_type == "code"]
    assert "course.record_lab(" in cells[-1].source
    assert "'07.4'" in cells[-1].source or '"07.4"' in cells[-1].source


@pytest.mark.parametrize("ex_id, seeds", [("07.1", [0, 7, 12345]), ("07.2", [0, 7, 12345]),
                                          ("07.3", [0, 7, 12345]), ("07.4", [0]), ("07.5", [0])])
def test_every_07_solution_passes_its_check(solved_07, ex_id, seeds, capsys):
    for seed in seeds:
        course.check(ex_id, solved_07[course.lookup(ex_id).name], seed=seed)
        assert f"{ex_id} passed" in capsys.readouterr().out


def test_every_07_stub_fails_with_not_implemented():
    course.lab_checks("07")
    ns: dict = {}
    exec(PREAMBLE_07, ns)
    for ex_id, cell in course.exercise_cells(course.student_copy(lab_07())).items():
        if cell.cell_type != "code":
            continue
        if course.lookup(ex_id).name == "predictions":  # a value: the stub raises where the value is made
            with pytest.raises(NotImplementedError):
                exec(cell.source, ns)
            continue
        exec(cell.source, ns)
        with pytest.raises(NotImplementedError):
            course.check(ex_id, ns[course.lookup(ex_id).name])


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


@pytest.mark.parametrize("ex_id, mistake", [(e, m) for e, ms in WRONG_07.items() for m in ms])
def test_each_07_check_rejects_plausible_wrong_answers(solved_07, ex_id, mistake):
    with pytest.raises(AssertionError, match=re.escape(ex_id)):
        course.check(ex_id, WRONG_07[ex_id][mistake], quiet=True)


def test_the_07_experiment_is_what_the_lab_predicts():
    assert course.lab_checks("07").rethinking_experiment() == PREDICTED_07
    course.check("07.5", dict(PREDICTED_07), quiet=True)
