"""Runs on a Dask cluster: the parallel map, notebook runs side by side, seeds, the shared-cache check."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed", reason="dask distributed is not installed")

from prunebook import cache, config, parallel  # noqa: E402

# A notebook that takes a second: it notes when it ran and, as the first of its run, waits (up to 30 s) for
# another run's first notebook to start, which only happens when runs go side by side.
TINY = [
    ("code", {"tags": ["parameters"]}, "profile = None\nseed = 0"),
    ("code", {}, """\
import json, os, time
from pathlib import Path
from prunebook import config
start = time.time()
marks = Path(os.environ["PRUNEBOOK_CACHE"]) / "marks"
marks.mkdir(parents=True, exist_ok=True)
me = f"{Path.cwd().name}-{seed}"
first = not (marks / me).exists()
(marks / me).write_text(str(start))
while first and time.time() - start < 30 and not [p for p in marks.iterdir() if p.name != me]:
    time.sleep(0.1)
time.sleep(0.5)
out = config.output_dir("results", profile)
out.mkdir(parents=True, exist_ok=True)
claims = [{"id": "c", "kind": "paper", "text": "a claim", "source": "-", "paper": 1, "measured": seed,
           "verdict": "smoke", "holds": None}]
result = {"series": Path.cwd().name, "profile": profile, "seed": seed, "start": start, "end": time.time(),
          "wall_s": 1.0, "claims": claims}
