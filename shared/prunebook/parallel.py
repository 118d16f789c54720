"""One parallel map for the grids of a notebook (one cached training per item).

    results = prunebook.parallel.map(train_one, configs, desc="trainings")

On a Dask cluster (the code runs in a Dask worker task, a ``distributed.Client`` is open in this process, or
this is a notebook that ``prunebook run`` started on a cluster, which names it in ``$PRUNEBOOK_MAP_SCHEDULER``)
the items become tasks on the cluster; otherwise they run here, one after another. Either way the results come
back in the order of ``items``, the first exception is raised, and ``desc`` names a progress bar that advances
as each item finishes. ``fn`` may be defined in the notebook and use the series module beside it (``import gk``):
the workers import that module from the notebook's folder, which they see at the same path, and read ``fn``
from the cache folder, which they share with this process (``prunebook run --scheduler`` checks that they do).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def _where() -> str | None:
    """``"worker"`` inside a Dask worker task, ``"client"`` with a client open here (or one to open), else None."""
    if "distributed" not in sys.modules and not os.environ.get("PRUNEBOOK_MAP_SCHEDULER"):
        return None  # nothing imported distributed and no cluster was named: there is none to use
    import distributed

    try:
        distributed.get_worker()
        return "worker"
    except ValueError:
        pass
    try:
        distributed.default_client()
        return "client"
    except ValueError:
        pass
    if os.environ.get("PRUNEBOOK_MAP_SCHEDULER"):
        # a notebook kernel of a run on a cluster: its task gave up its worker thread while the kernel runs
        distributed.Client(os.environ["PRUNEBOOK_MAP_SCHEDULER"], set_as_default=True)
        return "client"
    return None


def map(fn: Callable[[Any], Any], items: Iterable[Any], *, desc: str | None = None, **submit: Any) -> list[Any]:
    """``[fn(x) for x in items]``, as cluster tasks when there is a cluster. ``desc``: the progress bar's label
    (no bar without it). ``submit`` goes to ``Client.map`` (e.g. ``resources={"GPU": 1}``) and is ignored
    in-process."""
    items = list(items)
    where = _where()
    if where is None:
        return [fn(x) for x in _bar(items, desc)]
    import distributed

    if where == "worker":
        # worker_client secedes this task from the worker's thread pool while it waits, so the tasks it
        # submits can run in its slot: no deadlock with fewer workers than tasks.
        with distributed.worker_client() as client:
            return _gather(client, client.map(fn, items, pure=False, **submit), desc)
    client = distributed.default_client()
    # ``fn`` travels as a file in the cache folder that the workers share, not in every task: pickled by value, a
    # function defined in the notebook carries the globals it uses (a dataset, trained weights), and n tasks would
    # hold n copies on the scheduler and the workers. A task rerun after its worker died reads the file again.
    stash = _stash(fn)
    n = len(items)
    try:
        return _gather(client, client.map(_call, [str(stash)] * n, items, [str(Path.cwd().resolve())] * n,
                                          pure=False, **submit), desc)
    finally:
        stash.unlink(missing_ok=True)


def _bar(items: list[Any], desc: str | None) -> Any:
    if desc is None:
        return items
    from .display import progress

    return progress(items, desc=desc)


def _gather(client: Any, futures: list[Any], desc: str | None) -> list[Any]:
    if desc is not None:
        import distributed

        from .display import progress

        with progress(total=len(futures), desc=desc) as bar:
            for _ in distributed.as_completed(futures):
                bar.update(1)
    return client.gather(futures)


def _stash(fn: Callable[[Any], Any]) -> Path:
    import cloudpickle

    from . import cache

    folder = cache.cache_dir() / "parallel"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.pkl"
    path.write_bytes(cloudpickle.dumps(fn))
    return path


_LOADED: dict[str, Callable[[Any], Any]] = {}  # stash path -> its function, in this worker: read once a map
_LOADING = threading.Lock()


def _call(stash: str, item: Any, folder: str) -> Any:
    import cloudpickle

    # unpickled only after the notebook's folder is on the path: a function defined in the notebook refers to the
    # series module by name (``grokking``), which the worker imports from there
    if folder not in sys.path:
        sys.path.insert(0, folder)
    pin_gpu()  # a worker of a LocalCluster with GPUs trains on its own GPU, as its notebooks do
    with _LOADING:
        if stash not in _LOADED:
            while len(_LOADED) >= 2:  # two notebooks' maps may alternate here; a third evicts the oldest
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[stash] = cloudpickle.loads(Path(stash).read_bytes())
        fn = _LOADED[stash]
    return fn(item)


# ---------------------------------------------------------------- the cluster a run uses


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: on the scheduler at ``scheduler`` (its cache folder checked to be this
    machine's), else on a LocalCluster of ``workers`` processes of one thread each. With k CUDA GPUs visible,
    the LocalCluster has one worker per GPU (``workers`` defaults to k), each declaring ``GPU=1`` and seeing
    only its own GPU. A cluster you start yourself needs ``distributed.scheduler.worker-saturation: inf`` too."""
    import dask
    import distributed

    if scheduler:
        with distributed.Client(scheduler) as client:
            check_shared_cache(client)
            yield client
        return
    gpus = visible_gpus()
    n = workers or len(gpus) or 1
    # one thread per worker: the notebooks' kernels and torch inherit it, so N workers use N cores; no person
    # watches a worker, so the trainings of a grid there print plain progress lines, as headless notebooks do
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PRUNEBOOK_HEADLESS": "1"}
    # a notebook holds its worker's "notebook" (or GPU) while it runs, so its task can give up the thread to
    # the tasks of its parallel.map without a second notebook starting there
    resources = {"notebook": 1, **({"GPU": 1} if gpus else {})}
    if gpus:
        env["PRUNEBOOK_GPUS"] = ",".join(gpus)
    # silence_logs=ERROR: Dask's warnings (an event loop slow on a busy machine) would bury the run's own lines.
    # worker-saturation inf: no scheduler-side queue. With it, a worker holding a running notebook and the next
    # series' notebook waiting for its slot counts as full, and the running notebook's map tasks wait forever.
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}), \
            distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=env, resources=resources,
                                     dashboard_address=":0", silence_logs=logging.ERROR) as local, \
            distributed.Client(local) as client:
        yield client


