"""The 05_dependencyvit lab's checks (``exercises.ipynb``): each exercise's function against ``dependencyvit.py``, the
code the series runs, on fresh random cases from a seed; the integration exercise reads the trees of lab-sized
trained models with the student's function patched into the series' pipeline. ``course.check("05.2", fn)`` imports
this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dependencyvit as dv
import numpy as np
import torch
from prunebook import claims, config, course
from prunebook.course import exercise

# ---------------------------------------------------------------- 05.1 · reversed attention


def _operator_case(g) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (rows: each child's distribution over parents), P (each child's weights over heads), M in (0, 1), V."""
    b, h, n, d = course.randint(g, 1, 3), course.randint(g, 1, 4), course.randint(g, 2, 9), course.randint(g, 1, 5)
    a = torch.softmax(2 * torch.randn(b, h, n, n, generator=g, dtype=torch.float64), dim=-1)
    p = torch.softmax(2 * torch.randn(b, n, h, generator=g, dtype=torch.float64), dim=-1).transpose(1, 2)
    m = torch.rand(b, n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    v = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    return a, p.contiguous(), m, v


@exercise("05.1", "reversed_attention", points=2)
def _check_reversed_attention(student, g) -> int:
    """Goal: reversed attention: children send their values to parents, (A ⊙ P ⊙ M)ᵀ V, and the dependency mask

    Hint: notebook 01, section 'Ordinary and reversed attention' (the send equation): A's row i is child i's
    distribution over parents; scale row i by P_hi and M_i (the child's gates), transpose (out_j = Σ_i ...), multiply by
    V; the mask is the gated, transposed A summed over heads, so child i's column sums to M_i
    """
    n = 0
    for _ in range(12):
        a, p, m, v = _operator_case(g)
        b, h, t, d = v.shape
        case = (f"reversed_attention(a of shape {tuple(a.shape)}, p {tuple(p.shape)}, m {tuple(m.shape)}, "
                f"v {tuple(v.shape)})")
        kept = [x.clone() for x in (a, p, m, v)]
        got = course.call(student, case, a, p, m, v)
        n += 1
        assert all(torch.equal(x, y) for x, y in zip((a, p, m, v), kept)), f"{case} changed its inputs"
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (out, mask)"
        out, mask = (torch.as_tensor(x).detach().to(torch.float64) for x in got)
        assert tuple(out.shape) == (b, h, t, d), f"{case}: out has shape {tuple(out.shape)}, not {(b, h, t, d)}"
        assert tuple(mask.shape) == (b, t, t), f"{case}: the mask has shape {tuple(mask.shape)}, not {(b, t, t)}"
        want_out, want_mask = dv.reversed_attention(a, p, m, v)
        sums = mask.sum(-2)
        if course.rel_error(sums, m) > 1e-6:
            raise AssertionError(f"{case}: the mask's columns (children) sum to {course.brief(sums[0])} for the first "
                                 f"image, not to its M = {course.brief(m[0])}")
        if course.rel_error(mask, want_mask) > 1e-6:
            raise AssertionError(f"{case}: the dependency mask differs from the series' (relative error "
                                 f"{course.rel_error(mask, want_mask):.2g}); rows are parents, columns children")
        if course.rel_error(out, want_out) > 1e-6:
            plain = (a * p.unsqueeze(-1) * m[:, None, :, None]) @ v
            why = " (this is ordinary attention, A V: children gather instead of send)" if \
                course.rel_error(out, plain) < 1e-6 else ""
            raise AssertionError(f"{case}: out differs from the series' (relative error "
                                 f"{course.rel_error(out, want_out):.2g}){why}")
    return n


# ---------------------------------------------------------------- 05.2 · reading a tree off the mask


def _mask_case(g) -> torch.Tensor:
    """A dependency mask (rows = parents, columns = children) with a few strong parents, so that argmax parents form
    cycles and self-loops as trained masks do."""
    n = course.randint(g, 3, 16)
    mask = torch.rand(n, n, generator=g, dtype=torch.float64)
    hubs = torch.randint(0, n, (course.randint(g, 1, 3),), generator=g)
    mask[hubs] += course.uniform(g, 0.0, 0.6)  # a few tokens receive more
    return mask


@exercise("05.2", "tree_parents", points=2)
def _check_tree_parents(student, g) -> int:
    """Goal: the tree read off a dependency mask: argmax parent per child, cycles broken at the member that receives
    most

    Hint: notebook 02, section 'Reading a tree off a mask': parent[i] = argmax over the rows of column i (rows are
    parents); a token that picks itself is a root; follow parents from every token, and where the walk closes a cycle of
    two or more tokens, make the member with the largest row sum (mass received) a root; walk the tokens in index order
    and repair each cycle as it is found
    """
    n = 0
    cycles = 0
    for _ in range(24):
        mask = _mask_case(g)
        case = f"tree_parents(mask of shape {tuple(mask.shape)})"
        if mask.numel() <= 16:
            case += f"; mask {course.brief(mask)}"
        kept = mask.clone()
        got = course.call(student, case, mask)
        n += 1
        assert torch.equal(mask, kept), f"{case} changed the mask"
        got = np.asarray(got).astype(int).ravel()
        want = dv.extract_tree(mask)
        cycles += want.cycles
        assert got.shape == want.parent.shape, f"{case}: {got.shape[0]} parents, not one per token ({len(want.parent)})"
        if not np.array_equal(got, want.parent):
            i = int(np.flatnonzero(got != want.parent)[0])
            raw = want.raw_parent
            detail = ""
            if want.parent[i] == i and raw[i] != i:
                detail = f" (token {i} closes a cycle with its argmax parent {raw[i]}; the series makes it a root)"
            elif got[i] == i and raw[i] != i:
                detail = f" (you made token {i} a root; the series keeps its argmax parent {raw[i]})"
            raise AssertionError(f"{case}: token {i}'s parent is {got[i]}, the series reads {want.parent[i]}{detail}; "
                                 f"argmax parents {raw.tolist()}, the series' tree {want.parent.tolist()}")
    assert cycles > 0, "no case had a cycle (the check's generator should make some)"
    return n


# ---------------------------------------------------------------- 05.3 · DependencyViT-Lite: the tokens kept


@exercise("05.3", "lite_keep", points=2)
def _check_lite_keep(student, g) -> int:
    """Goal: DependencyViT-Lite's pruning: keep the tokens still sending (highest M), how many, in which order

    Hint: notebook 03, section 'Pruning at inference only': a pruning layer keeps K = max(1, round(N·keep)) of the N
    original tokens (round, not floor), the K of largest cumulative M (the leaves that rarely send are dropped), and
    returns their indices in their original (increasing) order
    """
    n = 0
    for _ in range(16):
        b, t = course.randint(g, 1, 4), course.randint(g, 4, 50)
        keep = (0.84, 0.68, 0.52, 0.36, 0.5, 0.7, 0.25)[course.randint(g, 0, 6)]
        m = torch.rand(b, t, generator=g)
        case = f"lite_keep(m of shape {(b, t)}, keep={keep})"
        kept = m.clone()
        got = course.call(student, case, m, keep)
        n += 1
        assert torch.equal(m, kept), f"{case} changed m"
        got = torch.as_tensor(got)
        k = max(1, round(t * keep))  # as dv.ViT.set_pruning counts
        assert got.ndim == 2 and got.shape[0] == b, f"{case}: return a B×K tensor of indices, got {tuple(got.shape)}"
        assert got.shape[1] == k, (f"{case}: {got.shape[1]} tokens kept, but max(1, round({t}·{keep})) = {k} "
                                   f"(the series rounds {t * keep:.2f})")
        want = dv.keep_tokens(m, k)
        if not torch.equal(got.long(), want):
            same_set = all(set(x.tolist()) == set(y.tolist()) for x, y in zip(got.long(), want))
            low = all(set(x.tolist()) == set(m[i].topk(k, largest=False).indices.tolist()) for i, x in enumerate(got))
            raise AssertionError(f"{case}: not the series' tokens: "
                                 + ("the right tokens in another order (return them in increasing position)"
                                    if same_set else "the lowest M kept (Lite drops them)" if low
                                    else f"you kept {got[0].tolist()} of the first image, the series "
                                         f"{want[0].tolist()}"))
    return n


# ---------------------------------------------------------------- 05.4 · subtrees, and the tree pipeline


def _label_case(g) -> tuple[torch.Tensor, int]:
    return _mask_case(g), course.randint(g, 1, 4)


@contextlib.contextmanager
def patched_labels(fn: Callable | None) -> Iterator[None]:
    """The series' tree pipeline (``dv.read_trees``, ``dv.chance_levels``) with ``dv.part_labels`` replaced by
    ``fn(mask, k)`` → labels, wrapped to return the series' ``Tree`` alongside; nothing replaced when None."""
    if fn is None:
        yield
        return
    original = dv.part_labels

    def part_labels(mask, k=3):
        return dv.extract_tree(mask), np.asarray(fn(torch.as_tensor(mask), k)).astype(int).ravel()

    dv.part_labels = part_labels
    try:
        yield
    finally:
        dv.part_labels = original


LAB_RUN = {"variant": "easy", "n_train": 256, "n_test": 32, "epochs": 1, "dim": 32, "depth": 2, "heads": 4, "k": 3}


def lab_models(run: dict, seeds: Sequence[int], device: str = "cpu") -> dict[tuple[str, int], Any]:
    """The two trained models (``dv.shapes_run``, the series' cached training on PartShapes) per seed."""
    arch = dict(patch=4, mlp_ratio=2.0, dim=run["dim"], depth=run["depth"], heads=run["heads"])
    recipe = dict(epochs=run["epochs"], batch_size=64, optimizer="adamw", lr=2e-3, weight_decay=0.05,
                  schedule="cosine")
    test = dv.shapes_split("test", run["n_test"], run["variant"], 4)
    out = {}
    for seed in seeds:
        for kind in ("dependencyvit", "vit"):
            result = dv.shapes_run(kind, run["variant"], seed, arch, recipe, run["n_train"], device, test=test)
            model = dv.build(kind, "partshapes", **arch)
            model.load_state_dict(result["state"])
            out[kind, seed] = model
    return out


def lab_readings(labels: Callable | None, models: dict, run: dict) -> dict[tuple[str, int], dict]:
    """Per model: ``dv.read_trees`` of its last block's masks on the test images, and the chance levels, with
    ``labels`` patched in as the subtree reading (the series' when None)."""
    test = dv.shapes_split("test", run["n_test"], run["variant"], 4)
    truth = dv.patch_labels(test.parts, 4).reshape(len(test), -1).numpy()
    out = {}
    with patched_labels(labels):
        for (kind, seed), model in models.items():
            masks, _ = dv.masks_of(model, test.x)
            trees = dv.read_trees(masks[-1:], truth, run["k"])
            chance = dv.chance_levels(masks[-1], truth, run["k"], np.random.default_rng(seed), n_null=20)
            out[kind, seed] = {"ari": trees["ari"][0], "nmi": trees["nmi"][0], "roots": trees["roots"][0], **chance}
    return out


def lab_claims(readings: dict, run: dict = LAB_RUN, name: str = "lab-05.4"):
    """The claims table of a lab-sized run, in the shape of notebook 02's: the DependencyViT's subtrees against the
    parts, compared with the plain ViT read the same way (paired over seeds) and with a random tree (a control)."""
    seeds = sorted({s for _, s in readings})
    dep = [readings["dependencyvit", s] for s in seeds]
    vit = [readings["vit", s] for s in seeds]
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    epochs = f"{run['epochs']} epoch{'s' * (run['epochs'] != 1)}"
    small = (f"a lab-sized run ({run['n_train']} images, {epochs}, depth {run['depth']}, {len(seeds)} seeds) "
             "cannot test a claim about trained ImageNet models")
    book.add("parts-vs-vit", "the DependencyViT's subtrees match the parts better than the plain ViT's", "abstract",
             "parts are subtrees", decision=claims.paired([r["ari"] for r in dep], [r["ari"] for r in vit], side=">",
                                                          digits=3),
             kind="paper", faithful=False, unfaithful_because=small)
    book.add("parts-vs-random-tree", "the DependencyViT's subtrees beat a random tree's", "ours", "above",
             decision=claims.paired([r["ari"] for r in dep], [r["random_tree"] for r in dep], side=">", digits=3),
             kind="control")
    book.add("roots", "trees read off the last block have several roots", "ours", "> 1 root",
             decision=claims.exceeds([r["roots"] for r in dep], threshold=1.0, digits=2), kind="check")
    return book.table()


@exercise("05.4", "subtree_labels", points=3)
def _check_subtree_labels(student, g) -> int:
    """Goal: parts as subtrees: the partition of the tokens under the k hubs, and that one function in the series' tree
    pipeline gives the same claims table

    Hint: notebook 02, section 'Reading a tree off a mask' (parts as subtrees): read the tree with your tree_parents;
    the heads are the k tokens with the largest row sums of the mask (mass received; a stable sort, ties by index); each
    token's label is the first head or root met walking up from the token itself (the token included). It calls your
    tree_parents: 05.2 must pass first
    """
    n = 0
    for _ in range(16):
        mask, k = _label_case(g)
        case = f"subtree_labels(mask of shape {tuple(mask.shape)}, k={k})"
        got = np.asarray(course.call(student, case, mask.clone(), k)).astype(int).ravel()
        n += 1
        tree, want = dv.part_labels(mask, k)
        assert got.shape == want.shape, f"{case}: {got.shape[0]} labels, not one per token ({len(want)})"
        if not np.array_equal(got, want):
            received = mask.sum(1).numpy()
            heads = np.argsort(-received, kind="stable")[:k].tolist()
            raise AssertionError(f"{case}: labels {got.tolist()}, the series' {want.tolist()} (the tree's parents "
                                 f"{tree.parent.tolist()}, heads {heads}: the {k} tokens receiving most)")
    # the integration: the series' tree pipeline with the student's reading, against the reference's, same models
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    models = lab_models(LAB_RUN, seeds)
    reference = lab_readings(None, models, LAB_RUN)
    mine = lab_readings(student, models, LAB_RUN)
    course.same_runs(mine, reference, lambda key: f"the tree pipeline (a {key[0]} trained on {LAB_RUN['n_train']} "
                                                  f"PartShapes images, seed {key[1]}) with your reading",
                     names=("ari", "nmi", "random_tree"))
    course.same_claims_table(lab_claims(mine), lab_claims(reference), "your reading")
    return n + len(seeds)


# ---------------------------------------------------------------- 05.5 · predict, then run


def dependency_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment, on hand-set and seeded tensors. Deterministic; each entry is one
    prediction.

    Goal: what M does and does not change in the mask and the tree, how cycles become roots, and how many tokens Lite
    keeps

    Hint: notebook 01 ('The operator, checked on tensors set by hand': the columns sum to M), notebook 02 ('Reading a
    tree off a mask': cycles) and notebook 03 ('Pruning at inference only': Lite's counts) explain them
    """
    g = torch.Generator().manual_seed(0)
    b, h, n, d = 1, 4, 6, 3
    a = torch.softmax(torch.randn(b, h, n, n, generator=g, dtype=torch.float64), dim=-1)
    p = torch.softmax(torch.randn(b, n, h, generator=g, dtype=torch.float64), dim=-1).transpose(1, 2)
    m = torch.tensor([[0.9, 0.5, 0.1, 0.8, 0.3, 0.6]], dtype=torch.float64)
    v = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    out, mask = dv.reversed_attention(a, p, m, v)
    _, mask_m1 = dv.reversed_attention(a, p, torch.ones_like(m), v)
    out_ = {"column_sum_of_child_2": round(float(mask[0, :, 2].sum()), 6)}
    out_["parents_change_when_m_is_set_to_1"] = bool((dv.parents(mask) != dv.parents(mask_m1)).any())
    out_["reversed_equals_ordinary_attention"] = bool(torch.allclose(out, a @ v))
    # a hand-set mask: argmax parents 0→1, 1→0, 2→2, 3→2, 4→5, 5→4 (rows = parents, columns = children)
    hand = torch.full((6, 6), 0.05, dtype=torch.float64)
    for child, parent, w in ((0, 1, 0.6), (1, 0, 0.5), (2, 2, 0.7), (3, 2, 0.4), (4, 5, 0.9), (5, 4, 0.3)):
        hand[parent, child] = w
    tree = dv.extract_tree(hand)
    out_["cycles_broken"] = tree.cycles
    out_["roots"] = len(tree.roots)
    out_["root_of_the_pair_4_5"] = int(tree.subtrees()[4])
    ratios = dv.lite_keep_ratios(2, 0.16)
    model = dv.build("dependencyvit", "fashion_mnist", dim=16, depth=4, heads=2, prune_at=(1, 3), keep=ratios)
    tr = model.trace(torch.zeros(1, 1, 28, 28))
    out_["tokens_after_the_second_pruning_layer"] = int(tr.kept[3].shape[1])
    return out_


course.predictions_exercise("05.5", dependency_experiment)
