"""The 04_vtrans lab's checks (``exercises.ipynb``): each exercise's function against the ``vtrans`` package, the code
the series runs, on fresh random cases from a seed; the integration part of 04.3 runs the series' pruning phase
(``V.compress``) on a tiny BERT and reads its sizes with the student's formula patched in. ``course.check("04.2",
fn)`` imports this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import vtrans as V  # the lab's folder (a handout or the grader's copy holds the package too)
import vtrans.sizes
from prunebook import claims, config, course
from prunebook.course import exercise

# ---------------------------------------------------------------- 04.1 · the VIB mask's KL term


def _mask_params(g, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and log σ² of a VIB mask mid-training: some units kept (μ²/σ² > 1), some pruned, some μ = 0 exactly, and
    some exactly on the threshold log α = 0."""
    n = n or course.randint(g, 3, 20)
    mu = torch.randn(n, generator=g, dtype=torch.float64) * course.uniform(g, 0.1, 1.5)
    log_sigma2 = torch.randn(n, generator=g, dtype=torch.float64) * 2 - 2
    mu[torch.rand(n, generator=g) < 0.15] = 0.0
    edge = torch.rand(n, generator=g) < 0.2
    log_sigma2[edge] = torch.log(mu[edge] ** 2 + 1e-8)  # log α = 0: exactly on the threshold
    return mu, log_sigma2


@exercise("04.1", "vib_kl", points=1)
def _check_vib_kl(student, g) -> int:
    """Goal: the compression term of a VIB mask: Dai et al.'s closed-form ½ Σ log(1 + μ²/σ²)

    Hint: notebook 01, section 'The mask' (the closed-form KL): for z = μ + σ·ε with the prior's variance optimised out,
    the term is ½ Σ_i log(1 + μ_i²/σ_i²), summed over the units (not averaged), with σ² = exp(log σ²), the variance (not
    the standard deviation)
    """
    n = 0
    for _ in range(16):
        mu, log_sigma2 = _mask_params(g)
        case = f"vib_kl(mu of {mu.numel()} units, log_sigma2)"
        if mu.numel() <= 6:
            case += f"; mu {course.brief(mu)}, log_sigma2 {course.brief(log_sigma2)}"
        kept = mu.clone(), log_sigma2.clone()
        got = course.call(student, case, mu, log_sigma2)
        n += 1
        assert torch.equal(mu, kept[0]) and torch.equal(log_sigma2, kept[1]), f"{case} changed its inputs"
        mask = V.VIBMask(mu.numel()).double()
        with torch.no_grad():
            mask.mu.copy_(mu)
            mask.log_sigma2.copy_(log_sigma2)
        want = float(mask.kl().detach())
        assert torch.as_tensor(got).numel() == 1, f"{case}: return one number (the sum over units), not a vector"
        value = float(torch.as_tensor(got).detach())
        assert course.rel_error(value, want) < 1e-9, f"{case}: KL = {value:.6g}, the series' VIBMask.kl() = {want:.6g}"
    return n


# ---------------------------------------------------------------- 04.2 · the keep rule


@exercise("04.2", "vib_keep", points=1)
def _check_vib_keep(student, g) -> int:
    """Goal: which units a VIB mask keeps: log α = log σ² − log μ² below 0, i.e. μ²/σ² > 1, strict

    Hint: notebook 01, sections 'The mask' and 'The mask on units set by hand': log α = log σ² − log(μ² + 1e-8) (the
    1e-8 keeps μ = 0 finite); a unit stays iff log α < 0, strictly (log α = 0 is pruned); return a bool tensor
    """
    n = 0
    for _ in range(16):
        mu, log_sigma2 = _mask_params(g)
        case = f"vib_keep(mu of {mu.numel()} units, log_sigma2)"
        got = torch.as_tensor(course.call(student, case, mu.clone(), log_sigma2.clone()))
        n += 1
        want = V.log_alpha(mu, log_sigma2) < 0
        assert got.shape == want.shape, f"{case}: shape {tuple(got.shape)}, not {tuple(want.shape)}"
        assert got.dtype == torch.bool, f"{case}: return a bool tensor, not {got.dtype}"
        if not torch.equal(got, want):
            i = int((got != want).nonzero()[0])
            la = float(V.log_alpha(mu, log_sigma2)[i])
            raise AssertionError(f"{case}: unit {i} (μ = {float(mu[i]):.4g}, log σ² = {float(log_sigma2[i]):.4g}, "
                                 f"log α = {la:.4g}) is {'kept' if bool(got[i]) else 'pruned'}; the series "
                                 f"{'keeps' if bool(want[i]) else 'prunes'} it")
    return n


