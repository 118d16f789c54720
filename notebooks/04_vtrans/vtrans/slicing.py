"""Which units stay, and the model that keeps only them: the hard keep vectors (:func:`keeps`, :func:`apply_keep`,
:func:`kept_counts`), the baselines' scores (magnitude, importance, random) and their keep sets at a compressed
model's shape (:func:`keep_top`, :func:`keep_like`), and :func:`slice_model`, which folds μ into the weights and
removes the pruned rows and columns.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .bert import Attention, MaskedBert
from .data import _to
from .masks import Mask


def keeps(model: MaskedBert) -> dict[str, list[torch.Tensor]]:
    """The hard keep vectors of every mask: {"hidden": [H], "head": [per layer], "ffn": [...], "attn_gate": [...],
    "ffn_gate": [...]} (None where a layer has no such mask)."""
    get = lambda m: m.keep() if m is not None else None
    return {"hidden": [get(model.hidden_mask)],
            "head": [get(lay.head_mask) for lay in model.layers], "ffn": [get(lay.ffn_mask) for lay in model.layers],
            "attn_gate": [get(lay.attn_gate) for lay in model.layers],
            "ffn_gate": [get(lay.ffn_gate) for lay in model.layers]}


def _mask_lists(model: MaskedBert) -> dict[str, list[Mask | None]]:
    return {"hidden": [model.hidden_mask], "head": [lay.head_mask for lay in model.layers],
            "ffn": [lay.ffn_mask for lay in model.layers], "attn_gate": [lay.attn_gate for lay in model.layers],
            "ffn_gate": [lay.ffn_gate for lay in model.layers]}


def apply_keep(model: MaskedBert, keep: dict[str, list[torch.Tensor | None]]) -> MaskedBert:
    """Set the masks named in ``keep`` to hard 0/1 choices (μ = keep): how baselines and saved choices enter."""
    masks = _mask_lists(model)
    for kind, vectors in keep.items():
        for m, k in zip(masks[kind], vectors):
            if m is not None and k is not None:
                m.set_keep(k)
    return model


def keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Keep the ``n_keep`` highest scores (ties to the lower index)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(-scores.cpu(), stable=True)[:n_keep]] = True
    return keep


def _head_cols(attn: Attention, j: int) -> slice:
    return slice(j * attn.head_dim, (j + 1) * attn.head_dim)


@torch.no_grad()
def magnitude_scores(model: MaskedBert) -> dict[str, list[torch.Tensor]]:
    """Weight magnitudes: a head's Frobenius norm over its Q, K, V rows and O columns; an FFN neuron's L1 norm over
    its input row and output column; a hidden dimension's L1 norm over every weight that reads or writes it (which
    weights enter is our choice)."""
    heads, ffn = [], []
    hidden = model.word.weight.abs().sum(0) + model.pos.weight.abs().sum(0) + model.segment.weight.abs().sum(0)
    hidden = hidden + model.pooler.weight.abs().sum(0)
    for lay in model.layers:
        a, f = lay.attn, lay.ffn
        if a is not None:
            heads.append(torch.stack([
                torch.cat([w.weight[_head_cols(a, j)].flatten() for w in (a.q, a.k, a.v)]
                          + [a.o.weight[:, _head_cols(a, j)].flatten()]).norm() for j in range(a.heads)]))
            hidden = hidden + sum(w.weight.abs().sum(0) for w in (a.q, a.k, a.v)) + a.o.weight.abs().sum(1)
        else:
            heads.append(None)
        if f is not None:
            ffn.append(f.w1.weight.abs().sum(1) + f.w2.weight.abs().sum(0))
            hidden = hidden + f.w1.weight.abs().sum(0) + f.w2.weight.abs().sum(1)
        else:
            ffn.append(None)
    return {"hidden": [hidden], "head": heads, "ffn": ffn}


def importance_scores(model: MaskedBert, batches: Iterable[dict], loss_fn: Callable | None = None):
    """First-order importance |∂L/∂z| of a multiplicative gate z = 1 on every unit: Michel et al.'s head importance,
    and the first-order Taylor score Σ a·∂L/∂a for neurons and hidden dimensions. Summed over batches of the
    absolute batch gradient (per batch rather than per example: our choice)."""
    loss_fn = loss_fn or (lambda logits, b: F.cross_entropy(logits, b["labels"]))
    probe = copy.deepcopy(model).eval()
    probe.set_mask_mode("weighted")
    for m in probe.masks():
        m.set_keep(torch.ones_like(m.mu, dtype=torch.bool))
    mask_ids = {id(p) for p in probe.mask_parameters()}
    for p in probe.parameters():
        p.requires_grad_(id(p) in mask_ids)  # only the gates' gradients are wanted
    masks = _mask_lists(probe)
    total = {kind: [torch.zeros_like(m.mu) if m is not None else None for m in masks[kind]]
             for kind in ("hidden", "head", "ffn")}
    for b in batches:
        b = _to(b, probe.word.weight.device)
        probe.zero_grad()
        loss_fn(probe(b["input_ids"], b["attention_mask"]), b).backward()
        for kind, acc in total.items():
            for a, m in zip(acc, masks[kind]):
                if m is not None:
                    a += m.mu.grad.abs()
    return total


def random_scores(model: MaskedBert, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    draw = lambda n: torch.rand(n, generator=g)
    return {"hidden": [draw(model.hidden)],
            "head": [draw(lay.attn.heads) if lay.attn is not None else None for lay in model.layers],
            "ffn": [draw(lay.ffn.w1.out_features) if lay.ffn is not None else None for lay in model.layers]}


def kept_counts(model: MaskedBert) -> dict[str, list[int]]:
    """Units per structure that slicing keeps: {"hidden": [H], "head": [...], "ffn": [...]}, a sublayer whose gate
    is pruned counting 0."""
    k = keeps(model)
    on = lambda gate: gate is None or bool(gate.all())
    return {"hidden": [int(k["hidden"][0].sum()) if k["hidden"][0] is not None else model.hidden],
            "head": [int(h.sum()) if h is not None and on(g) else 0 for h, g in zip(k["head"], k["attn_gate"])],
            "ffn": [int(f.sum()) if f is not None and on(g) else 0 for f, g in zip(k["ffn"], k["ffn_gate"])]}


def keep_like(scores: dict[str, list[torch.Tensor]], counts: dict[str, list[int]]) -> dict[str, list[torch.Tensor]]:
    """The baselines' keep sets: per structure, the top-scored units, as many as ``counts`` (a compressed model's
    :func:`kept_counts`) says, so the baseline has exactly its size and shape (our choice: the allocation across
    structures is VTrans', only the choice of units is the baseline's)."""
    return {kind: [keep_top(s, n) for s, n in zip(scores[kind], counts[kind])] for kind in ("hidden", "head", "ffn")}


# ---------------------------------------------------------------- slicing


def _kept(m: Mask | None, n: int, device: torch.device):
    """Indices of the kept units and their deployed scales (all, scale 1, without a mask)."""
    if m is None or m.mode == "off":
        return torch.arange(n, device=device), torch.ones(n, device=device)
    keep = m.keep()
    return keep.nonzero().flatten(), m.weighted().detach()[keep]


@torch.no_grad()
def slice_model(model: MaskedBert) -> MaskedBert:
    """The dense small model equal to ``model`` under its deterministic masks (hard ⊙ μ): pruned hidden dimensions,
    heads, neurons and sublayers are removed, the μ's folded into the adjacent weights, and the result has no masks."""
    dev = model.word.weight.device
    K, mu_h = _kept(model.hidden_mask, model.hidden, dev)
    plan = []
    for lay in model.layers:
        heads, mu_a = _kept(lay.head_mask, lay.attn.heads, dev) if lay.attn is not None else (torch.arange(0), None)
        neurons, mu_f = _kept(lay.ffn_mask, lay.ffn.w1.out_features, dev) if lay.ffn is not None else (torch.arange(0),
                                                                                                 None)
        g_a = _kept(lay.attn_gate, 1, dev)[1] if lay.attn is not None else torch.zeros(0)
        g_f = _kept(lay.ffn_gate, 1, dev)[1] if lay.ffn is not None else torch.zeros(0)
        if g_a.numel() == 0:
            heads = torch.arange(0)
        if g_f.numel() == 0:
            neurons = torch.arange(0)
        plan.append((heads, mu_a, g_a, neurons, mu_f, g_f))
    small = MaskedBert(model.shape, len(K), [len(p[0]) for p in plan], [len(p[3]) for p in plan], model.eps,
                       model.dropout, kinds=())
    small.to(model.word.weight.dtype).to(model.word.weight.device)
    for name in ("word", "pos", "segment"):
        getattr(small, name).weight.copy_(getattr(model, name).weight[:, K])
    _copy_ln(small.emb_ln, model.emb_ln, K, mu_h)
    for new, old, (heads, mu_a, g_a, neurons, mu_f, g_f) in zip(small.layers, model.layers, plan):
        if len(heads):
            a, b = old.attn, new.attn
            cols = torch.cat([torch.arange(j * a.head_dim, (j + 1) * a.head_dim) for j in heads.tolist()])
            for w in ("q", "k", "v"):
                getattr(b, w).weight.copy_(getattr(a, w).weight[cols][:, K])
                getattr(b, w).bias.copy_(getattr(a, w).bias[cols])
            scale = mu_a.repeat_interleave(a.head_dim)
            b.o.weight.copy_(a.o.weight[K][:, cols] * scale * g_a)
            b.o.bias.copy_(a.o.bias[K] * g_a)
            _copy_ln(b.ln, a.ln, K, mu_h)
        if len(neurons):
            f, b = old.ffn, new.ffn
            b.w1.weight.copy_(f.w1.weight[neurons][:, K])
            b.w1.bias.copy_(f.w1.bias[neurons])
            b.w2.weight.copy_(f.w2.weight[K][:, neurons] * mu_f * g_f)
            b.w2.bias.copy_(f.w2.bias[K] * g_f)
            _copy_ln(b.ln, f.ln, K, mu_h)
    small.pooler.weight.copy_(model.pooler.weight[:, K])
    small.pooler.bias.copy_(model.pooler.bias)
    small.classifier.load_state_dict(model.classifier.state_dict())
    return small.train(model.training)


def _copy_ln(new: nn.LayerNorm, old: nn.LayerNorm, K, mu_h):
    # the hidden mask multiplies each LayerNorm's output: fold its μ into the LayerNorm's scale and shift
    new.weight.copy_(old.weight[K] * mu_h)
    new.bias.copy_(old.bias[K] * mu_h)