"""),
]


def tiny_notebook(path, name):
    cells = [{"cell_type": kind, "metadata": meta, "source": src, "outputs": [], "execution_count": None}
             for kind, meta, src in TINY]
    cells.append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                  "source": f"result['notebook'] = {name!r}\n(out / '{name}.json').write_text(json.dumps(result))"})
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def tiny_root(tmp_path):
    root = tmp_path / "repo"
    for series, notebooks in {"00_first": ["01_a", "02_b"], "01_second": ["01_c"]}.items():
        (root / "notebooks" / series).mkdir(parents=True)
        for name in notebooks:
            tiny_notebook(root / "notebooks" / series / f"{name}.ipynb", name)
    (root / "pyproject.toml").write_text("")
    return root


def prunebook(*args, root, cache_dir):
    env = {**os.environ, "PRUNEBOOK_ROOT": str(root), "PRUNEBOOK_CACHE": str(cache_dir)}
    env.pop("PRUNEBOOK_SCHEDULER", None)
    return subprocess.run([sys.executable, "-m", "prunebook.cli", *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=240)


def test_series_side_by_side_in_order_and_seeds_beside_the_committed_outputs(tiny_root, tmp_path):
    out = prunebook("run", "--profile", "smoke", "--workers", "2", "--seeds", "0", "1", root=tiny_root,
                    cache_dir=tmp_path / "cache")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Dask dashboard: http" in out.stdout and "6 of 6 notebooks ran at smoke" in out.stdout
    assert out.stdout.count("[") >= 6 and "[6/6]" in out.stdout  # a progress line per finished notebook
    runs = {}
    for seed, base in ((0, tiny_root / "notebooks"), (1, tiny_root / "runs/smoke/seed-1")):
        for series, name in (("00_first", "01_a"), ("00_first", "02_b"), ("01_second", "01_c")):
            folder = base / series / "results" / ("smoke" if seed == 0 else "")
            r = json.loads((folder / f"{name}.json").read_text())
            assert r["seed"] == seed
            runs[series, name, seed] = r
            executed = tiny_root / "runs/smoke" / ("" if seed == 0 else "seed-1") / series / f"{name}.ipynb"
            assert executed.is_file()
    for seed in (0, 1):  # reading order within a series
        assert runs["00_first", "02_b", seed]["start"] >= runs["00_first", "01_a", seed]["end"]
    # side by side: some two notebooks of different runs overlap in time
    spans = sorted((r["start"], r["end"]) for r in runs.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    assert not (tiny_root / "notebooks/00_first/results/smoke/seed-1").exists()

    report = prunebook("report", "--seeds", root=tiny_root, cache_dir=tmp_path / "cache")
    assert report.returncode == 0, report.stderr
    assert "| 00_first | 02_b | smoke | paper | a claim | 1 | smoke, 2 seeds | 0: 0 (smoke); 1: 1 (smoke) |" \
        in report.stdout


def with_cell(path, source):
    nb = json.loads(path.read_text())
    nb["cells"].insert(1, {"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
                           "execution_count": None})
    path.write_text(json.dumps(nb))


def test_on_the_cluster_a_failure_is_reported_and_a_refusal_stops_the_run(tiny_root, tmp_path):
    broken = tiny_root / "notebooks/00_first/01_a.ipynb"
    with_cell(broken, "raise RuntimeError('boom')")
    before = broken.read_text()
    out = prunebook("run", "--profile", "smoke", "--workers", "2", "--inplace", root=tiny_root,
                    cache_dir=tmp_path / "cache")
    assert out.returncode == 1
    assert "00_first/01_a.ipynb: FAILED" in out.stdout and "RuntimeError: boom" in out.stdout
    assert "2 of 3 notebooks ran at smoke" in out.stdout and "failed: 00_first/01_a.ipynb" in out.stdout
    assert broken.read_text() == before  # never replaced by a failed run
    for ran in ("00_first/02_b.ipynb", "01_second/01_c.ipynb"):  # the others were run in place
        assert json.loads((tiny_root / "notebooks" / ran).read_text())["metadata"].get("papermill")

    with_cell(tiny_root / "notebooks/01_second/01_c.ipynb",
              "class ConfigError(ValueError): pass\nraise ConfigError('seed=-1 must be a non-negative integer')")
    out = prunebook("run", "--profile", "smoke", "--workers", "2", root=tiny_root, cache_dir=tmp_path / "cache")
    # the last line prunebook prints (a kernel still running elsewhere may log its own shutdown after it)
    ours = [line for line in out.stderr.strip().splitlines() if not line.startswith("[IPKernelApp]")]
    assert out.returncode == 2 and ours[-1] == "prunebook: error: 01_c.ipynb: seed=-1 must be a non-negative integer"


def mapping_series(root, name):
    """A series whose one notebook maps over the cluster, writing where each item ran to ``out.json``."""
    series = root / "notebooks" / name
    series.mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (series / "grid.py").write_text(
        "def where(i):\n    import distributed\n    return i, distributed.get_worker().name\n")
    # a function of the series module, and one defined in the notebook that uses that module
    code_notebook(series / "01_grid.ipynb", "import json, grid\nfrom prunebook import parallel\n"
                                            "def where_here(i):\n    return grid.where(i)\n"
                                            "json.dump([parallel.map(grid.where, range(5)), "
                                            "parallel.map(where_here, range(5), desc='cells')], open('out.json', 'w'))")
    return series


def code_notebook(path, source):
    """A notebook of a parameters cell and one code cell."""
    cells = [("code", {"tags": ["parameters"]}, "profile = None"), ("code", {}, source)]
    nb = {"cells": [{"cell_type": k, "metadata": m, "source": src, "outputs": [], "execution_count": None}
                    for k, m, src in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def run_on_one_worker(root, cache_dir, monkeypatch):
    """``prunebook run --profile smoke`` on a cluster of one worker with one notebook slot, sharing ``cache_dir``."""
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(cache_dir))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"notebook": 1}) as cluster:
        return prunebook("run", "--profile", "smoke", "--scheduler", cluster.scheduler_address, root=root,
                         cache_dir=cache_dir)


def test_a_notebook_maps_over_the_cluster_even_with_one_worker(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    series = mapping_series(root, "00_grid")
    out = run_on_one_worker(root, tmp_path / "cache", monkeypatch)
    assert out.returncode == 0, out.stdout + out.stderr
    # the notebook's task gave its one worker thread to the map's five tasks: no deadlock, same order
    assert json.loads((series / "out.json").read_text()) == [[[i, 0] for i in range(5)]] * 2


def test_notebooks_waiting_for_a_slot_never_block_a_running_notebooks_map(tmp_path):
    """Six series on two workers: each worker runs one notebook and holds two other series' notebooks until its slot
    frees. A scheduler that queues tasks counted those workers as full and never ran the maps (a deadlock)."""
    root = tmp_path / "repo"
    folders = [mapping_series(root, f"0{i}_grid") for i in range(6)]
    out = prunebook("run", "--profile", "smoke", "--workers", "2", root=root, cache_dir=tmp_path / "cache")
    assert out.returncode == 0, out.stdout + out.stderr
    for series in folders:
        assert [i for i, _ in json.loads((series / "out.json").read_text())[0]] == list(range(5))


def test_a_finished_notebook_is_not_run_again_when_its_worker_dies(tmp_path, monkeypatch):
    """One worker: the first series' notebook finishes there, then the second series' notebook kills that worker
    (once). Dask reruns the killed notebook; the finished one, whose result that worker held, must not run again."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "pyproject.toml").write_text("")
    marks = tmp_path / "marks"
    marks.mkdir()
    code_notebook(root / "notebooks/00_first/01_a.ipynb",
                  f"from pathlib import Path\nPath({str(marks)!r}, f'ran-{{__import__(\"os\").getpid()}}').touch()")
    code_notebook(root / "notebooks/01_second/01_b.ipynb",
                  f"import os, signal\nfrom pathlib import Path\nmark = Path({str(marks)!r}) / 'killed'\n"
                  "if not mark.exists():\n    mark.touch()\n    os.kill(os.getppid(), signal.SIGKILL)  # the worker")
    out = run_on_one_worker(root, tmp_path / "cache", monkeypatch)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (marks / "killed").exists() and len(list(marks.glob("ran-*"))) == 1
    assert "2 of 2 notebooks ran at smoke" in out.stdout


