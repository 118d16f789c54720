"""The 05_dependencyvit course lab: its solutions pass their checks against dependencyvit.py, its stubs raise
NotImplementedError, its handout is clean, each check rejects plausible wrong answers, and the "predict, then run"
answers match the run."""

import labs
import torch

LAB = labs.Lab("05_dependencyvit", ids=["05.1", "05.2", "05.3", "05.4", "05.5"], written_ids=["05.q1"],
               preamble="import torch\nimport dependencyvit as dv\nfrom prunebook import course\n",
               seeds={"05.1": [0, 7], "05.2": [0, 7], "05.3": [0, 7], "05.4": [0], "05.5": [0]},
               experiment="dependency_experiment")


# Wrong implementations a student plausibly writes: each check must reject them.


def _reversed(transpose=True, gate="child", heads="sum"):
    def reversed_attention(a, p, m, v):
        gated = a * p.unsqueeze(-1) * (m[:, None, :, None] if gate == "child" else m[:, None, None, :])
        sent = gated.transpose(-2, -1) if transpose else gated
        return sent @ v, (sent.sum(1) if heads == "sum" else sent.mean(1))
    return reversed_attention


def _parents(axis=0, repair="most"):
    """tree_parents, right (``repair="most"``) or with one mistake: the argmax along the rows, no cycle repair
    (``None``), or a cycle broken at the member receiving least or at the first member met."""
    def tree_parents(mask):
        mask = torch.as_tensor(mask, dtype=torch.float64)
        parent = mask.argmax(dim=axis).tolist()
        received = mask.sum(dim=1).tolist()
        if repair is None:
            return parent
        done: set[int] = set()
        for start in range(len(parent)):
            order: dict[int, int] = {}  # token -> its place on this walk up the parents
            node = start
            while node not in done and node not in order:
                order[node] = len(order)
                node = parent[node]
            cycle = list(order)[order[node]:] if node in order else []
            if len(cycle) > 1:  # min and max keep the first of equals, in the walk's order
                pick = {"most": lambda c: max(c, key=received.__getitem__),
                        "least": lambda c: min(c, key=received.__getitem__), "first": lambda c: c[0]}[repair]
                root = pick(cycle)
                parent[root] = root
            done.update(order)
        return parent
    return tree_parents


def _keep(count=round, lowest=False, order="position"):
    def lite_keep(m, keep):
        k = max(1, count(m.shape[1] * keep))
        idx = m.topk(k, dim=1, largest=not lowest).indices
        return idx.sort(dim=1).values if order == "position" else idx
    return lite_keep


def _labels(heads_by="received", self_counts=True):
    def subtree_labels(mask, k):
        parent = _parents()(mask)
        mask = torch.as_tensor(mask, dtype=torch.float64)
        score = mask.sum(dim=1) if heads_by == "received" else mask.sum(dim=0)
        heads = torch.argsort(-score, stable=True)[:k].tolist() if heads_by != "roots" else []
        stop = [parent[i] == i or i in heads for i in range(len(parent))]
        labels = []
        for i in range(len(parent)):
            j = i if self_counts or stop[i] and parent[i] == i else parent[i]
            while not stop[j]:
                j = parent[j]
            labels.append(j)
        return labels
    return subtree_labels


PREDICTED_05 = {"column_sum_of_child_2": 0.1, "parents_change_when_m_is_set_to_1": False,
                "reversed_equals_ordinary_attention": False, "cycles_broken": 2, "roots": 3, "root_of_the_pair_4_5": 5,
                "tokens_after_the_second_pruning_layer": 33}

WRONG_05 = {
    "05.1": {"ordinary attention, A V": _reversed(transpose=False),
             "M gating the parents' columns": _reversed(gate="parent"),
             "the mask averaged over heads": _reversed(heads="mean")},
    "05.2": {"argmax along the rows": _parents(axis=1), "no cycle repair": _parents(repair=None),
             "the cycle broken at the member receiving least": _parents(repair="least"),
             "the cycle broken at the first member met": _parents(repair="first")},
    "05.3": {"floor, not round": _keep(count=int), "the lowest M kept": _keep(lowest=True),
             "indices in score order": _keep(order="score")},
    "05.4": {"heads by what they send (column sums)": _labels(heads_by="sent"),
             "the roots only as heads": _labels(heads_by="roots"),
             "the token itself not on its path": _labels(self_counts=False)},
    "05.5": {"a column sums to 1": {**PREDICTED_05, "column_sum_of_child_2": 1.0},
             "M moves the parents": {**PREDICTED_05, "parents_change_when_m_is_set_to_1": True},
             "keep of the survivors, not of the original tokens": {**PREDICTED_05,
                                                                    "tokens_after_the_second_pruning_layer": 28}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_05, PREDICTED_05
