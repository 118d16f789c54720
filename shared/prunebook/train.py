"""A fast training loop for small image models, with the whole dataset held as tensors on the device.

Why no DataLoader: Fashion-MNIST or CIFAR fit in memory many times over, so batches are slices of one
tensor and augmentation (random crop with padding, horizontal flip) runs on the device in a few tensor
ops. That removes the per-image Python work that dominates small-model training on a laptop
(``benchmarks/train_throughput.py`` measures the difference).

``fit()`` also does what pruning papers need around a plain loop:
- callbacks before/after each optimizer step and between epochs (a method can prune at epoch ends,
  add an L1 sub-gradient after ``backward``, or re-apply masks after each step);
- a checkpoint after every epoch, atomically written, so an interrupted run resumes where it stopped
  and a finished one returns at once;
- bfloat16 autocast on CUDA; SGD or Adam; constant, step, cosine or one-cycle schedules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from . import cache
from .config import dry_steps
from .data import ImageSet
from .display import progress

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


class Callback:
    """Hooks into :func:`fit`. Override any of them; each receives the :class:`TrainState`."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def after_backward(self, state: TrainState) -> None: ...
    def after_step(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...

    # A callback with its own state (a pruning schedule, say) saves it with the checkpoint.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool = False  # a callback sets this to end training after the current epoch
    loss: torch.Tensor | None = None  # the last batch's loss


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                   weight_decay: float = 5e-4, nesterov: bool = False) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, steps_per_epoch: int,
                   milestones: Sequence[float] = (0.5, 0.75),
                   gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule. ``step`` decays by ``gamma`` at each milestone, given as fractions of training
    (the CIFAR papers' 0.5 and 0.75 of 160 epochs are epochs 80 and 120)."""
    total = epochs * steps_per_epoch
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=max(total, 2))
    if name == "constant":
        factor = lambda step: 1.0
    elif name == "step":
        bounds = [round(m * epochs) * steps_per_epoch for m in milestones]
        factor = lambda step: gamma ** sum(step >= b for b in bounds)
    elif name == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    else:
        raise ValueError(f"schedule={name!r}; choose one of: {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def augment(x: torch.Tensor, generator: torch.Generator, crop_padding: int = 0, flip: bool = False) -> torch.Tensor:
    """Random crops after zero-padding by ``crop_padding`` pixels, and random horizontal flips, on x's device.

    The random draws come from a CPU generator, so a seed gives the same augmentation on every device."""
    n, _, h, w = x.shape
    if crop_padding:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024, device: str | torch.device | None = None,
            amp: bool = True) -> torch.Tensor:
    """The model's outputs (logits) for every row of ``x``, in eval mode, as float32 on the CPU."""
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        with _autocast(device, amp):
            outs.append(model(x[i: i + batch_size].to(device, non_blocking=True)).float().cpu())
    model.train(was_training)
    return torch.cat(outs)


def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 1024, device: str | torch.device | None = None,
             amp: bool = True) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data``."""
    logits = predict(model, data.x, batch_size, device, amp)
    y = data.y.cpu()
    return {"loss": F.cross_entropy(logits, y).item(), "acc": (logits.argmax(1) == y).float().mean().item()}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a state dict, first re-creating any pruning masks the saved model had (``*_mask`` buffers);
    returns ``model``."""
    modules = dict(model.named_modules())
    for key in state:
        if key.endswith("_mask"):
            owner, _, tensor_name = key[: -len("_mask")].rpartition(".")
            module = modules[owner]
            if not hasattr(module, f"{tensor_name}_mask"):
                torch_prune.identity(module, tensor_name)
    model.load_state_dict(state)
    refresh_masked_weights(model)
    return model


