"""What running on a Dask cluster buys on this machine (run by hand; numbers depend on what else runs).

    .venv/bin/python benchmarks/parallel_run.py [--series 00_a 01_b] [--trainings 16]

1. ``prunebook run --profile smoke`` of two series, ``--workers 1`` against ``--workers 2`` (wall time of the
   whole command). Without ``--series``: two copies of the test suite's demo series in a temporary checkout.
2. ``prunebook.parallel.map`` over small trainings (an MLP on scikit-learn digits) against a plain loop, on a
   LocalCluster of 2 worker processes of one thread each; the loop runs with one thread too.
3. The scheduler's overhead per task: a map of a function that does nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(root: Path, series: list[str], workers: int, cache: Path) -> float:
    env = {**os.environ, "PRUNEBOOK_ROOT": str(root), "PRUNEBOOK_CACHE": str(cache)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "prunebook.cli", "run", *series, "--profile", "smoke",
                          "--workers", str(workers)], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"prunebook run --workers {workers} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return took


def run_times(series: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if series:
            root = ROOT
        else:  # two copies of the demo series
            root = tmp / "repo"
            demo = ROOT / "tests" / "fixtures" / "demo_series"
            shutil.copytree(demo, root, ignore=shutil.ignore_patterns("runs", "figures", "results"))
            shutil.copytree(root / "notebooks" / "00_demo", root / "notebooks" / "01_demo_copy")
            series = ["00_demo", "01_demo_copy"]
        # a fresh cache for each, so neither reuses the other's trainings
        return timed_run(root, series, 1, tmp / "cache1"), timed_run(root, series, 2, tmp / "cache2")


def small_training(seed: int) -> float:
    import torch
    from prunebook import config, data, models, train

    torch.set_num_threads(1)
    config.seed_everything(seed)  # the initial weights too, so a worker and the loop train the same network
    digits = data.digits()
    train_set, test_set = data.train_val_split(digits, 0.25, seed=seed)
    model = models.MLP(64, (64,), 10)
    train.fit(model, train_set, epochs=20, batch_size=64, lr=0.1, weight_decay=0, device="cpu", seed=seed,
              progress_bar=False)
    return train.evaluate(model, test_set)["acc"]


def nothing(i: int) -> int:
    return i


def map_times(n: int, tasks: int) -> dict[str, float]:
    import distributed
    from prunebook import parallel

    small_training(0)  # warm, as the workers are below: imports and data loading
    t0 = time.perf_counter()
    looped = [small_training(i) for i in range(n)]
    loop_s = time.perf_counter() - t0
    env = {"OMP_NUM_THREADS": "1", "PRUNEBOOK_HEADLESS": "1"}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", env=env) as cluster, \
            distributed.Client(cluster):
        parallel.map(small_training, [0, 1])  # warm: imports and data loading on both workers
        t0 = time.perf_counter()
        mapped = parallel.map(small_training, range(n))
        map_s = time.perf_counter() - t0
        parallel.map(nothing, range(20))
        t0 = time.perf_counter()
        parallel.map(nothing, range(tasks))
        per_task = (time.perf_counter() - t0) / tasks
    assert mapped == looped, "parallel.map and the loop disagree"
    return {"loop_s": loop_s, "map_s": map_s, "per_task_ms": per_task * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="*", default=[], help="two series of this checkout (default: demo copies)")
    parser.add_argument("--trainings", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=500, help="tasks for the overhead measurement")
    args = parser.parse_args()
    os.environ["PRUNEBOOK_HEADLESS"] = "1"
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    one, two = run_times(args.series)
    print(f"prunebook run, two series at smoke: --workers 1 {one:.1f} s, --workers 2 {two:.1f} s "
          f"(speed-up {one / two:.2f}x)", flush=True)
    m = map_times(args.trainings, args.tasks)
    print(f"{args.trainings} small trainings: loop {m['loop_s']:.1f} s, parallel.map on 2 workers {m['map_s']:.1f} s "
          f"(speed-up {m['loop_s'] / m['map_s']:.2f}x); same results", flush=True)
    print(f"scheduler overhead: {m['per_task_ms']:.2f} ms per task (a map of {args.tasks} empty tasks)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine skews these)")


if __name__ == "__main__":
    main()
