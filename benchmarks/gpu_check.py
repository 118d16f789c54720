"""The prepared GPU check: the paper profile's dry run on the device, step times at paper size, projected wall times.

    python benchmarks/gpu_check.py [--device auto] [--quick] [--series 01 06] [--rounds 5] [--dry-budget 300]
    make gpu-check

Meant to run in one go, in at most about 8 minutes, on one GPU of the H100 class; ``--quick`` runs a short form on
any machine (a CPU included: tiny batches, one round, two series) so that tests can check the report. It writes
one report, ``benchmarks/results/gpu_check.md`` and ``.json`` (``--out`` changes the stem): the device, the
versions and every number below.

1. **Dry run on the device.** ``prunebook run <series> --profile paper --dry-run -p device=<device>`` for every
   series, all side by side, each stopped (its kernels too) at its time limit or when the step's budget (300 s by
   default) is spent; the exit status, wall time and last output lines of each. When the installed ``prunebook``
   has no ``--dry-run``, the step says "dry run not available" and goes on. (On a busy 2-core CPU the dry run of
   01_ap alone took more than 400 s; a series that runs out of time on the GPU machine says so in the report.)
2. **Step times.** One training step (forward, backward, optimizer step on a batch of random inputs of the
   paper's shape) of each series' ``paper`` models at the paper's batch size, in float32 and in bfloat16 autocast,
   timed side by side in paired, alternating rounds (the approach of ``prunebook.prune.latency_rounds``, which
   does the timing): a step time is the median over rounds of each round's median, the bf16 / fp32 ratio the
   median of the per-round ratios. 02's networks are trained stacked (``grokking.train``): its step is one
   stacked step of a phase-diagram column, and its unit a network-step. 03 streams on the CPU: its unit is one
   instance, predicted then learnt, of iHOMER on the synthetic stream.
   Then the throughput of ``prunebook.train.fit`` (the whole set as tensors on the device, augmentation on the
   device) against a plain ``torch.utils.data.DataLoader`` loop (PIL images through torchvision transforms, as
   torchvision's CIFAR10 serves them) training the same model (ResNet-20, CIFAR-10's shape, batch 64,
   SGD) over the same random images: one pass each per round, the two alternating, the ratio per round.
3. **Projection.** For each series, the step times times the steps its ``paper`` profile plans, counted from
   the settings the notebooks read (``series_01`` ... ``series_08``: trainings x epochs x steps per epoch;
   cached runs that notebooks share are counted once). Evaluation, data loading from disk, scoring and plotting
   are not counted, and early stopping (06) is not assumed: a projection estimates the training time on one
   device.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import importlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from prunebook import config, data, models, prune, train
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import ArrayImages  # noqa: E402  (uint8 images served as PIL images, as torchvision's CIFAR10)

NOTEBOOKS = ROOT / "notebooks"
SERIES = ("01_ap", "02_grokking", "03_ihomer", "04_vtrans", "05_dependencyvit", "06_unetpp", "07_rethinking",
          "08_data_pruning")
QUICK_SERIES = ("01_ap", "02_grokking")
CIFAR = 50_000  # training images of CIFAR-10/100


def series_module(series: str, name: str):
    """A series' own module, imported from its folder (as its notebooks import it)."""
    folder = str(NOTEBOOKS / series)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


# ------------------------------------------------------------------------------------------------ workloads


@dataclass
class Workload:
    """One model of a series at its paper batch: ``make(device, batch, amp)`` returns a callable that takes one
    training step (or one unit of work) on the device. ``per_step`` divides a call's time into steps: a call
    may take several steps (02's stacked networks, 03's instances)."""

    series: str
    name: str
    batch: int
    make: Callable[[torch.device, int, bool], Callable[[], None]]
    unit: str = "step"
    per_step: Callable[[int], int] = lambda batch: 1
    amp_applies: bool = True
    note: str = ""


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)


def image_step(build: Callable[[], nn.Module], shape: tuple[int, ...], classes: int, optimizer: str = "sgd",
               lr: float = 0.05, channels_last: bool = True):
    """A training step of an image classifier on random inputs (cross-entropy, as ``prunebook.train.fit``)."""

    def make(device, batch, amp):
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last and len(shape) == 3 else torch.contiguous_format
        model = build().to(device, memory_format=fmt).train()
        opt = train.make_optimizer(model, optimizer, lr, 0.9, 5e-4)
        x = torch.randn(batch, *shape, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, classes, (batch,), device=device)

        def step():
            with _autocast(device, amp):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return make


