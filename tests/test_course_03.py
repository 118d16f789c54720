"""The 03_ihomer course lab: its solutions pass, its stubs raise, its handout is clean, its checks reject plausible
wrong answers, and it is marked for nbgrader with its checks beside it (checked against ``ihomer.py``)."""

import math

import labs
import numpy as np
from prunebook import course

LAB = labs.Lab("03_ihomer", ids=["03.1", "03.2", "03.3", "03.4", "03.5"], written_ids=["03.q1"],
               preamble="import math\nimport numpy as np\nimport ihomer\nfrom prunebook import course\n",
               seeds={"03.1": [0, 7, 12345], "03.2": [0, 7, 12345], "03.3": [0, 7, 12345], "03.4": [3], "03.5": [0]},
               experiment="ihomer_experiment")


# ---------------------------------------------------------------- plausible wrong answers


def _jaccard(union="n1a + n1b - n11", never_seen=1.0, diagonal=True, similarity=False):
    def jaccard_distance(n11, n1):
        n11, n1 = np.asarray(n11, dtype=float), np.asarray(n1, dtype=float)
        u = n1[:, None] + n1[None, :] - (n11 if union == "n1a + n1b - n11" else 0)
        d = np.full(u.shape, never_seen)
        d[u > 0] = 1.0 - n11[u > 0] / u[u > 0]
        if diagonal:
            np.fill_diagonal(d, 0.0)
        return 1.0 - d if similarity else d
    return jaccard_distance


def _split(pivots="farthest", tie="first", avg="pairs", first="or"):
    def odac_split(n11, n1, n, delta=0.9, tau=0.1):
        D = _jaccard()(n11, n1)
        k = len(D)
        a, b = np.triu_indices(k, 1)
        d = D[a, b]
        if len(d) < 2:
            return None
        eps = math.sqrt(math.log(1 / delta) / (2 * n))
        order = np.argsort(-d if pivots == "farthest" else d, kind="stable")
        d1, d2, d0 = d.max(), np.sort(d)[-2], d.min()
        mean = d.mean() if avg == "pairs" else D.mean()
        reliable = (d1 - d2 > eps or tau > eps) if first == "or" else (d1 - d2 > eps and tau > eps)
        if not (reliable and (d1 - d0) * abs(d1 + d0 - 2 * mean) > eps):
            return None
        p1, p2 = int(a[order[0]]), int(b[order[0]])
        left, right = [p1], [p2]
        for i in range(k):
            if i not in (p1, p2):
                closer = D[i, p1] <= D[i, p2] if tie == "first" else D[i, p1] < D[i, p2]
                (left if closer else right).append(i)
        return sorted(left), sorted(right)
    return odac_split


def _scores(empty_example=0.0, macro_over="all", hamming_by="N*L"):
    def multilabel_scores(Y, P):
        Y, P = np.asarray(Y, dtype=bool), np.asarray(P, dtype=bool)

        def f1(tp, fp, fn, empty=0.0):
            den = 2 * tp + fp + fn
            return np.where(den > 0, 2 * tp / np.maximum(den, 1), empty)

        tp, fp, fn = Y & P, ~Y & P, Y & ~P
        per_label = f1(tp.sum(0), fp.sum(0), fn.sum(0))
        seen = (Y | P).any(0)
        errors = (Y != P).sum()
        return {"subset_acc": float((Y == P).all(1).mean()),
                "hamming": float(errors / Y.size if hamming_by == "N*L" else errors / len(Y)),
                "micro_f1": float(f1(tp.sum(), fp.sum(), fn.sum())),
                "macro_f1": float(per_label.mean() if macro_over == "all" else
                                  (per_label[seen].mean() if seen.any() else 0.0)),
                "example_f1": float(f1(tp.sum(1), fp.sum(1), fn.sum(1), empty_example).mean())}
    return multilabel_scores


