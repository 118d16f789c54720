"""What counting dead neurons costs: training with 01_ap's DeadNeuronMeter hooks on, against the same training off.

    python benchmarks/dnr_hooks.py [--images 12000] [--epochs 2] [--repeats 3] [--device auto]

Both arms train the same network from the same initialisation on the same Fashion-MNIST images with
``prunebook.train.fit`` (one epoch of warm-up first, not timed); the meter arm counts every ReLU output of every
training batch, the alive-only rate included, as notebook 01 of the series does. The arms alternate, ``repeats``
times each, and the report gives the median seconds per epoch and the ratio hooks-on / hooks-off, for
LeNet-300-100 and the small CNN with BatchNorm. The series asks for a ratio below 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from prunebook import config, data, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks" / "01_ap"))
import ap  # noqa: E402


def seconds_per_epoch(make, images, epochs, device, hooks):
    torch.manual_seed(0)
    net = make().to(device)
    meter = ap.DeadNeuronMeter(net, producers=ap.sequential_producers(net))
    kw = {"batch_size": 128, "lr": 0.05, "progress_bar": False, "device": device}
    train.fit(net, images, epochs=1, **kw)  # warm-up
    t0 = time.perf_counter()
    if hooks:
        with meter:
            train.fit(net, images, epochs=epochs, callbacks=[meter], **kw)
    else:
        train.fit(net, images, epochs=epochs, **kw)
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = config.pick_device(args.device)
    train_set = data.stratified_subset(data.fashion_mnist("train"), args.images, seed=0)
    print(f"device {device}, {torch.get_num_threads()} threads, {len(train_set)} images, {args.epochs} epochs a run")
    print(f"{'network':<16} {'off s/epoch':>12} {'on s/epoch':>12} {'on / off':>9}")
    for name, make in (("LeNet-300-100", lambda: ap.build("lenet")), ("small CNN (BN)", lambda: ap.build("cnn"))):
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for hooks in (False, True):
                times[hooks].append(seconds_per_epoch(make, train_set, args.epochs, device, hooks))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:<16} {off:>12.3f} {on:>12.3f} {on / off:>9.3f}")


if __name__ == "__main__":
    main()
