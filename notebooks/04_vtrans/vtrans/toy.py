"""Notebook 1's toy: one FFN sublayer of a frozen MiniLM as a task of its own. :func:`ffn_inputs` (the residual
stream entering a layer's FFN), :func:`pooled_activations` and :func:`sample_pooled` (per-token mask noise
averaged over a sentence, drawn exactly at the sentence level).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .bert import FFN, MaskedBert
from .masks import VIBMask


class _Captured(Exception):
    pass


@torch.no_grad()
def ffn_inputs(model: MaskedBert, layer: int, input_ids, attention_mask) -> torch.Tensor:
    """The residual stream entering the FFN sublayer of ``layer``: (batch, length, hidden). The forward pass stops
    there, so the layers above cost nothing."""
    box = {}

    def grab(module, args):
        box["h"] = args[0]
        raise _Captured

    hook = model.layers[layer].ffn.register_forward_pre_hook(grab)
    try:
        model.encode(input_ids, attention_mask)
    except _Captured:
        pass
    finally:
        hook.remove()
    return box["h"]


@torch.no_grad()
def pooled_activations(ffn: FFN, h: torch.Tensor, attention_mask: torch.Tensor):
    """Per sentence, the FFN neurons' activations a = gelu(W₁h + b₁) averaged over the real tokens, ā, and
    q = sqrt(Σₜ aₜ²) / n, both (batch, neurons).

    A mask z = μ + σ·εₜ drawn afresh for every token and then averaged over the sentence's n tokens gives, per
    neuron, (1/n) Σₜ aₜ zₜ = μ·ā + σ·(1/n) Σₜ aₜ εₜ, and the last sum is one Gaussian of standard deviation
    sqrt(Σₜ aₜ²): so μ·ā + σ·q·ε, with one ε per sentence, has exactly the distribution of the per-token draw
    (:func:`sample_pooled`)."""
    a = F.gelu(ffn.w1(h))
    m = attention_mask.unsqueeze(-1).to(a.dtype)
    n = m.sum(1)
    return (a * m).sum(1) / n, ((a * a * m).sum(1)).sqrt() / n


def sample_pooled(mask: VIBMask, abar: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The masked, token-averaged activations of :func:`pooled_activations`: sampled (per-token noise, drawn at
    the sentence level with the same distribution) in training mode, hard ⊙ μ in eval mode, unmasked if off."""
    mode = mask.current_mode()
    if mode == "off":
        return abar
    if mode == "weighted":
        return abar * mask.weighted()
    eps = torch.randn_like(abar)
    return mask.mu * abar + torch.exp(0.5 * mask.log_sigma2) * q * eps