def _merge(linkage="average", first="smallest", small=lambda size, m: size < m, ties="smaller"):
    def merge_small_clusters(clusters, min_size, distance):
        clusters = [sorted(c) for c in clusters]
        while len(clusters) > 1:
            smalls = [c for c in clusters if small(len(c), min_size)]
            if not smalls:
                break
            c = (min if first == "smallest" else max)(smalls, key=lambda c: (len(c), c))
            others = [o for o in clusters if o is not c]
            link = np.mean if linkage == "average" else np.min
            size = (lambda o: len(o)) if ties == "smaller" else (lambda o: -len(o))
            partner = min(others, key=lambda o: (float(link(distance[np.ix_(c, o)])), size(o), o))
            clusters = [o for o in others if o is not partner] + [sorted(c + partner)]
        return sorted(clusters)
    return merge_small_clusters


PREDICTED_03 = {"distance_of_b_inside_a": 0.5, "distance_changes_with_1000_empty_instances": False,
                "tau_exceeds_eps_at_n_300": True, "hamming_of_predicting_nothing": 0.35,
                "subset_acc_of_predicting_nothing": 0.25, "example_f1_of_the_perfect_prediction": 0.75,
                "macro_f1_of_the_perfect_prediction": 0.8, "clusters_blocks": 2, "first_split_at_blocks": 100,
                "clusters_independent": 1, "merged_partition": [[0, 1, 2], [3, 4, 5]]}

WRONG_03 = {
    "03.1": {"the union as n_a + n_b (no - n11)": _jaccard(union="n1a + n1b"),
             "a pair never seen on at distance 0": _jaccard(never_seen=0.0),
             "the diagonal of a label never on left at 1": _jaccard(diagonal=False),
             "the similarity, not the distance": _jaccard(similarity=True)},
    "03.2": {"the closest pair as pivots": _split(pivots="closest"),
             "a tie sent to the second pivot": _split(tie="second"),
             "the mean over the whole matrix, diagonal included": _split(avg="matrix"),
             "'and' in the first condition": _split(first="and")},
    "03.3": {"an empty labelset predicted empty scores 1": _scores(empty_example=1.0),
             "macro-F1 over the labels ever on or predicted": _scores(macro_over="seen"),
             "Hamming loss divided by N only": _scores(hamming_by="N")},
    "03.4": {"single linkage": _merge(linkage="single"),
             "the largest small cluster first": _merge(first="largest"),
             "<= for smaller than": _merge(small=lambda size, m: size <= m),
             "ties to the larger partner": _merge(ties="larger")},
    "03.5": {"a nested label at distance 0": {**PREDICTED_03, "distance_of_b_inside_a": 0.0},
             "n00 counts": {**PREDICTED_03, "distance_changes_with_1000_empty_instances": True},
             "a perfect prediction scores 1": {**PREDICTED_03, "example_f1_of_the_perfect_prediction": 1.0,
                                               "macro_f1_of_the_perfect_prediction": 1.0},
             "independent labels split": {**PREDICTED_03, "clusters_independent": 6}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_03, PREDICTED_03


def test_the_03_right_answers_built_here_pass():
    """The wrong answers' builders, set right, pass: each test above fails for its one mistake."""
    for ex_id, right in (("03.1", _jaccard()), ("03.2", _split()), ("03.3", _scores())):
        course.check(ex_id, right, quiet=True)


def test_the_03_integration_runs_the_patched_merge():
    """A merge that merges nothing, patched in, changes the label clustering: the patch reaches the pipeline."""
    checks = course.lab_checks("03")
    seeds = [0]
    reference = checks.lab_traces(None, checks.LAB_RUN, seeds)
    unmerged = checks.lab_traces(lambda clusters, min_size, distance: clusters, checks.LAB_RUN, seeds)
    assert unmerged[0]["ari"] != reference[0]["ari"]
    assert checks.lab_traces(None, checks.LAB_RUN, seeds)[0]["ari"] == reference[0]["ari"]  # and is undone after