# ---------------------------------------------------------------- 04.3 · the size of a masked BERT


def _shape_case(g) -> tuple[V.Shape, int, list[int], list[int], list[int], list[int]]:
    shape = V.Shape(vocab=course.randint(g, 10, 200), max_positions=course.randint(g, 4, 64),
                    type_vocab=course.randint(g, 1, 3), head_dim=course.randint(g, 2, 8),
                    pooler=course.randint(g, 4, 32), num_labels=course.randint(g, 2, 5))
    layers = course.randint(g, 1, 4)
    hidden = course.randint(g, 4, 48)
    heads = [course.randint(g, 0, 6) for _ in range(layers)]
    inner = [course.randint(g, 0, 64) for _ in range(layers)]
    attn_on = [int(h > 0 and course.randint(g, 0, 4) > 0) for h in heads]
    ffn_on = [int(f > 0 and course.randint(g, 0, 4) > 0) for f in inner]
    return shape, hidden, heads, inner, attn_on, ffn_on


@contextlib.contextmanager
def patched_size(fn: Callable | None) -> Iterator[None]:
    """The series' size counts (``V.full_size``, ``V.hard_size``, ``V.expected_size``) with ``size_formula`` replaced
    by ``fn``; nothing replaced when None."""
    if fn is None:
        yield
        return
    original = vtrans.sizes.size_formula
    vtrans.sizes.size_formula = fn
    try:
        yield
    finally:
        vtrans.sizes.size_formula = original


LAB_SHAPE = V.Shape(vocab=40, max_positions=16, type_vocab=2, head_dim=4, pooler=16, num_labels=3)
LAB_RUN = {"hidden": 16, "heads": 4, "inner": 24, "layers": 2, "n_seq": 64, "length": 8, "steps": 120,
           "target": 0.3, "tolerance": 0.1}


def lab_compressions(run: dict, seeds: Sequence[int]) -> dict[int, Any]:
    """The series' pruning phase (``V.compress``: masks only, the Lagrangian to ``run["target"]``) on a tiny random
    BERT distilling a random teacher of the same shape, one per seed: the compressed models."""
    out = {}
    quiet = os.environ.get("PRUNEBOOK_PROGRESS")
    os.environ["PRUNEBOOK_PROGRESS"] = "0"  # no bar per tiny run
    try:
        for seed in seeds:
            out[seed] = _compressed(run, seed)
    finally:
        if quiet is None:
            os.environ.pop("PRUNEBOOK_PROGRESS", None)
        else:
            os.environ["PRUNEBOOK_PROGRESS"] = quiet
    return out


def _compressed(run: dict, seed: int) -> Any:
    torch.manual_seed(seed)
    widths = ([run["heads"]] * run["layers"], [run["inner"]] * run["layers"])
    teacher = V.MaskedBert(LAB_SHAPE, run["hidden"], *widths, dropout=0.0, kinds=()).eval()
    model = V.MaskedBert(LAB_SHAPE, run["hidden"], *widths, dropout=0.0)
    model.load_state_dict(teacher.state_dict(), strict=False)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, LAB_SHAPE.vocab, (run["n_seq"], run["length"]), generator=g).tolist()
    with torch.no_grad():
        logits = teacher(torch.tensor(ids))
    V.compress(model, ids, logits, target=run["target"], steps=run["steps"], warmup=run["steps"] // 4,
               batch_size=16, seed=seed, mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-6)
    return model.eval()


def lab_sizes(size_formula: Callable | None, models: dict[int, Any]) -> dict[int, dict]:
    """Per compressed model: its full and hard size and the sparsity reached, counted with ``size_formula`` patched
    into the series (the series' own when None), and the parameters of the model ``V.slice_model`` cuts out."""
    out = {}
    with patched_size(size_formula):
        for seed, model in models.items():
            full, hard = int(V.full_size(model)), int(V.hard_size(model))
            out[seed] = {"full": full, "hard": hard, "sparsity": V.sparsity(hard, full),
                         "sliced": V.count_params(V.slice_model(model))}
    return out


