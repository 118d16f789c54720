"""The 02_grokking course lab: its checks against grokking.py, its stubs, its handout, the wrong answers each check
rejects, and the predictions of its "predict, then run" experiment."""

import labs
import torch

LAB = labs.Lab("02_grokking", ids=["02.1", "02.2", "02.3", "02.4"], written_ids=["02.q1"],
               preamble="import torch\nimport grokking as gk\nfrom prunebook import course\n",
               seeds={"02.1": [0, 7, 12345], "02.2": [0, 7, 12345], "02.3": [0], "02.4": [0]},
               experiment="grokking_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _spectrum(x, dim, full_fft=False, fourier=True):
    x = x.double()
    if not fourier:
        return x.abs() ** 2
    return (torch.fft.fft(x, dim=dim) if full_fft else torch.fft.rfft(x, dim=dim)).abs() ** 2


def _ipr(full_fft=False, fourier=True, w_axis=-2, only_u=False, squared_norm=True):
    def neuron_ipr(params):
        def one(x, dim):
            c2 = _spectrum(x, dim, full_fft, fourier)
            return (c2 ** 2).sum(dim) / (c2.sum(dim) ** 2 if squared_norm else c2.sum(dim))
        u = one(params["U"], -1)
        if only_u:
            return u
        return (u + one(params["V"], -1) + one(params["W"], w_axis)) / 3
    return neuron_ipr


def _accuracies(corrupted_on="given", square=True, clean="train"):
    def subset_accuracies(params, task):
        m, n = task.pairs[:, 0], task.pairs[:, 1]
        h = params["U"][0][:, m] + params["V"][0][:, n]
        pred = (params["W"][0] @ (h * h if square else h)).argmax(0)
        labels = task.labels if corrupted_on == "given" else task.true_labels
        correct = pred == labels
        parts = {"train": slice(0, task.n_train), "test": slice(task.n_train, None),
                 "corrupted": slice(0, task.n_noise),
                 "clean": slice(task.n_noise, task.n_train if clean == "train" else None)}
        return {k: float(correct[s].double().mean()) for k, s in parts.items()}
    return subset_accuracies


def _prune(count=round, w_axis="columns", ranking="ipr", honour_order=True, copy=True):
    ipr = _ipr()

    def prune_by_ipr(params, fraction, lowest_first=True):
        score = ipr(params)[0] if ranking == "ipr" else _ipr(only_u=True)(params)[0]
        order = torch.argsort(score, descending=honour_order and not lowest_first)
        idx = order[:count(fraction * score.numel())]
        out = {k: v.clone() for k, v in params.items()} if copy else params
        out["U"][:, idx] = 0
        out["V"][:, idx] = 0
        if w_axis == "columns":
            out["W"][:, :, idx] = 0
        else:
            out["W"][:, idx % out["W"].shape[1], :] = 0
        return out
    return prune_by_ipr


PREDICTED_02 = {
    "ipr_of_a_cosine_rfft": 1.0, "ipr_of_a_cosine_full_fft": 0.5, "ipr_of_a_one_hot_vector_rfft": 0.0204,
    "ipr_changes_when_the_weights_are_scaled_by_10": False,
    "ipr_of_a_neuron_with_cosine_inputs_and_a_one_hot_output": 0.6735, "corrupted_training_examples": 1646,
    "test_accuracy": 1.0, "train_accuracy_above_1_minus_xi": True, "phase": "full inversion",
    "test_accuracy_after_removing_the_lowest_ipr_half": 1.0,
    "test_accuracy_after_removing_the_highest_ipr_half_below_0.1": True,
}

WRONG_02 = {
    "02.1": {"the full FFT": _ipr(full_fft=True), "no Fourier transform": _ipr(fourier=False),
             "W's rows for its columns": _ipr(w_axis=-1), "U alone": _ipr(only_u=True),
             "the norm not squared": _ipr(squared_norm=False)},
    "02.2": {"corrupted labels scored on the true sums": _accuracies(corrupted_on="true"),
             "no square": _accuracies(square=False), "clean includes the test pairs": _accuracies(clean="all")},
    "02.3": {"floor for round": _prune(count=int), "W's rows zeroed": _prune(w_axis="rows"),
             "ranked by U's IPR alone": _prune(ranking="u"), "always lowest first": _prune(honour_order=False),
             "pruned in place": _prune(copy=False)},
    "02.4": {"the full FFT's 1/2 for rfft": {**PREDICTED_02, "ipr_of_a_cosine_rfft": 0.5},
             "1/p for a one-hot vector": {**PREDICTED_02, "ipr_of_a_one_hot_vector_rfft": 0.0103},
             "the true-sum network scores 1 - xi exactly": {**PREDICTED_02, "train_accuracy_above_1_minus_xi": False},
             "partial inversion": {**PREDICTED_02, "phase": "partial inversion"}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_02, PREDICTED_02