def test_report_seeds_counts_the_seeds_a_claim_held_on(tmp_path):
    root = tmp_path / "repo"
    (root / "notebooks/00_demo").mkdir(parents=True)
    (root / "notebooks/00_demo/01_demo.ipynb").write_text("{}")
    (root / "pyproject.toml").write_text("")
    for seed, verdict, where in ((0, "holds", "notebooks/00_demo/results/cpu"),
                                 (1, "fails", "runs/cpu/seed-1/00_demo/results"),
                                 (2, "holds", "runs/cpu/seed-2/00_demo/results")):
        claim = {"id": "x", "kind": "paper", "text": "it works", "source": "Fig. 1", "paper": 0.9,
                 "measured": 0.8 + seed / 100, "verdict": verdict, "holds": verdict == "holds",
                 "faithful": True, "unfaithful_because": ""}
        (root / where).mkdir(parents=True)
        result = {"series": "00_demo", "notebook": "01_demo", "profile": "cpu", "seed": seed, "wall_s": 1}
        (root / where / "01_demo.json").write_text(json.dumps({**result, "claims": [claim]}))
    out = prunebook("report", "--seeds", "--profile", "cpu", root=root, cache_dir=tmp_path / "cache")
    assert "| 00_demo | 01_demo | cpu | paper | it works | 0.9 | 2 of 3 seeds | 0: 0.8 (holds); 1: 0.81 (fails); " \
           "2: 0.82 (holds) |" in out.stdout
    plain = prunebook("report", "--profile", "cpu", root=root, cache_dir=tmp_path / "cache")
    assert plain.stdout.count("| it works |") == 1  # the plain report stays the committed (seed-0) run


def test_output_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRUNEBOOK_RESULTS_DIR", raising=False)
    assert config.output_dir("results", "cpu") == tmp_path / "results" / "cpu"
    monkeypatch.setenv("PRUNEBOOK_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert config.output_dir("results", "cpu") == tmp_path / "elsewhere"


def square_sum(i):
    import numpy as np

    x = np.random.default_rng(i).normal(size=1000)
    return i, float((x * x).sum()), os.getpid()


def test_map_in_process_when_there_is_no_cluster():
    got = parallel.map(square_sum, range(5))
    assert [g[:2] for g in got] == [square_sum(i)[:2] for i in range(5)]
    assert {g[2] for g in got} == {os.getpid()}


@pytest.fixture(scope="module")
def client():
    env = {"OMP_NUM_THREADS": "1", "PRUNEBOOK_GPUS": "5,7"}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"GPU": 1}, env=env) as cluster, distributed.Client(cluster) as c:
        yield c


