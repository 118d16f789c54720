"""The 08_data_pruning course lab: its solutions pass their checks, its stubs do not, its handout is clean, each check
rejects plausible wrong answers, and the lab is marked for nbgrader with its checks beside it."""

import labs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prunebook import course

LAB = labs.Lab("08_data_pruning", ids=["08.1", "08.2", "08.3", "08.4", "08.5"], written_ids=["08.q1"],
               preamble=("import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
                         "import data_pruning as dp\nfrom scipy import optimize, special\n"
                         "from prunebook import course\n"),
               seeds={"08.1": [0, 7, 12345], "08.2": [0], "08.3": [0, 7], "08.4": [0, 7], "08.5": [0]},
               experiment="pruning_experiment")


@pytest.fixture(scope="module")
def dp():
    course.lab_checks("08")
    import data_pruning

    return data_pruning


# ---------------------------------------------------------------- plausible wrong answers


def _el2n(reduce="mean_of_norms", probs=True, power=1, p=2):
    def el2n_scores(logits, labels):
        q = torch.softmax(logits.double(), -1) if probs else logits.double()
        err = q - F.one_hot(labels, q.shape[-1]).double()
        if reduce == "norm_of_mean":
            return err.mean(0).norm(dim=-1)
        norms = err.norm(p=p, dim=-1) ** power
        return {"mean_of_norms": norms.mean(0), "first": norms[0], "sum": norms.sum(0)}[reduce]
    return el2n_scores


def _keep(count=round, swap=False, ties="stable", order="position", at_least_one=True):
    def keep_fraction(score, frac, keep):
        n = score.shape[-1]
        k = min(n, count(frac * n))
        k = max(1, k) if at_least_one else k
        hard = (keep == "hard") != swap
        if ties == "stable":
            idx = torch.sort(score, dim=-1, descending=hard, stable=True).indices[..., :k]
        else:  # ties toward the later index
            idx = n - 1 - torch.sort(score.flip(-1), dim=-1, descending=hard, stable=True).indices[..., :k]
        return idx.sort(dim=-1).values if order == "position" else idx
    return keep_fraction


def _theory(old: str = "", new: str = "", wrap=None):
    """The lab's own solution of 08.3 with one line of its source changed (``old`` → ``new``), or wrapped."""
    source = course.exercise_cells(labs.lab_notebook(LAB.series))["08.3"].source
    assert old in source, f"the solution no longer contains {old!r}"

    def theory_error(alpha_prune, frac, keep):
        ns: dict = {}
        exec(LAB.preamble, ns)
        exec(source.replace(old, new), ns)
        solution = ns["theory_error"]
        return wrap(solution, alpha_prune, frac, keep) if wrap else solution(alpha_prune, frac, keep)
    return theory_error


def _proto(cosine=True, norm_centroids=True, cluster_raw=False, similarity=False):
    def prototype_score(embedding, k, seed=0):
        import data_pruning as dp

        raw = embedding.double()
        z = F.normalize(raw, dim=1) if cosine else raw
        c = dp.kmeans(raw if cluster_raw else z, k, seed)[0].double()
        if not cosine:
            return torch.cdist(z, c).min(1)
        best = (z @ (F.normalize(c, dim=1) if norm_centroids else c).T).max(dim=1)
        return (best.values if similarity else 1 - best.values), best.indices
    return prototype_score


PREDICTED = {"el2n_confidently_wrong": 1.414214, "el2n_uniform_over_10_classes": 0.948683, "kept_of_5_at_f_half": 2,
             "hard_threshold_at_f_half": 0.67449, "best_keep_at_alpha_tot_1": "easy",
             "best_keep_at_alpha_tot_32": "hard", "random_keep_equals_unpruned_at_same_alpha_prune": True,
             "hard_f_0.2_beats_unpruned_at_alpha_prune_1": False}

WRONG = {
    "08.1": {"the norm of the mean error vector": _el2n(reduce="norm_of_mean"), "the first model only": _el2n(
        reduce="first"), "the sum over models": _el2n(reduce="sum"), "the squared norm": _el2n(power=2),
        "the L1 norm": _el2n(p=1), "logits, not probabilities": _el2n(probs=False)},
    "08.2": {"int() (floor), not round": _keep(count=int), "hard and easy swapped": _keep(swap=True),
             "ties toward the later index": _keep(ties="last"), "indices in score order": _keep(order="score"),
             "no minimum of one kept": _keep(at_least_one=False)},
    "08.3": {"the hinge not squared": _theory("(1 + w * w) * special.ndtr(w) + w * np.exp",
                                              "w * special.ndtr(w) + np.exp"),
             "alpha_tot = alpha_prune / f": _theory(wrap=lambda fn, a, f, k: fn(a / f, f, k)),
             "pruning ignored": _theory("dp.kept_margins(frac, keep)", "dp.kept_margins(1.0, 'random')"),
             "1 - R as the error": _theory("math.acos(r / math.sqrt(1 + r * r)) / math.pi",
                                           "1 - r / math.sqrt(1 + r * r)")},
    "08.4": {"the Euclidean distance": _proto(cosine=False), "centroids not normalised": _proto(norm_centroids=False),
             "k-means on the raw embedding": _proto(cluster_raw=True),
             "the similarity, not the distance": _proto(similarity=True)},
    "08.5": {"EL2N at most 1": {**PREDICTED, "el2n_confidently_wrong": 1.0},
             "round half up": {**PREDICTED, "kept_of_5_at_f_half": 3},
             "1 for True": {**PREDICTED, "random_keep_equals_unpruned_at_same_alpha_prune": 1}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG, PREDICTED

    def test_the_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it(self):
        super().test_the_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it()
        nb = labs.lab_notebook(LAB.series)
        assert sum("instructor" in c.metadata.get("tags", []) for c in nb.cells) >= 2  # the model answer, the notes
        last = [c for c in nb.cells if c.cell_type == "code"][-1]
        assert "course.record_lab(" in last.source and "ok_sim" in last.source and "ok_predictions" in last.source

    def test_the_experiment_is_what_the_lab_predicts(self, solved):
        checks = course.lab_checks("08")
        measured = self.measured()
        labs.assert_predicted("08.5", PREDICTED, measured, solved)
        assert checks.predictions_match(PREDICTED, measured)
        assert not checks.predictions_match(WRONG["08.5"]["round half up"], measured)

    def test_the_integration_uses_the_students_rule_and_restores_the_series(self, dp, solved):
        checks = course.lab_checks("08")
        original = dp.sample_pruned_perceptron.__globals__["keep_indices"]
        run, seeds = {**checks.LAB_RUN, "dim": 12, "trials": 2}, [0]
        reference = checks.lab_sims(None, run, seeds)
        swapped = checks.lab_sims(_keep(swap=True), run, seeds)  # "hard" keeps the easy: another simulation
        assert not np.array_equal(swapped[0]["error"], reference[0]["error"])
        assert dp.sample_pruned_perceptron.__globals__["keep_indices"] is original
        assert np.array_equal(checks.lab_sims(solved["keep_fraction"], run, seeds)[0]["error"], reference[0]["error"])
