"""Batched training of many grokking networks against training them one at a time.

    python benchmarks/grokking_batched.py [--models 8] [--steps 200] [--device auto]

The phase diagrams of series 02 are hundreds of tiny trainings (p = 97, width 500, full batch). They share
the training pairs within one column of a diagram (same alpha, different label corruption xi), so
``grokking.train`` stacks their weights and advances all of them with one batched matmul per layer. This
script trains the same grid slice (alpha = 0.5, ``--models`` values of xi, weight decay 5) both ways for
the same number of steps and reports network-steps per second and the ratio. Both paths run the same code
(``grokking.train``): the one-at-a-time path simply calls it with one task.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from prunebook import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks" / "02_grokking"))
import grokking as gk  # noqa: E402


def time_it(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=8, help="networks in the grid slice")
    ap.add_argument("--steps", type=int, default=200, help="full-batch steps per network")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = config.pick_device(args.device)
    xis = np.linspace(0.0, 0.7, args.models).round(3).tolist()
    tasks = [gk.modular_task(gk.P, 0.5, x, seed=0) for x in xis]
    common = dict(steps=args.steps, weight_decay=5.0, log_every=10**9, device=device)

    gk.train(tasks[:1], seeds=[0], **{**common, "steps": 5})  # warm-up
    batched = time_it(lambda: gk.train(tasks, seeds=[0] * len(tasks), **common))
    single = time_it(lambda: [gk.train([t], seeds=[0], **common) for t in tasks])
    work = args.models * args.steps
    threads = "1 thread (grokking.train trains on one CPU thread)" if device.type == "cpu" else "GPU"
    print(f"device {device}, torch {torch.__version__}, {threads}; "
          f"{args.models} networks (p={gk.P}, width {gk.WIDTH}) x {args.steps} full-batch steps")
    print(f"{'one at a time':>14}: {single:7.2f} s  {work / single:8.1f} network-steps/s")
    print(f"{'batched':>14}: {batched:7.2f} s  {work / batched:8.1f} network-steps/s")
    print(f"speed-up: {single / batched:.2f}x")


if __name__ == "__main__":
    main()