def lab_claims(sizes: dict[int, dict], run: dict = LAB_RUN, name: str = "lab-04.3"):
    """The claims table of the lab-sized run, in the shape of notebooks 01-02's size checks."""
    seeds = sorted(sizes)
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    same = all(sizes[s]["hard"] == sizes[s]["sliced"] for s in seeds)
    book.add("hard-size-is-sliced-size", "the size counted from the hard masks is the sliced model's parameter count",
             "ours", "equal", "equal on every seed" if same else
             "; ".join(f"seed {s}: {sizes[s]['hard']} vs {sizes[s]['sliced']}" for s in seeds), holds=same,
             kind="check")
    book.add("reaches-target", f"the pruning phase ends within {run['tolerance']:.0%} of the target sparsity",
             "ours", run["target"],
             decision=claims.every_run([sizes[s]["sparsity"] for s in seeds], target=run["target"],
                                       tolerance=run["tolerance"], digits=3),
             kind="control")
    return book.table()


@exercise("04.3", "bert_size", points=3)
def _check_bert_size(student, g) -> int:
    """Goal: the size of a BERT with pruned widths, embeddings included, and that this formula, put into the series'
    pruning pipeline, counts what slicing really leaves

    Hint: notebook 01, section 'Size: the hard count and its smooth proxy' (size_formula): (vocab + positions + types)·H
    + 2H for the embeddings and their LayerNorm; per layer, when its MHA is on, 4·H·h·dh + 3·h·dh + 3·H (q, k, v, o with
    biases, a LayerNorm of 2H plus o's bias H), when its FFN is on, 2·H·f + f + 3·H; then the pooler H·P + P and the
    classifier P·labels + labels. A sublayer that is off costs nothing, its LayerNorm included
    """
    n = 0
    for _ in range(24):
        shape, hidden, heads, inner, attn_on, ffn_on = _shape_case(g)
        case = (f"bert_size({shape}, hidden={hidden}, heads={heads}, inner={inner}, attn_on={attn_on}, "
                f"ffn_on={ffn_on})")
        got = course.call(student, case, shape, hidden, list(heads), list(inner), list(attn_on), list(ffn_on))
        n += 1
        want = int(V.size_formula(shape, hidden, heads, inner, attn_on, ffn_on))
        real = ""
        if all(attn_on[i] == int(heads[i] > 0) and ffn_on[i] == int(inner[i] > 0) for i in range(len(heads))):
            built = V.MaskedBert(shape, hidden, heads, inner, kinds=())
            real = f" (a MaskedBert of these widths has {V.count_params(built)} parameters)"
        assert int(round(float(got))) == want, f"{case}: {float(got):.0f} parameters, the series counts {want}{real}"
    # the integration: the series' pruning phase, its sizes read with the student's formula
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    models = lab_compressions(LAB_RUN, seeds)
    reference = lab_sizes(None, models)
    mine = lab_sizes(student, models)
    for seed in seeds:
        for key in ("full", "hard", "sparsity"):
            assert mine[seed][key] == reference[seed][key], (
                f"the pruning phase (a 2-layer BERT 16 wide, seed {seed}) counted with your formula: {key} = "
                f"{mine[seed][key]}, the reference counts {reference[seed][key]}")
    course.same_claims_table(lab_claims(mine), lab_claims(reference), "your formula")
    return n + len(seeds)


# ---------------------------------------------------------------- 04.4 · slicing heads out