def segmentation_step(build: Callable[[], nn.Module], size: int, lr: float = 3e-4):
    """06: a UNet step on random images and masks, Adam, the loss on every head (deep supervision)."""

    def make(device, batch, amp):
        unetpp = series_module("06_unetpp", "unetpp")
        torch.manual_seed(0)
        model = build().to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        x = torch.randn(batch, 1, size, size, device=device)
        y = (torch.rand(batch, 1, size, size, device=device) < 0.15).float()

        def step():
            with _autocast(device, amp):
                heads = model(x)
            loss = unetpp.deep_supervision_loss([h.float() for h in heads], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return make


def bert_step(max_len: int, **shape):
    """04: a VTrans pruning-phase step of a BERT (BERT-base from ``BertConfig()``, or the sizes ``shape`` gives; random
    weights; masks on every structure): masks and weights trained together on cross-entropy plus the masks' KL."""

    def make(device, batch, amp):
        from transformers import BertConfig, BertForSequenceClassification

        vtrans = series_module("04_vtrans", "vtrans")
        torch.manual_seed(0)
        hf = BertForSequenceClassification(BertConfig(num_labels=2, **shape))
        model = vtrans.bert.from_hf(hf).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
        ids = torch.randint(1000, 30000, (batch, max_len), device=device)
        mask = torch.ones_like(ids)
        y = torch.randint(0, 2, (batch,), device=device)

        def step():
            with _autocast(device, amp):
                logits = model(ids, mask)
            loss = F.cross_entropy(logits.float(), y) + 1e-6 * model.kl()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return step

    return make


def grokking_steps(steps: int):
    """02: ``steps`` full-batch steps of networks stacked by ``grokking.train`` (the batch is the number of
    networks); the call's scoring at its first and last steps is included, so ``steps`` is kept large."""

    def make(device, batch, amp):
        gk = series_module("02_grokking", "grokking")
        xis = np.linspace(0.0, 0.9, batch).round(3).tolist()
        tasks = [gk.modular_task(gk.P, 0.5, x, seed=0) for x in xis]

        def step():
            with _autocast(device, amp):
                gk.train(tasks, steps=steps, seeds=[0] * batch, weight_decay=5.0, log_every=10**9, device=device)

        return step

    return make


def ihomer_instances(n: int):
    """03: ``n`` instances of the synthetic drifting stream, each predicted then learnt by iHOMER (CPU, river)."""

    def make(device, batch, amp):
        ih = series_module("03_ihomer", "ihomer")
        stream = ih.drifting_blocks(4 * n, seed=0)
        records = stream.records()
        model = ih.IHOMER(seed=0)
        for x, y in records[: 2 * n]:  # past the start, where the label tree has not split yet
            model.predict_one(x)
            model.learn_one(x, y)
        position = [2 * n]

        def step():
            start = position[0]
            if start + n > len(records):
                start = 2 * n
            for x, y in records[start: start + n]:
                model.predict_one(x)
                model.learn_one(x, y)
            position[0] = start + n

        return step

    return make


@dataclass
class Plan:
    """Steps (or units) one series' paper profile plans on one workload, with how they were counted."""

    workload: str
    steps: float
    count: str


# One function per series: its paper models at the batch sizes its paper settings give, and the steps its paper
# profile plans on each, counted from the settings its notebooks read. Cached runs that several notebooks share
# (same settings, same seed) are counted once, and so is a run that a longer one contains (01's rounds are keyed
# without their number). ``quick`` only shortens a call (02's steps, 03's instances), never a model.


def series_01(quick: bool) -> tuple[list[Workload], list[Plan]]:
    ap = series_module("01_ap", "ap")
    S = ap.SETTINGS["paper"]
    names = {"lenet": "LeNet-300-100", "cnn": "small CNN (BN)", "resnet20": "ResNet-20, CIFAR-10"}
    shapes = {"lenet": (1, 28, 28), "cnn": (1, 28, 28), "resnet20": (3, 32, 32)}
    loads = [Workload("01_ap", names[m], S[m]["batch_size"],
                      image_step(lambda m=m: ap.build(m, shapes[m][0]), shapes[m], 10, lr=S[m]["lr"]))
             for m in names]
    # An IMP run of R rounds trains R + 1 times. LeNet: notebooks 03-04 run X, X+AP and three ablations through
    # 25 rounds and the two other p2 arms through 12 (lth), X and X+AP with fine-tuning through 12; notebook 06
    # runs X and X+AP again through 25 rounds with the code's retraining. Small CNN: X and X+AP through its rounds
    # (notebook 03); ResNet-20: X and X+AP through its rounds (notebook 05).
    per_seed = {"lenet": 5 * 26 + 2 * 13 + 2 * 13 + 2 * 26, "cnn": 2 * (S["cnn"]["rounds"] + 1),
                "resnet20": 2 * (S["resnet20"]["rounds"] + 1)}
    plan = []
    for m, name in names.items():
        n = per_seed[m] * S[m]["seeds"]
        per_epoch = math.ceil(S[m]["n_train"] / S[m]["batch_size"])
        plan.append(Plan(name, n * S[m]["epochs"] * per_epoch,
                         f"{n} trainings x {S[m]['epochs']} epochs x {per_epoch} steps"))
    return loads, plan


def series_02(quick: bool) -> tuple[list[Workload], list[Plan]]:
    gk = series_module("02_grokking", "grokking")
    steps, column = (5 if quick else 50), 19  # 19: notebook 05's xis, one phase-diagram column trained stacked
    name = f"p={gk.P} width-{gk.WIDTH} MLPs, stacked"
    loads = [Workload("02_grokking", name, column, grokking_steps(steps), unit="network-step",
                      per_step=lambda batch: steps * batch,
                      note=f"one call: {steps} full-batch steps of a column of stacked networks")]
    # network-steps (notebooks 02 and 03 share their runs): 01: 10 seeds x 100 steps; 02: 3 weight decays x 5 seeds
    # x 2,000; 04: 4 dropouts x 5 x 2,000, BatchNorm 5 x 8,000 (mini-batches, counted as full-batch steps),
    # forgetting 5 x 5,000; 05: 17 alphas x 19 xis x (4 weight decays + 4 dropouts + 4 BatchNorm batches) x 3 seeds
    # x 2,000.
    n = 10 * 100 + 3 * 5 * 2000 + 4 * 5 * 2000 + 5 * 8000 + 5 * 5000 + 17 * 19 * 12 * 3 * 2000
    return loads, [Plan(name, n, "network-steps: notebooks 01-04's runs + notebook 05's 17 x 19 x 12 x 3 seeds "
                                 "x 2,000 steps")]


def series_03(quick: bool) -> tuple[list[Workload], list[Plan]]:
    name = "iHOMER, drifting blocks (16 labels)"
    n = 20 if quick else 200
    loads = [Workload("03_ihomer", name, 1, ihomer_instances(n), unit="instance", per_step=lambda batch: n,
                      amp_applies=False, note="river on the CPU: no device, no bf16")]
    # instances, a lower bound: the synthetic streams only (10,000 instances): notebook 03: 10 seeds and the n_min
    # tuning (10 seeds x its grid, taken as 5 values); 04: 10 seeds of iHOMER and of its random-partition control.
    # The 22 real datasets and the baselines are not counted (their sizes are not on this machine).
    return loads, [Plan(name, 10_000 * (10 + 10 * 5 + 2 * 10),
                        "instances, a lower bound: iHOMER on the synthetic streams only (80 streams of 10,000)")]


def series_04(quick: bool) -> tuple[list[Workload], list[Plan]]:
    vt = series_module("04_vtrans", "vtrans").runs.SETUP["paper"]
    name = f"BERT-base, SST-2, length {vt['max_len']}"
    minilm = "MiniLM-L6 shape, length 64"  # notebook 01's model (6 layers, 384 wide, 12 heads), batch 32
    loads = [Workload("04_vtrans", name, vt["prune_batch"], bert_step(vt["max_len"])),
             Workload("04_vtrans", minilm, 32, bert_step(64, hidden_size=384, num_hidden_layers=6,
                                                         intermediate_size=1536))]
    # notebooks 02-04: the teacher once; each compression run steps + finetune_steps, and each one-shot baseline
    # fine-tuned as long (matched steps); notebook 02: 3 targets x 3 seeds x (VTrans, CoFi's L0 and 3 baselines);
    # notebook 03: Fast- and Faster-VTrans x 3 seeds (as long as VTrans: an upper bound). Notebook 01: MiniLM,
    # 16 seeds x 3,000 steps.
    runs, per_run = 3 * 3 * 5 + 2 * 3, vt["steps"] + vt["finetune_steps"]
    return loads, [Plan(name, vt["teacher_steps"] + runs * per_run,
                        f"teacher {vt['teacher_steps']} + {runs} runs x ({vt['steps']} + {vt['finetune_steps']})"),
                   Plan(minilm, 16 * 3000, "notebook 01: 16 seeds x 3,000 steps")]


def series_05(quick: bool) -> tuple[list[Workload], list[Plan]]:
    dv = series_module("05_dependencyvit", "dependencyvit")
    tiny = dict(dim=192, depth=12, heads=12)

    def cifar(reversed_):
        return lambda: dv.ViT(32, patch=4, in_channels=3, num_classes=100, mlp_ratio=4.0, reversed=reversed_, **tiny)

    loads = [
        Workload("05_dependencyvit", "DependencyViT, CIFAR-100", 256,
                 image_step(cifar(True), (3, 32, 32), 100, "adamw", 2.5e-4, channels_last=False)),
        Workload("05_dependencyvit", "ViT, CIFAR-100", 256,
                 image_step(cifar(False), (3, 32, 32), 100, "adamw", 2.5e-4, channels_last=False)),
        Workload("05_dependencyvit", "DependencyViT, part shapes", 256,
                 image_step(lambda: dv.build("dependencyvit", "partshapes", **tiny), (1, 32, 32), 4, "adamw", 1e-3,
                            channels_last=False)),
    ]
    # notebook 01: ViT and DependencyViT x 3 seeds x 300 epochs of CIFAR-100 (batch 256); notebooks 02-04 on 20,000
    # part-shape images (batch 256, 30 epochs): 11 models x 3 seeds (DependencyViT, ViT, mean-pooled, the four Lite
    # runs, 4 ablations; all timed as DependencyViT) and the entity runs (60 epochs) x 3 seeds.
    c100, shapes = math.ceil(CIFAR / 256), math.ceil(20_000 / 256)
    return loads, [
        Plan("DependencyViT, CIFAR-100", 3 * 300 * c100, f"3 seeds x 300 epochs x {c100} steps"),
        Plan("ViT, CIFAR-100", 3 * 300 * c100, f"3 seeds x 300 epochs x {c100} steps"),
        Plan("DependencyViT, part shapes", (11 * 3 * 30 + 3 * 60) * shapes,
             f"(11 models x 3 seeds x 30 epochs + 3 x 60) x {shapes} steps"),
    ]


def series_06(quick: bool) -> tuple[list[Workload], list[Plan]]:
    un = series_module("06_unetpp", "unetpp")
    P = un.NUCLEI["paper"]
    kw = un.model_kwargs(P)
    nuclei, shapes = f"UNet++ DS, nuclei {P['patch']}x{P['patch']}", "UNet++ DS, shapes 128x128"
    loads = [Workload("06_unetpp", nuclei, P["batch_size"], segmentation_step(lambda: un.build("UNet++ DS", **kw),
                                                                              P["patch"], P["lr"])),
             Workload("06_unetpp", shapes, 16, segmentation_step(lambda: un.build("UNet++ DS", **kw), 128, 3e-4))]
    # no early stopping assumed (an upper bound): nuclei: notebook 02's UNet++ DS and UNet++ x 6 seeds, notebook
    # 03's 4 more seeds of UNet++ DS, notebook 05's U-Net, wide U-Net and UNet+ x 6 seeds, each `steps` long;
    # notebook 04: two shape sets (64 and 128 px, batch 16) x 5 networks x 6 seeds x 10,000 steps, all timed as
    # UNet++ DS at 128 px (an upper bound).
    n = 2 * P["n_seeds"] + 4 + 3 * P["n_seeds"]
    return loads, [Plan(nuclei, n * P["steps"], f"{n} trainings x {P['steps']} steps"),
                   Plan(shapes, 2 * 5 * 6 * 10_000, "2 sets x 5 networks x 6 seeds x 10,000 steps")]


def series_07(quick: bool) -> tuple[list[Workload], list[Plan]]:
    nets = {"ResNet-56, CIFAR-10": lambda: models.resnet_cifar(56),
            "ResNet-110, CIFAR-10": lambda: models.resnet_cifar(110),
            "VGG-16, CIFAR-10": lambda: models.vgg_cifar(16, classifier="mlp"),
            "VGG-19, CIFAR-10": lambda: models.vgg_cifar(19)}
    loads = [Workload("07_rethinking", name, 64, image_step(make, (3, 32, 32), 10, lr=0.1))
             for name, make in nets.items()]
    # CIFAR-10, batch 64, 5 seeds; pruned models timed as their unpruned parents (an upper bound); Scratch-B taken at
    # its cap, twice the epochs. Notebook 01: ResNet-56 and -110 (variants A and B) and VGG-16, each base 160 epochs,
    # each pruned model fine-tuned 40, Scratch-E 160, Scratch-B 320. VGG-19: notebook 02's slimming base 160, its
    # fine-tuning 40, Scratch-E and -B of the slimmed and the uniform net 2 x (160 + 320); notebook 03's dense nets
    # at two learning rates 2 x 160, 4 sparsities x (40 + 160 + 320), tickets 3 sparsities x 2 rates x 2 inits x
    # 160; notebook 04's transfer 2 x 160. VGG-16 in notebook 04: a slimming base 160 and 2 nets from scratch x 160.
    ep, pruned = math.ceil(CIFAR / 64), 40 + 160 + 320
    vgg19 = (160 + 40 + 2 * 480) + (2 * 160 + 4 * pruned + 12 * 160) + 2 * 160
    epochs = {"ResNet-56, CIFAR-10": (160 + 2 * pruned, f"160 + 2 x {pruned}"),
              "ResNet-110, CIFAR-10": (160 + 2 * pruned, f"160 + 2 x {pruned}"),
              "VGG-16, CIFAR-10": (160 + pruned + 3 * 160, f"160 + {pruned} + 3 x 160"),
              "VGG-19, CIFAR-10": (vgg19, f"1,160 + 4,320 + 320 = {vgg19:,}")}
    return loads, [Plan(name, 5 * e * ep, f"5 seeds x ({text}) epochs x {ep} steps")
                   for name, (e, text) in epochs.items()]


def series_08(quick: bool) -> tuple[list[Workload], list[Plan]]:
    pool = series_module("08_data_pruning", "data_pruning").pool
    P = pool.SETUP["paper"]
    loads = [
        Workload("08_data_pruning", "ResNet-18, CIFAR-10", P["batch_size"],
                 image_step(lambda: pool.make_model("resnet18", 10, 3), (3, 32, 32), 10, lr=P["lr"])),
        Workload("08_data_pruning", "ResNet-18, SimCLR (two views)", 2 * P["ssl_batch"],
                 image_step(lambda: pool.make_model("resnet18", 10, 3), (3, 32, 32), 10, "adam", P["ssl_lr"]),
                 note="a SimCLR step of ssl_batch images in two views, timed as a classifier step on both views"),
    ]
    per_epoch, ssl_epoch = math.ceil(P["pool_size"] / P["batch_size"]), math.ceil(P["pool_size"] / P["ssl_batch"])
    # the pool's scoring runs and the SimCLR encoder; notebooks 01 and 03-04 fit perceptrons and linear probes on
    # fixed features (seconds): not counted.
    return loads, [
        Plan("ResNet-18, CIFAR-10", P["score_runs"] * P["score_epochs"] * per_epoch,
             f"the pool's scoring: {P['score_runs']} runs x {P['score_epochs']} epochs x {per_epoch} steps"),
        Plan("ResNet-18, SimCLR (two views)", P["ssl_epochs"] * ssl_epoch,
             f"SimCLR: {P['ssl_epochs']} epochs x {ssl_epoch} steps"),
    ]


SERIES_CHECKS = {"01_ap": series_01, "02_grokking": series_02, "03_ihomer": series_03, "04_vtrans": series_04,
                 "05_dependencyvit": series_05, "06_unetpp": series_06, "07_rethinking": series_07,
                 "08_data_pruning": series_08}


# ------------------------------------------------------------------------------------------------ 1. dry run


PRUNEBOOK = str(Path(sys.executable).with_name("prunebook"))  # the command beside this Python (the venv's)


def dry_run_available() -> bool:
    try:
        out = subprocess.run([PRUNEBOOK, "run", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--dry-run" in out.stdout


def dry_run(series: str, device: torch.device, deadline: float, limit: float, env: dict[str, str]) -> dict:
    """One series' paper dry run on ``device``, stopped (with every process it started) after ``limit`` seconds or at
    ``deadline`` (a ``time.perf_counter`` value), whichever comes first."""
    cmd = [PRUNEBOOK, "run", series, "--profile", "paper", "--dry-run", "--workers", "1", "-p", f"device={device.type}"]
    timeout = max(10.0, min(limit, deadline - time.perf_counter()))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
        status = "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's notebook kernels too: they hold the device's memory
        text, _ = proc.communicate()
        status = "timed out"
    tail = [line for line in (text or "").splitlines() if line.strip()][-8:]
    return {"series": series, "status": status, "rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "limit_s": round(timeout, 1), "command": "prunebook " + " ".join(cmd[1:]), "tail": tail}


def dry_runs(series: list[str], device: torch.device, limit: float, parallel: int, budget: float) -> dict:
    """Every series' dry run, ``parallel`` side by side, each within ``limit`` seconds, all within ``budget``."""
    if not dry_run_available():
        print("  dry run not available: this prunebook has no `run --dry-run` yet")
        return {"available": False, "note": "dry run not available (this prunebook has no `run --dry-run` yet)",
                "runs": []}
    deadline = time.perf_counter() + budget
    threads = str(max(1, (os.cpu_count() or 1) // parallel))  # the runs side by side share the cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda s: dry_run(s, device, deadline, limit, env), series))
    for r in results:
        print(f"  dry run {r['series']}: {r['status']} in {r['wall_s']} s")
    return {"available": True, "limit_s": limit, "budget_s": budget, "parallel": parallel, "runs": results}


# ------------------------------------------------------------------------------------------------ 2. timings


def _with_grad(call: Callable[[], None]) -> None:
    with torch.enable_grad():
        call()


def time_workload(w: Workload, device: torch.device, batch: int, rounds: int, repeats: int, warmup: int) -> dict:
    """fp32 and bf16 steps of one workload, paired and alternating (``prune.latency_rounds``)."""
    dev = torch.device("cpu") if w.series == "03_ihomer" else device
    row = {"series": w.series, "model": w.name, "batch": batch, "paper_batch": w.batch, "unit": w.unit,
           "device": dev.type, "note": w.note}
    def timed(modes):
        calls = {mode: w.make(dev, batch, mode == "bf16") for mode in modes}
        # latency_rounds times forward passes under no_grad; a training step needs gradients back on
        calls = {k: (lambda call=call: _with_grad(call)) for k, call in calls.items()}
        return prune.latency_rounds(calls, rounds=rounds, repeats=repeats, warmup=warmup)

    try:  # a failure is a result to report, not a reason to stop the check
        try:
            times = timed(("fp32", "bf16") if w.amp_applies else ("fp32",))
        except Exception as e:
            if not w.amp_applies:
                raise
            row["bf16_error"] = f"{type(e).__name__}: {e}"[:300]  # then fp32 alone, if it runs
            print(f"  {w.series} {w.name}: with bf16, {row['bf16_error']}")
            times = timed(("fp32",))
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        print(f"  {w.series} {w.name}: {row['error']}")
        return row
    per = {k: [t / w.per_step(batch) for t in v] for k, v in times.items()}
    row["fp32_s"] = statistics.median(per["fp32"])
    row["rounds_fp32_s"] = per["fp32"]
    if "bf16" in per:
        row["bf16_s"] = statistics.median(per["bf16"])
        row["rounds_bf16_s"] = per["bf16"]
        row["bf16_over_fp32"] = statistics.median(b / f for b, f in zip(per["bf16"], per["fp32"]))
    row["best_s"] = min(row.get("bf16_s", math.inf), row["fp32_s"])
    bf = f", bf16 {row['bf16_s'] * 1e3:.3f} ms ({row['bf16_over_fp32']:.2f}x)" if "bf16_s" in row else ""
    print(f"  {w.series} {w.name} (batch {batch}): fp32 {row['fp32_s'] * 1e3:.3f} ms/{w.unit}{bf}")
    return row


def loop_throughput(device: torch.device, n_images: int, batch: int, rounds: int, workers: int) -> dict:
    """Images per second of ``prunebook.train.fit`` and of a DataLoader loop training ResNet-20 on the same random
    CIFAR-shaped images (crop with padding 4 and flip in both), one pass each per round, alternating."""
    from torchvision import transforms as T

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 32, 32, 3), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n_images,), generator=g)
    mean, std = [0.5] * 3, [0.25] * 3
    tensors = data.ImageSet((images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25, labels, list(range(10)),
                            "random-cifar")
    loader = DataLoader(ArrayImages(images.numpy(), labels.numpy(),
                                    T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                               T.Normalize(mean, std)])),
                        batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    fit_model, dl_model = models.resnet_cifar(20).to(device), models.resnet_cifar(20).to(device)
    dl_opt = train.make_optimizer(dl_model, "sgd", 0.05, 0.9, 5e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def with_fit():
        train.fit(fit_model, tensors, epochs=1, batch_size=batch, lr=0.05, crop_padding=4, flip=True, device=device,
                  progress_bar=False)
        return len(tensors)

    def with_loader():
        seen = 0
        dl_model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, device.type == "cuda"):  # fit's default: bf16 autocast on CUDA
                loss = F.cross_entropy(dl_model(x).float(), y)
            dl_opt.zero_grad(set_to_none=True)
            loss.backward()
            dl_opt.step()
            seen += len(y)
        return seen

    calls = {"prunebook.train.fit": with_fit, "DataLoader": with_loader}
    for call in calls.values():  # warm-up: one pass each (workers started, kernels chosen)
        call()
    out = {k: [] for k in calls}
    for r in range(rounds):
        for key in list(calls) if r % 2 == 0 else list(calls)[::-1]:
            sync()
            t0 = time.perf_counter()
            n = calls[key]()
            sync()
            out[key].append(n / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(out["prunebook.train.fit"], out["DataLoader"])]
    row = {"model": "ResNet-20, 3x32x32, SGD", "images": n_images, "batch": batch, "workers": workers,
           "rounds": rounds, "fit_images_per_s": statistics.median(out["prunebook.train.fit"]),
           "dataloader_images_per_s": statistics.median(out["DataLoader"]), "ratio": statistics.median(ratios),
           "rounds_fit": out["prunebook.train.fit"], "rounds_dataloader": out["DataLoader"], "round_ratios": ratios}
    print(f"  fit {row['fit_images_per_s']:.0f} images/s, DataLoader ({workers} workers) "
          f"{row['dataloader_images_per_s']:.0f} images/s: {row['ratio']:.2f}x")
    return row


# ------------------------------------------------------------------------------------------------ 3. projection


def projections(rows: list[dict], planned: dict[str, list[Plan]], series: list[str]) -> list[dict]:
    """Per series: each planned workload's steps times its measured step (the faster of fp32 and bf16)."""
    by_name = {(r["series"], r["model"]): r for r in rows}
    out = []
    for s in series:
        parts, missing = [], []
        for plan in planned[s]:
            row = by_name.get((s, plan.workload))
            if row is None or "best_s" not in row:
                missing.append(plan.workload)
                continue
            parts.append({"model": plan.workload, "steps": plan.steps, "count": plan.count, "step_s": row["best_s"],
                          "seconds": plan.steps * row["best_s"]})
        total = sum(p["seconds"] for p in parts) if parts and not missing else None
        out.append({"series": s, "parts": parts, "missing": missing, "seconds": total,
                    "hours": None if total is None else total / 3600})
    return out


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    if seconds < 3600:
        return f"about {seconds / 60:.0f} min" if seconds >= 60 else f"about {seconds:.0f} s"
    return f"about {seconds / 3600:.1f} h"


def markdown(report: dict) -> str:
    dev = report["device"]
    lines = [f"# GPU check: {dev['name']}", "",
             f"`python benchmarks/gpu_check.py{' --quick' if report['quick'] else ''}`, {report['date']}, "
             f"{report['wall_s']:.0f} s in all, commit {report['versions']['commit']}. torch "
             f"{report['versions']['torch']}, CUDA {report['versions']['cuda']}, Python "
             f"{report['versions']['python']}.", ""]
    if report["quick"]:
        lines += ["**Quick form**: tiny batches and one round on a few series; its step times say nothing about the "
                  "papers' batches, and its projections are not estimates (they show the report's shape).", ""]
    lines += ["## 1. The paper profile's dry run on the device", ""]
    d = report["dry_run"]
    if not d.get("available"):
        lines += [f"{d.get('note', 'not run')}.", ""]
    else:
        lines += ["| series | status | wall s | limit s | last line |", "|---|---|---:|---:|---|"]
        for r in d["runs"]:
            last = (r["tail"][-1] if r["tail"] else "").replace("|", "/")[:100]
            lines.append(f"| {r['series']} | {r['status']} | {r['wall_s']} | {r['limit_s']} | {last} |")
        lines.append("")
    lines += ["## 2. Training step times (paired rounds, median)", "",
              "| series | model | batch | fp32 ms | bf16 ms | bf16 / fp32 |", "|---|---|---:|---:|---:|---:|"]
    for r in report["steps"]:
        if "error" in r:
            lines.append(f"| {r['series']} | {r['model']} | {r['batch']} | error: {r['error'][:80]} | | |")
            continue
        unit = "" if r["unit"] == "step" else f" per {r['unit']}"
        bf = (f"{r['bf16_s'] * 1e3:.3f} | {r['bf16_over_fp32']:.2f}" if "bf16_s" in r
              else f"error: {r['bf16_error'][:60]} | " if "bf16_error" in r else "n/a | n/a")
        lines.append(f"| {r['series']} | {r['model']}{unit} | {r['batch']} | {r['fp32_s'] * 1e3:.3f} | {bf} |")
    t = report["loop"]
    lines += ["", f"`prunebook.train.fit` against a DataLoader loop: {t['error']}." if "error" in t else
              f"`prunebook.train.fit` against a DataLoader loop ({t['model']}, {t['images']} random images, batch "
              f"{t['batch']}, {t['workers']} workers, {t['rounds']} rounds): {t['fit_images_per_s']:.0f} against "
              f"{t['dataloader_images_per_s']:.0f} images/s, **{t['ratio']:.2f}x** (median of per-round ratios).", "",
              "## 3. Projected wall time of each series' `paper` profile", "",
              "Planned steps (counted from the settings the notebooks read) times the measured step, the faster of "
              "fp32 and bf16; training only.", "",
              f"| series | projected paper wall time on one {dev['short']} | what is counted |", "|---|---|---|"]
    for p in report["projection"]:
        counted = "; ".join(f"{q['model']}: {q['count']}" for q in p["parts"])
        if p["missing"]:
            counted += ("; " if counted else "") + "not measured: " + ", ".join(p["missing"])
        lines.append(f"| {p['series']} | {_hours(p['seconds'])} | {counted} |")
    return "\n".join(lines) + "\n"


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name = props.name
        return {"type": "cuda", "name": name, "short": name.replace("NVIDIA ", "").split()[0],
                "memory_gib": round(props.total_memory / 2**30, 1)}
    return {"type": device.type, "name": f"{platform.processor() or platform.machine()} CPU, "
            f"{torch.get_num_threads()} threads", "short": "CPU"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny batches, one round, series 01 and 02 (any machine)")
    parser.add_argument("--series", nargs="+", default=None, help="series to include (01 or 01_ap)")
    parser.add_argument("--rounds", type=int, default=None, help="paired timing rounds (default 5; quick 1)")
    parser.add_argument("--dry-timeout", type=float, default=300.0, help="seconds each series' dry run may take")
    parser.add_argument("--dry-budget", type=float, default=300.0, help="seconds all the dry runs may take")
    parser.add_argument("--dry-parallel", type=int, default=8, help="series dry-run side by side (default: all)")
    parser.add_argument("--no-dry-run", action="store_true", help="skip step 1 (the quick form skips it anyway)")
    parser.add_argument("--out", default=None, help="report path without suffix, .md and .json are written (default: "
                        "benchmarks/results/gpu_check, with --quick gpu_check_quick)")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    device = config.pick_device(args.device)
    series = list(QUICK_SERIES if args.quick else SERIES)
    if args.series:
        series = [s for s in SERIES if any(s == x or s.split("_")[0] == x or s.split("_", 1)[1] == x
                                           for x in args.series)]
    rounds = args.rounds or (1 if args.quick else 5)
    repeats, warmup = (1, 1) if args.quick else (3, 3)
    print(f"device {device}, torch {torch.__version__}, series {' '.join(series)}")

    print("1. dry run of the paper profile")
    if args.quick or args.no_dry_run:
        dry = {"available": False, "note": "skipped (--quick)" if args.quick else "skipped (--no-dry-run)", "runs": []}
        print(f"  {dry['note']}")
    else:
        dry = dry_runs(series, device, args.dry_timeout, args.dry_parallel, args.dry_budget)

    print("2. training steps")
    rows, planned = [], {}
    for s in series:
        loads, planned[s] = SERIES_CHECKS[s](args.quick)
        for w in loads:  # quick: the same architecture at a tiny batch (02: fewer stacked networks)
            rows.append(time_workload(w, device, min(2, w.batch) if args.quick else w.batch, rounds, repeats, warmup))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    try:
        loop = loop_throughput(device, n_images=128 if args.quick else 12_800, batch=64, rounds=rounds,
                               workers=0 if args.quick else min(8, os.cpu_count() or 1))
    except Exception as e:  # reported, like a step that fails
        loop = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(f"  fit against DataLoader: {loop['error']}")

    print("3. projection")
    proj = projections(rows, planned, series)
    for p in proj:
        print(f"  {p['series']}: {_hours(p['seconds'])}")
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                **{name: sys.modules[name].__version__ for name in ("torchvision", "transformers", "river")
                   if name in sys.modules}}
    try:  # a copy of the tree without git (or without its history) has no commit to name
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        versions["commit"] = commit.stdout.strip() or None
    except OSError:
        versions["commit"] = None
    report = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": device_info(device), "versions": versions, "series": series,
              "settings": {"rounds": rounds, "repeats": repeats, "warmup": warmup},
              "dry_run": dry, "steps": rows, "loop": loop, "projection": proj}
    report["wall_s"] = time.perf_counter() - t_start
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("gpu_check_quick" if args.quick else "gpu_check"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.md')} and .json in {report['wall_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()
