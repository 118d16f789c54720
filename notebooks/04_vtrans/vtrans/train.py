"""Training: the pruning phase's equations (:func:`distill_loss`, :func:`compression_loss`, :func:`in_window`,
:func:`linear_decay`), :func:`compress` (the pruning phase, TVA-Prune's VIB trainer with the weights co-trained)
and its :class:`Schedule`, :func:`finetune` (the teacher, and the sliced models distilled from it), TVA-Prune's
window and KL multipliers, :func:`predict` and :func:`accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from prunebook import progress
from prunebook.config import dry_steps

from .bert import MaskedBert
from .data import _to, batch_stream, pad_batch
from .masks import BETA, VIBMask
from .sizes import Lagrangian, expected_size, full_size, hard_size, lagrangian_optimizer, sparsity, target_sparsity


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """The logit term of CoFi's distillation, T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), T = 2 (CoFi)."""
    T = temperature
    # log softmax(z_s/T), log softmax(z_t/T): the student's and the teacher's softened log-probabilities
    log_p_s, log_p_t = F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1)
    # T² · KL(p_t ‖ p_s), averaged over the batch: T² keeps the gradient's scale independent of T
    return T * T * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def compression_loss(task: torch.Tensor, kl: torch.Tensor, lagrangian: torch.Tensor, gamma: float) -> torch.Tensor:
    """The pruning phase's objective 𝓛 = 𝓛_distil + γ · Σⱼ mⱼ KLⱼ + λ₁(ŝ − t) + λ₂(ŝ − t)², which the masks (and
    weights) minimise and the λ's maximise."""
    # task: 𝓛_distil, the distillation loss (:func:`distill_loss`)
    # gamma * kl: γ · Σⱼ mⱼ KLⱼ, the VIB term, mⱼ TVA-Prune's weight per kind of mask (:func:`kl_multipliers`)
    # lagrangian: λ₁(ŝ − t) + λ₂(ŝ − t)², the size constraint (:func:`lagrangian_term`)
    return task + gamma * kl + lagrangian


def in_window(s_hat: float, t: float, window: tuple[float, float]) -> bool:
    """TVA-Prune's selection test: is the expected sparsity ŝ inside [t − below, t + above]?"""
    below, above = window
    # −below ≤ ŝ − t ≤ above
    return -below <= s_hat - t <= above


def linear_decay(k: int, steps: int) -> float:
    """The learning rate's factor at step k: 1 − k/steps, down to 0 at the end of the pass (no warm-up)."""
    return max(0.0, 1 - k / steps)


@dataclass(frozen=True)
class Schedule:
    """How the pruning phase runs (TVA-Prune's ``trainer_vib.py``): ``steps`` batches of ``batch_size``, the target
    warmed up over ``warmup`` steps, AdamW on the masks at ``mask_lr`` (and on the weights at ``weight_lr``, none
    when 0), gradient ascent on the λ's at ``lambda_lr``, gradients clipped at norm ``clip``; the selection checks
    ``window`` = (below, above) around the target at most once every ``eval_gap`` steps (no selection when None)."""

    steps: int
    warmup: int
    batch_size: int
    mask_lr: float
    lambda_lr: float
    weight_lr: float = 0.0
    clip: float | None = 1.0
    window: tuple[float, float] | None = None
    eval_gap: int = 50


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


def compress(model: MaskedBert, ids: Sequence[Sequence[int]], teacher_logits: torch.Tensor,
             schedule: Schedule | None = None, *, target: float, seed: int, kl_weight: float, beta: float = BETA,
             kl_mult: dict[str, float] | None = None, val: tuple | None = None, desc: str | None = None,
             **settings) -> list[dict]:
    """The pruning phase, as the authors' VIB trainer runs it (TVA-Prune's ``trainer_vib.py``): masks (and, when
    ``schedule.weight_lr`` > 0, the weights: VTrans' Fig. 1, our addition to that trainer) minimise
    :func:`compression_loss` with γ = ``kl_weight`` and the KL weights ``kl_mult``, the λ's maximise it, t warms
    up linearly to ``target`` (sparsity with embeddings). Masks are sampled in training mode. The learning rates
    of masks and weights decay linearly to 0 (:func:`linear_decay`), gradients are clipped, and the run goes on to
    the end of its steps. After the warm-up, whenever the **expected** sparsity ŝ is :func:`in_window`, at most
    once every ``eval_gap`` steps, the model is evaluated on ``val`` (cross-entropy under the deterministic masks)
    and the best such state (masks and weights) is kept; it is restored at the end (TVA-Prune checks every 50
    steps). When no check falls inside the window, the last state is kept (our fallback; TVA-Prune would save no
    mask). ``schedule`` (a :class:`Schedule`) may also be given as its fields, by keyword. Returns the history, one
    row a step (``"hard"``: the hard masks' sparsity; ``"head_log_alpha"``: every head's log α, for VIB masks;
    ``"selected"``: the step kept, on the last row)."""
    sc = schedule if schedule is not None else Schedule(**settings)
    assert schedule is None or not settings, "give the schedule or its fields, not both"
    torch.manual_seed(seed)
    model.train()
    device = model.word.weight.device
    full = full_size(model)
    for p in model.weight_parameters():
        p.requires_grad_(sc.weight_lr > 0)
    _freeze_word_table(model)
    groups = [{"params": model.mask_parameters(), "lr": sc.mask_lr}]
    if sc.weight_lr > 0:
        groups.append({"params": [p for p in model.weight_parameters() if p.requires_grad], "lr": sc.weight_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: linear_decay(k, sc.steps))
    lag = Lagrangian().to(device)
    lag_opt = lagrangian_optimizer(lag, sc.lambda_lr)
    trained = [p for g in groups for p in g["params"]] + list(lag.parameters())
    history, best, best_loss, best_step, last_check = [], None, math.inf, None, -math.inf
    steps = dry_steps(sc.steps, 1)  # a dry run: one step of each phase (two a compression); the schedule's length stays
    batches = progress(batch_stream(ids, sc.batch_size, steps, seed), total=steps, desc=desc)
    for step, b in enumerate(batches):
        t = target_sparsity(step, sc.warmup, target)
        target_logits = teacher_logits[b["index"]].to(device)
        b = _to(b, device)
        task = distill_loss(model(b["input_ids"], b["attention_mask"]), target_logits)
        kl = model.kl(kl_mult)
        s_hat = sparsity(expected_size(model, beta), full)
        loss = compression_loss(task, kl, lag(s_hat, t), kl_weight)
        opt.zero_grad()
        lag_opt.zero_grad()
        loss.backward()
        if sc.clip is not None:
            torch.nn.utils.clip_grad_norm_(trained, sc.clip)
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
        if (sc.window is not None and step + 1 >= sc.warmup and step + 1 - last_check >= sc.eval_gap
                and in_window(soft, target, sc.window)):
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
    torch.manual_seed(seed)
    model.train().set_mask_mode("off")
    for p in model.parameters():
        p.requires_grad_(True)
    _freeze_word_table(model)
    opt = torch.optim.AdamW(model.weight_parameters(), lr=lr, weight_decay=0.0)
    losses = []
    device = model.word.weight.device
    steps = dry_steps(steps, 1)
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