def visible_gpus() -> list[str]:
    """The CUDA devices this machine shows (as ``CUDA_VISIBLE_DEVICES`` would name them), without starting CUDA."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def pin_gpu() -> None:
    """In a worker of a LocalCluster with GPUs: see only this worker's GPU (worker i gets the i-th one). Called
    before a notebook kernel starts, which inherits it."""
    gpus = os.environ.get("PRUNEBOOK_GPUS")
    if gpus:
        import distributed

        name = distributed.get_worker().name
        index = name if isinstance(name, int) else int(hashlib.sha1(str(name).encode()).hexdigest(), 16)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.split(",")[index % len(gpus.split(","))]


def has_gpu_workers(client: Any) -> bool:
    return any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())


def notebook_resources(client: Any) -> dict[str, int] | None:
    """What a notebook task asks for: a GPU where workers declare GPUs, else a "notebook" slot where every
    worker declares one (LocalClusters of prunebook run do), else nothing (then its notebook's parallel.map
    runs in the notebook)."""
    if has_gpu_workers(client):
        return {"GPU": 1}
    workers = client.scheduler_info()["workers"].values()
    if workers and all(w.get("resources", {}).get("notebook") for w in workers):
        return {"notebook": 1}
    return None


def _write_probe(token: str) -> str:
    from . import cache

    name = f".probe-{token}-{socket.gethostname()}-{os.getpid()}"
    folder = cache.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("written by a worker to check that the cache folder is shared\n")
    return str(folder / name)


def check_shared_cache(client: Any) -> None:
    """Every worker writes a file into its cache folder; this process must see each one in its own. Else stop:
    the notebooks would recompute what others cached and the results would not come back."""
    from . import cache

    token = uuid.uuid4().hex[:12]
    written = client.run(_write_probe, token)  # worker address -> the path it wrote
    missing = []
    for path in written.values():
        here = cache.cache_dir() / Path(path).name
        if here.exists():
            here.unlink()
        else:
            missing.append(path)
    if missing:
        client.run(_remove, missing)
        raise CacheNotShared(f"the workers' cache folder ({Path(missing[0]).parent}) is not this machine's "
                             f"({cache.cache_dir()}): set PRUNEBOOK_CACHE to a folder on a filesystem that the "
                             "workers and this machine share")


def _remove(paths: list[str]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


class CacheNotShared(RuntimeError):
    """The workers write their cache where this process cannot read it."""