@torch.no_grad()
def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute each pruned ``weight`` from ``weight_orig * weight_mask`` now.

    ``torch.nn.utils.prune`` refreshes it only at the next forward pass, so after an optimizer step or a
    rewind the attribute would otherwise still hold the old values."""
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                hook(m, None)


def fit(
    model: nn.Module,
    train: ImageSet,
    *,
    epochs: int,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    schedule: str = "cosine",
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    label_smoothing: float = 0.0,
    crop_padding: int = 0,
    flip: bool = False,
    val: ImageSet | None = None,
    device: str | torch.device | None = None,
    amp: bool = True,
    channels_last: bool | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` on ``train`` in place; returns the history, one dict per epoch.

    With ``checkpoint`` set, state is saved after each epoch and a later call with the same path resumes
    from it (or returns at once if training finished). ``val`` is evaluated after every epoch.
    ``channels_last`` (default: on for image batches) is about 20 % faster for convs on CPU.
    A dry run (:func:`prunebook.config.dry_steps`) trains one batch of each of two epochs, on the paper's schedule.
    """
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size}: need epochs >= 0 and batch_size >= 1")
    device = torch.device(device) if device else next(model.parameters()).device
    if channels_last is None:
        channels_last = train.x.ndim == 4
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    x_all = train.x.to(device, memory_format=memory_format)
    y_all = train.y.to(device)
    steps_per_epoch = math.ceil(len(train) / batch_size)

    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay, nesterov)
    sched = make_scheduler(opt, schedule, epochs, steps_per_epoch, milestones, gamma)
    # a dry run: the first batch of each of the first two epochs, two steps of the paper's schedule in all
    run_epochs, batches = dry_steps(epochs), dry_steps(steps_per_epoch, 1)
    state = TrainState(model, opt, sched, run_epochs)
    generator = torch.Generator().manual_seed(seed)

    ckpt = Path(checkpoint) if checkpoint else None
    saved = cache.load_intact(ckpt) if ckpt else None  # a damaged checkpoint is set aside: start over
    if saved is not None:
        load_model_state(model, saved["model"])
        model.to(device, memory_format=memory_format)
        opt = state.optimizer = make_optimizer(model, optimizer, lr, momentum, weight_decay, nesterov)
        sched = state.scheduler = make_scheduler(opt, schedule, epochs, steps_per_epoch, milestones, gamma)
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        state.epoch, state.step, state.history = saved["epoch"], saved["step"], saved["history"]
        generator.set_state(saved["generator"])
        for cb, cb_state in zip(callbacks, saved.get("callbacks", [])):
            cb.load_state_dict(cb_state)
        if saved.get("done") or state.epoch >= run_epochs:
            return state.history

    for cb in callbacks:
        cb.on_train_start(state)
    model.train()
    bar = progress(total=run_epochs, initial=state.epoch, desc=desc, enabled=progress_bar, leave=True)
    while state.epoch < run_epochs and not state.stop:
        t0 = time.perf_counter()
        for cb in callbacks:
            cb.on_epoch_start(state)
        order = torch.randperm(len(train), generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for i in range(0, batches * batch_size, batch_size):
            idx = order[i: i + batch_size]
            xb = augment(x_all[idx], generator, crop_padding, flip) if (crop_padding or flip) else x_all[idx]
            yb = y_all[idx]
            with _autocast(device, amp):
                out = model(xb)
                loss = F.cross_entropy(out.float(), yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            state.loss = loss
            for cb in callbacks:
                cb.after_backward(state)
            opt.step()
            sched.step()
            state.step += 1
            for cb in callbacks:
                cb.after_step(state)
            total_loss += loss.detach() * len(yb)
            correct += (out.argmax(1) == yb).sum()
        state.epoch += 1
        record = {"epoch": state.epoch, "lr": opt.param_groups[0]["lr"],
                  "train_loss": total_loss.item() / len(train), "train_acc": correct.item() / len(train)}
        if val is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, val, device=device, amp=amp).items()})
            model.train()
        record["seconds"] = time.perf_counter() - t0
        state.history.append(record)
        for cb in callbacks:
            cb.on_epoch_end(state)
        if ckpt:
            cache.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": state.epoch, "step": state.step, "history": state.history,
                        "generator": generator.get_state(), "callbacks": [cb.state_dict() for cb in callbacks],
                        "done": state.epoch >= run_epochs or state.stop}, ckpt)
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.endswith(("loss", "acc"))})
    bar.close()
    refresh_masked_weights(model)
    return state.history


def cached_run(namespace: str, key: dict[str, Any], make: Callable[[], nn.Module],
               fit: Callable[[nn.Module, Path], Any], seed: int,
               measure: Callable[[nn.Module, Any], dict[str, Any]] = lambda model, history: {}) -> dict[str, Any]:
    """One training through the cache (``<namespace>/run``): the same ``key`` in any notebook returns the stored run.

    ``key`` must hold everything the result depends on. ``torch.manual_seed(seed)`` runs just before ``make()``, so
    the models of one seed start from the same random state; ``fit(model, checkpoint)`` trains it (a fit that
    checkpoints to ``<namespace>/ckpt`` resumes an interrupted run; the checkpoint is deleted once the run is
    stored); ``measure(model, history)`` adds what the run reports (the test accuracy, counts) while the model is
    still on its training device. Returns those entries, the ``history`` and the trained ``state`` (on the CPU)."""

    checkpoint = cache.path_for(f"{namespace}/ckpt", key)

    def compute() -> dict[str, Any]:
        torch.manual_seed(seed)
        model = make()
        history = fit(model, checkpoint)
        out = {"history": history, **measure(model, history)}
        model.to("cpu", memory_format=torch.contiguous_format)
        return {**out, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}

    run = cache.cached(f"{namespace}/run", key, compute)
    checkpoint.unlink(missing_ok=True)  # the run is stored: its resume point (weights, optimizer state) is not needed
    return run
