"""The runs notebooks 2-4 share, cached: :data:`SETUP` (data, teacher and schedule per profile), :func:`teacher`,
:func:`student`, :func:`compress_run` (VTrans, Fast/Faster-VTrans, CoFi's L0), :func:`baseline_run` (one-shot
baselines at a compressed model's shape) and :func:`time_schedules` (notebook 3's timing, not cached).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from prunebook import cache
from prunebook.config import dry_steps

from .bert import MaskedBert, Shape
from .data import batch_stream, load_model, stratified_subset, task_classes, task_data
from .masks import KINDS, HardConcreteMask, Mask, VIBMask
from .sizes import count_params, full_size, sparsity
from .slicing import apply_keep, importance_scores, keep_like, kept_counts, magnitude_scores, random_scores, slice_model
from .train import Schedule, accuracy, compress, finetune, kl_multipliers, predict, window_for

NAMESPACE = "04_vtrans"

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
#
# The settings every profile shares, then those of the two MiniLM profiles; each profile adds its own sizes and
# schedule. :func:`_profile` puts the keys in one order, the order the notebooks print their configuration in.
_COMMON = dict(batch_size=16, warmup_frac=0.1, mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-6, clip=1.0, tolerance=0.01)
_MINILM = dict(model="minilm", task="mr", max_len=64, teacher_lr=5e-5, prune_batch=4, weight_lr=3e-5, finetune_lr=5e-5)
_ORDER = ("model", "task", "n_train", "n_test", "n_val", "max_len", "batch_size", "teacher_steps", "teacher_lr",
          "prune_batch", "steps", "warmup_frac", "eval_gap", "mask_lr", "lambda_lr", "kl_weight", "clip", "weight_lr",
          "finetune_steps", "finetune_lr", "tolerance")


def _profile(*shared: dict, **own) -> dict:
    """One profile's settings: the ``shared`` dicts and its ``own`` values (which win), in :data:`_ORDER`."""
    merged = {k: v for part in (*shared, own) for k, v in part.items()}
    assert set(merged) == set(_ORDER), set(merged) ^ set(_ORDER)
    return {k: merged[k] for k in _ORDER}


SETUP = {
    "smoke": _profile(_COMMON, _MINILM, n_train=128, n_test=64, n_val=32, teacher_steps=8, steps=32, eval_gap=1,
                      finetune_steps=4),
    "cpu": _profile(_COMMON, _MINILM, n_train=2048, n_test=800, n_val=256, teacher_steps=128, steps=512, eval_gap=10,
                    finetune_steps=64),
    "paper": _profile(_COMMON, model="bert-base-uncased", task="sst2", n_train=67349, n_test=872, n_val=1000,
                      max_len=128, teacher_steps=4210, teacher_lr=3e-5, prune_batch=16, steps=4000, eval_gap=50,
                      weight_lr=2e-5, finetune_steps=1280, finetune_lr=2e-5),
}
DATA_KEYS = ("model", "task", "n_train", "n_test", "max_len")
TEACHER_KEYS = DATA_KEYS + ("batch_size", "teacher_steps", "teacher_lr")
RUN_KEYS = TEACHER_KEYS + ("n_val", "prune_batch", "steps", "warmup_frac", "eval_gap", "mask_lr", "lambda_lr",
                           "kl_weight", "clip", "weight_lr", "finetune_steps", "finetune_lr")
# bump when the computation of a compression changes without a change of its settings (2: LayerNorms over the kept
# hidden dimensions in training too, the pruning phase of TVA-Prune's trainer)
COMPRESS_VERSION = 2


def warmup_steps(cfg, target: float) -> int:
    """The Lagrangian's warm-up: 0.1 of the pass, 0.2 for targets above 0.6 (TVA-Prune)."""
    return round(cfg["steps"] * cfg["warmup_frac"] * (2 if target > 0.6 else 1))


def schedule(cfg, target: float, train_weights: bool = True) -> Schedule:
    """The pruning phase's :class:`Schedule` at profile ``cfg`` for ``target``: the profile's steps, batch (the
    ``prune_batch``), learning rates and clipping, :func:`warmup_steps`, TVA-Prune's :func:`window_for` checked
    every ``eval_gap`` steps; the weights co-trained at ``weight_lr`` when ``train_weights`` (VTrans), else frozen
    (Faster-VTrans)."""
    return Schedule(steps=cfg["steps"], warmup=warmup_steps(cfg, target), batch_size=cfg["prune_batch"],
                    mask_lr=cfg["mask_lr"], lambda_lr=cfg["lambda_lr"],
                    weight_lr=cfg["weight_lr"] if train_weights else 0.0, clip=cfg["clip"],
                    window=window_for(target), eval_gap=cfg["eval_gap"])


