"""What reversed attention costs: a training step of DependencyViT against the plain ViT of the same size.

    python benchmarks/reversed_attention.py [--batch 128] [--rounds 15] [--threads 2] [--dataset fashion_mnist]
                                            [--device auto]

Every arm is built by 05_dependencyvit's ``build`` at the series' CPU size (patch 4, dim 96, depth 6, 6 heads, MLP
ratio 2) and trains on the same random batch (the cost does not depend on the pixels): forward, cross-entropy,
backward and an AdamW step. The arms:
- plain ViT, attention through ``F.scaled_dot_product_attention`` (the fused kernel);
- plain ViT, attention written out (softmax, then A V): what the fused kernel saves;
- DependencyViT: reversed attention cannot use the fused kernel (the weights are transposed and gated before V);
- DependencyViT-Lite: the same, dropping a fifth of the original tokens after blocks 2 and 4.
After one untimed warm-up step each, the arms take turns one step at a time for ``rounds`` rounds (the order
rotating every round), so that a machine shared with other work slows every arm alike; the report gives the median
milliseconds per step, images per second and the ratio to the fused plain ViT, all from this one run: the ratio
of the medians and the median of the ratios within a round (the steady one on a loaded machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from prunebook import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks" / "05_dependencyvit"))
import dependencyvit as D  # noqa: E402


def arms(dataset: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    fused = D.build("vit", dataset)
    explicit = D.build("vit", dataset)
    for blk in explicit.blocks:
        blk.attn.fused = False
    return {"ViT (fused SDPA)": fused, "ViT (explicit attention)": explicit,
            "DependencyViT": D.build("dependencyvit", dataset),
            "DependencyViT-Lite": D.build("dependencyvit", dataset, prune_at=(1, 3), keep=D.lite_keep_ratios(2, 0.2))}


def step_seconds(model, optimizer, x, y, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dataset", default="fashion_mnist", choices=sorted(D.DATASETS))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = config.pick_device(args.device)
    torch.set_num_threads(args.threads)
    size, channels, classes = D.DATASETS[args.dataset]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, channels, size, size, generator=g).to(device)
    y = torch.randint(classes, (args.batch,), generator=g).to(device)
    models = {name: m.to(device).train() for name, m in arms(args.dataset).items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}
    example = x[:1]
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.dataset} "
          f"{channels}×{size}×{size}, batch {args.batch}, {args.rounds} steps an arm")
    names = list(models)
    for name in names:
        step_seconds(models[name], optimizers[name], x, y, device)  # warm-up
    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(step_seconds(models[name], optimizers[name], x, y, device))
    base = times[names[0]]
    print(f"{'model':<26} {'params':>8} {'MMACs/img':>10} {'ms/step':>9} {'img/s':>8} {'vs fused ViT':>13} "
          f"{'in-round ratio':>15}")
    for name, m in models.items():
        t = statistics.median(times[name])
        params = sum(p.numel() for p in m.parameters())
        mmacs = D.macs(m, example) / 1e6
        paired = statistics.median(a / b for a, b in zip(times[name], base))
        print(f"{name:<26} {params:>8,} {mmacs:>10.1f} {t * 1000:>9.1f} {args.batch / t:>8.0f} "
              f"{t / statistics.median(base):>13.3f} {paired:>15.3f}")


if __name__ == "__main__":
    main()
