"""What a model costs: its parameters by :func:`size_formula` (embeddings included; exact on hard counts,
differentiable on soft ones), the Lagrangian that steers the expected size to a target and the target's warm-up;
MACs and CPU latency of a sliced model (:func:`macs`, :func:`latency`, :func:`shaped_like`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .bert import MaskedBert, Shape
from .masks import BETA, Mask


def size_formula(shape: Shape, hidden, heads: Sequence, inner: Sequence, attn_on: Sequence, ffn_on: Sequence):
    """Parameters of a BERT with these widths, **embeddings included** (the word table alone is half of MiniLM).
    Works on ints (an exact count) and on soft counts (the differentiable size proxy). ``attn_on``/``ffn_on``
    switch each sublayer on (1) or off (0); a sublayer that is off loses its LayerNorm too."""
    H, dh, P = hidden, shape.head_dim, shape.pooler
    size = (shape.vocab + shape.max_positions + shape.type_vocab) * H + 2 * H
    for h, f, a_on, f_on in zip(heads, inner, attn_on, ffn_on):
        size = size + a_on * (4 * H * h * dh + 3 * h * dh + 3 * H)  # q, k, v, o with biases; LayerNorm
        size = size + f_on * (2 * H * f + f + 3 * H)  # two FFN matrices with biases; LayerNorm
    return size + H * P + P + P * shape.num_labels + shape.num_labels  # pooler and classifier


def count_params(model: MaskedBert) -> int:
    """The model's parameters, masks excluded."""
    return sum(p.numel() for p in model.weight_parameters())


def full_size(model: MaskedBert) -> int:
    heads = [lay.attn.heads if lay.attn is not None else 0 for lay in model.layers]
    inner = [lay.ffn.w1.out_features if lay.ffn is not None else 0 for lay in model.layers]
    return int(size_formula(model.shape, model.hidden, heads, inner, [int(h > 0) for h in heads],
                            [int(f > 0) for f in inner]))


def _counts(model: MaskedBert, fn: Callable[[Mask], torch.Tensor]):
    def units(m: Mask | None, n: int):
        return fn(m).sum() if m is not None else torch.tensor(float(n))

    H = units(model.hidden_mask, model.hidden)
    heads, inner, a_on, f_on = [], [], [], []
    for lay in model.layers:
        heads.append(units(lay.head_mask, lay.attn.heads) if lay.attn is not None else torch.tensor(0.0))
        inner.append(units(lay.ffn_mask, lay.ffn.w1.out_features) if lay.ffn is not None else torch.tensor(0.0))
        a_on.append(units(lay.attn_gate, 1) if lay.attn is not None else torch.tensor(0.0))
        f_on.append(units(lay.ffn_gate, 1) if lay.ffn is not None else torch.tensor(0.0))
    return H, heads, inner, a_on, f_on


def expected_size(model: MaskedBert, beta: float = BETA) -> torch.Tensor:
    """The differentiable size proxy: :func:`size_formula` on the soft kept counts Σ sigmoid(−β log α)."""
    return size_formula(model.shape, *_counts(model, lambda m: m.soft(beta)))


def hard_size(model: MaskedBert) -> int:
    """The size the model will have once sliced (hard masks, embeddings included)."""
    H, heads, inner, a_on, f_on = _counts(model, lambda m: m.keep().float())
    a_on = [float(a > 0 and h > 0) for a, h in zip(a_on, heads)]  # a sublayer left with no unit is removed
    f_on = [float(a > 0 and f > 0) for a, f in zip(f_on, inner)]
    return int(round(float(size_formula(model.shape, H, heads, inner, a_on, f_on))))


def sparsity(size, full: int):
    """The fraction of the parameters removed, embeddings included."""
    return 1 - size / full


def lagrangian_term(s_hat: torch.Tensor, t: float, lambda_1: torch.Tensor, lambda_2: torch.Tensor) -> torch.Tensor:
    """The size constraint's term λ₁(ŝ − t) + λ₂(ŝ − t)² (CoFi, TVA-Prune)."""
    # ŝ − t: how far the expected sparsity ŝ (embeddings included) lies from the target t
    d = s_hat - t
    # λ₁(ŝ − t): the linear multiplier; + λ₂(ŝ − t)²: the quadratic one
    return lambda_1 * d + lambda_2 * d * d


class Lagrangian(nn.Module):
    """The two multipliers λ₁, λ₂ of :func:`lagrangian_term`, both starting at 0. The model minimises the term, the
    λ's maximise it (see :func:`lagrangian_optimizer`): while the model is less sparse than the target, λ₁ goes
    negative and the term rewards sparsity; past the target, the reverse."""

    def __init__(self):
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    def forward(self, s_hat: torch.Tensor, target: float) -> torch.Tensor:
        return lagrangian_term(s_hat, target, self.lambda_1, self.lambda_2)


def lagrangian_optimizer(lag: Lagrangian, lr: float = 0.1) -> torch.optim.Optimizer:
    """Gradient ascent on the λ's (lr 0.1 as in TVA-Prune's code; CoFi uses 0.01)."""
    return torch.optim.AdamW(lag.parameters(), lr=lr, weight_decay=0.0, maximize=True)


def target_sparsity(step: int, warmup_steps: int, final: float, start: float = 0.0) -> float:
    """The target rises linearly from ``start`` to ``final`` over ``warmup_steps`` and then stays (CoFi, TVA-Prune;
    our reading of "iterative")."""
    if warmup_steps <= 0:
        return final
    return start + (final - start) * min(1.0, step / warmup_steps)


# ---------------------------------------------------------------- what a sliced model costs


def shaped_like(model: MaskedBert, counts: dict[str, list[int]]) -> MaskedBert:
    """A model with no masks and the widths of ``counts`` (random weights): for latency, which does not depend on
    the values."""
    return MaskedBert(model.shape, counts["hidden"][0], counts["head"], counts["ffn"], model.eps, model.dropout,
                      kinds=()).eval()


def macs(model: MaskedBert, length: int) -> int:
    """Multiply-accumulates of one forward pass over a sequence of ``length`` tokens, matrix products only: Q, K, V
    and O, the attention scores and the weighted values, the FFN, the pooler and the classifier (of a model without
    masks, such as a sliced one)."""
    H, dh, P = model.hidden, model.shape.head_dim, model.shape.pooler
    total = H * P + P * model.shape.num_labels
    for lay in model.layers:
        if lay.attn is not None:
            width = lay.attn.heads * dh
            total += 4 * length * H * width + 2 * length * length * width
        if lay.ffn is not None:
            total += 2 * length * H * lay.ffn.w1.out_features
    return total


@torch.no_grad()
def latency(model: MaskedBert, batch: dict[str, torch.Tensor], repeats: int = 20) -> float:
    """Median seconds of one forward pass over ``batch`` (after one warm-up pass)."""
    model.eval()
    model(batch["input_ids"], batch["attention_mask"])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(batch["input_ids"], batch["attention_mask"])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