def test_map_on_the_cluster_equals_the_loop(client):
    items = list(range(12))
    got = parallel.map(square_sum, items)
    assert [g[:2] for g in got] == [square_sum(i)[:2] for i in items]  # same values, same order
    assert os.getpid() not in {g[2] for g in got}  # and they ran on the workers


class Unpickled:
    """Large data a function refers to: each unpickling leaves a mark (at most once a worker, not once a task)."""

    def __init__(self, marks):
        self.marks, self.data = marks, bytes(5_000_000)

    def __setstate__(self, state):
        self.__dict__.update(state)
        (Path(self.marks) / f"unpickled-{os.getpid()}-{time.time_ns()}").touch()


def test_a_function_and_its_data_travel_once_a_worker_not_once_a_task(client, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    big = Unpickled(str(marks))
    got = parallel.map(lambda i: (i, len(big.data), os.getpid()), range(12))
    assert [g[:2] for g in got] == [(i, 5_000_000) for i in range(12)]
    assert len(list(marks.iterdir())) <= len({g[2] for g in got}) <= 2
    assert not list((cache.cache_dir() / "parallel").iterdir())  # the stashed function is removed after the map


def dies_once(args):
    i, marks = args
    mark = Path(marks) / f"died-{i}"
    if i == 3 and not mark.exists():
        mark.write_text("")
        time.sleep(0.2)
        os._exit(1)  # the worker process dies mid-task; its nanny starts a new one and Dask reruns the task
    return i * i


def test_a_killed_worker_costs_a_rerun_not_the_result(client, tmp_path):
    assert parallel.map(dies_once, [(i, str(tmp_path)) for i in range(8)]) == [i * i for i in range(8)]
    assert (tmp_path / "died-3").exists()


def fan_out(n):
    return sum(parallel.map(lambda x: x + 1, range(n)))


def test_a_task_that_maps_gives_up_its_slot():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c) as client:
        assert client.submit(fan_out, 6).result(timeout=60) == sum(range(1, 7))


def test_gpu_workers_get_one_gpu_each(client):
    assert parallel.has_gpu_workers(client)

    def pinned():
        parallel.pin_gpu()
        return os.environ["CUDA_VISIBLE_DEVICES"]

    workers = list(client.scheduler_info()["workers"])
    got = [client.submit(pinned, workers=[w], pure=False, resources={"GPU": 1}).result() for w in workers]
    assert sorted(got) == ["5", "7"]


def test_the_cache_must_be_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path / "mine"))
    env = {"PRUNEBOOK_CACHE": str(tmp_path / "theirs")}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env=env) as cluster:
        with distributed.Client(cluster) as c, pytest.raises(parallel.CacheNotShared, match="set PRUNEBOOK_CACHE"):
            parallel.check_shared_cache(c)
        assert not list((tmp_path / "theirs").iterdir())  # the probe is cleaned up
        out = prunebook("run", "--scheduler", cluster.scheduler_address, "--profile", "smoke",
                        root=Path(__file__).parent / "fixtures" / "demo_series", cache_dir=tmp_path / "mine")
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
        assert "set PRUNEBOOK_CACHE to a folder on a filesystem that the workers and this machine share" in out.stderr
        monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path / "theirs"))
        with distributed.Client(cluster) as c:
            parallel.check_shared_cache(c)  # the same folder: passes, and leaves nothing behind
        assert not list((tmp_path / "theirs").iterdir())


def slow_compute(args):
    cache_dir, i = args
    os.environ["PRUNEBOOK_CACHE"] = cache_dir

    def compute():
        time.sleep(0.3)
        return {"value": list(range(1000)), "by": i}

    return cache.cached("shared", {"k": 1}, compute)["value"][-1]


def test_two_workers_computing_one_key_and_a_damaged_file(client, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path))
    assert parallel.map(slow_compute, [(str(tmp_path), i) for i in range(4)]) == [999] * 4
    path = cache.path_for("shared", {"k": 1})
    assert cache.load(path)["value"][-1] == 999
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    path.write_bytes(path.read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match=f"damaged cache file {path}"):
        assert slow_compute((str(tmp_path), 9)) == 999
    assert cache.load(path)["by"] == 9 and path.with_name(path.name + ".damaged").exists()
