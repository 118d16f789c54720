"""A post-LN BERT sequence classifier with masks on hidden (embedding) dimensions, attention heads, FFN neurons and
whole MHA / FFN sublayers (:class:`MaskedBert`), exactly the ``transformers`` model with the masks off, and
:func:`from_hf`, which builds one from a ``transformers`` BERT.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .masks import KINDS, Mask, VIBMask


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