def matched_steps(cfg, run: dict) -> int:
    """Fine-tuning steps (batches of ``batch_size``) that see as many examples as a compression run did in all,
    pruning and finetuning phase: the baselines' budget."""
    return math.ceil(run["steps_used"] * cfg["prune_batch"] / cfg["batch_size"]) + cfg["finetune_steps"]


def _pick(cfg, keys) -> dict:
    """The settings a cached result depends on: its cache key."""
    return {k: cfg[k] for k in keys}


def _device(cfg) -> torch.device:
    return torch.device(cfg.get("device") or "cpu")


def teacher(cfg) -> dict:
    """MiniLM fine-tuned on the training subset (cross-entropy), cached: its weights, its logits on the training
    subset (the distillation targets), its test accuracy and the seconds it took."""
    def compute():
        d = task_data(cfg)
        model = load_model(cfg["model"], task_classes(cfg["task"]), kinds=()).to(_device(cfg))
        t0 = time.perf_counter()
        finetune(model, *d["train"], steps=cfg["teacher_steps"], lr=cfg["teacher_lr"], batch_size=cfg["batch_size"],
                 seed=0, desc="teacher")
        logits = predict(model, d["train"][0])
        return {"state": model.cpu().state_dict(), "train_logits": logits, "wall": time.perf_counter() - t0,
                "acc": accuracy(model, *d["test"]), "shape": dataclasses.asdict(model.shape)}

    key = _pick(cfg, TEACHER_KEYS)
    path = cache.path_for(f"{NAMESPACE}/teacher", key)
    if _last_teacher.get("path") != path:  # kept in memory: every run of a notebook needs it (BERT-base: 440 MB)
        _last_teacher.clear()
        _last_teacher.update(path=path, value=cache.cached(f"{NAMESPACE}/teacher", key, compute))
    return _last_teacher["value"]


_last_teacher: dict = {}  # the last teacher loaded, and its cache file


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
    key = _pick(cfg, RUN_KEYS) | {"target": target, "seed": seed, "kinds": sorted(kinds), "mask": mask,
                                  "train_weights": train_weights, "fraction": fraction, "code": COMPRESS_VERSION}

    def compute():
        d = task_data(cfg)
        ids, labels = d["train"]
        logits = teacher(cfg)["train_logits"]
        keep = stratified_subset(labels, max(1, round(fraction * len(labels))), seed=seed)
        ids, labels, logits = [ids[i] for i in keep], labels[keep], logits[keep]
        torch.manual_seed(seed)  # the masks' initial jitter
        model = student(cfg, kinds, {"vib": VIBMask, "l0": HardConcreteMask}[mask]).to(_device(cfg))
        t0 = time.perf_counter()
        hist = compress(model, ids, logits, schedule(cfg, target, train_weights), target=target, seed=seed,
                        kl_weight=cfg["kl_weight"] if mask == "vib" else 0.0,
                        kl_mult=kl_multipliers(target, len(model.layers)), val=d["val"],
                        desc=f"{mask} t={target:g} seed {seed}")
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
    steps, finetune_steps, rounds = dry_steps(steps), dry_steps(finetune_steps), dry_steps(rounds, 1)
    d = task_data(cfg)
    ids, labels = d["train"]
    logits = teacher(cfg)["train_logits"]
    sub = stratified_subset(labels, max(1, round(fraction * len(labels))), seed=seed)
    arms = {"VTrans": (list(ids), logits, cfg["weight_lr"]), "Faster-VTrans": ([ids[i] for i in sub], logits[sub], 0.0)}
    per_step = {"VTrans": [], "Faster-VTrans": [], "finetune": []}
    order = list(arms)
    for k in range(rounds):
        for arm in (order if k % 2 == 0 else order[::-1]):
            a_ids, a_logits, wlr = arms[arm]
            torch.manual_seed(seed)
            model = student(cfg).to(_device(cfg))
            t0 = time.perf_counter()
            plan = dataclasses.replace(schedule(cfg, target, wlr > 0), steps=steps, window=None)
            compress(model, a_ids, a_logits, plan, target=target, seed=seed, kl_weight=cfg["kl_weight"],
                     kl_mult=kl_multipliers(target, len(model.layers)))
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
            stream = batch_stream(ids, cfg["batch_size"], dry_steps(8), seed)
            batches = [dict(b, labels=labels[b["index"]]) for b in stream]
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
