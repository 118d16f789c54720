"""Notebook 4's probing of heads: task keywords from the data, the attention mass each head puts on [CLS], [SEP],
the token itself and keywords, the heads a compressed run keeps and the step at which each crossed the
threshold, and the AUC that compares pruned with kept heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .bert import MaskedBert
from .data import make_batches
from .masks import log_alpha


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
    curve, i.e. the Mann-Whitney U over the number of pairs; NaN when either group is empty (no pairs)."""
    if len(higher) == 0 or len(lower) == 0:
        return float("nan")
    # imported here, not at the top: scikit-learn takes seconds to import and only notebook 4 needs this function
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