def _attention_case(g) -> tuple[V.bert.Attention, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    heads, dh = course.randint(g, 2, 6), course.randint(g, 2, 5)
    hidden = course.randint(g, 4, 16)
    attn = V.bert.Attention(hidden, heads, dh, 1e-12, 0.0).double().eval()
    keep = torch.rand(heads, generator=g) < 0.6
    if not keep.any():
        keep[course.randint(g, 0, heads - 1)] = True
    h = torch.randn(course.randint(g, 1, 3), course.randint(g, 2, 6), hidden, generator=g, dtype=torch.float64)
    bias = torch.zeros(h.shape[0], 1, 1, h.shape[1], dtype=torch.float64)
    return attn, keep, h, bias


@exercise("04.4", "slice_heads", points=2)
def _check_slice_heads(student, g) -> int:
    """Goal: slicing: the pruned heads' rows of Q, K, V and columns of O removed, so the model really shrinks and
    computes the same

    Hint: notebook 02, section 'The sliced models: parameters, MACs and CPU latency', and V.slice_model: head j owns the
    columns j·dh … (j+1)·dh − 1 of the concatenated heads, i.e. those rows (and bias entries) of q, k and v and those
    columns of o; o's bias and the LayerNorm keep their hidden width; build a V.bert.Attention with the kept number of
    heads
    """
    n = 0
    for _ in range(12):
        attn, keep, h, bias = _attention_case(g)
        case = (f"slice_heads(Attention(hidden={attn.o.out_features}, heads={attn.heads}, head_dim={attn.head_dim}), "
                f"keep={keep.tolist()})")
        before = {k: v.clone() for k, v in attn.state_dict().items()}
        small = course.call(student, case, attn, keep.clone())
        n += 1
        assert all(torch.equal(v, before[k]) for k, v in attn.state_dict().items()), f"{case} changed the module"
        assert isinstance(small, V.bert.Attention), f"{case}: return a V.bert.Attention, not {type(small).__name__}"
        k = int(keep.sum())
        assert small.heads == k, f"{case}: {small.heads} heads, not the {k} kept"
        shape = (attn.o.out_features, k * attn.head_dim)
        got_shape = tuple(small.o.weight.shape)
        assert got_shape == shape, f"{case}: o's weight has shape {got_shape}, not {shape}"
        mask = V.VIBMask(attn.heads).double()
        mask.set_keep(keep)
        mask.mode = "weighted"
        with torch.no_grad():
            want = attn(h, bias, mask)
            got = small.double().eval()(h, bias, None)
        assert course.rel_error(got, want) < 1e-9, (
            f"{case}: the sliced module's output differs from the original's with the pruned heads masked (relative "
            f"error {course.rel_error(got, want):.2g})")
    return n


# ---------------------------------------------------------------- 04.5 · predict, then run

MINILM_SHAPE = V.Shape(vocab=30522, max_positions=512, type_vocab=2, head_dim=32, pooler=384, num_labels=2)


def vtrans_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment: counts on MiniLM-L6's shape (6 layers, 384 wide, 12 heads of 32, FFN
    1,536) by the series' size formula, and two VIB units. Deterministic; each entry is one prediction.

    Goal: where a BERT's parameters are (half of MiniLM is its embedding table), what one head and one hidden dimension
    cost, and what the KL and the keep rule say about two units

    Hint: notebook 01 (the size formula, the KL and the keep rule) explains them
    """
    layers, H, heads, f = 6, 384, 12, 1536

    def size(hidden=H, heads_=None, inner=None):
        heads_ = heads_ or [heads] * layers
        inner = inner or [f] * layers
        return int(V.size_formula(MINILM_SHAPE, hidden, heads_, inner, [int(h > 0) for h in heads_],
                                  [int(x > 0) for x in inner]))

    full = size()
    embeddings = (MINILM_SHAPE.vocab + MINILM_SHAPE.max_positions + MINILM_SHAPE.type_vocab) * H + 2 * H
    out = {"minilm_parameters_in_millions": round(full / 1e6, 1),
           "embedding_share_percent": round(100 * embeddings / full),
           "saved_by_one_head": full - size(heads_=[heads - 1] + [heads] * (layers - 1)),
           "saved_by_one_hidden_dimension": full - size(hidden=H - 1),
           "sparsity_percent_with_every_ffn_removed": round(100 * (1 - size(inner=[0] * layers) / full))}
    mask = V.VIBMask(2)
    with torch.no_grad():
        mask.mu.copy_(torch.tensor([0.0, 0.6]))
        mask.log_sigma2.copy_(torch.log(torch.tensor([0.5, 0.25])))
    with torch.no_grad():
        out["kl_of_the_unit_with_mu_0"] = round(float(0.5 * torch.log1p(mask.mu[0] ** 2 / mask.log_sigma2[0].exp())), 6)
        out["kept_mu_0_6_sigma2_0_25"] = bool(mask.keep()[1])
    return out


course.predictions_exercise("04.5", vtrans_experiment)
