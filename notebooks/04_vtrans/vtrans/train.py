"""Training: :func:`compress` (the pruning phase, TVA-Prune's VIB trainer with the weights co-trained),
:func:`finetune` (the teacher, and the sliced models distilled from it), CoFi's logit distillation, TVA-Prune's
window and KL multipliers, :func:`predict` and :func:`accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import prunebook
import torch
import torch.nn.functional as F

from .bert import MaskedBert
from .data import _to, batch_stream, pad_batch
from .masks import BETA, VIBMask
from .sizes import Lagrangian, expected_size, full_size, hard_size, lagrangian_optimizer, sparsity, target_sparsity


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


# The import inside stays as the notebooks show this function's text (prunebook.show), so that a rerun shows
# what the committed outputs show.
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
    torch.manual_seed(seed)
    model.train().set_mask_mode("off")
    for p in model.parameters():
        p.requires_grad_(True)
    _freeze_word_table(model)
    opt = torch.optim.AdamW(model.weight_parameters(), lr=lr, weight_decay=0.0)
    losses = []
    device = model.word.weight.device
    for b in prunebook.progress(batch_stream(ids, batch_size, steps, seed), total=steps, desc=desc):
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
