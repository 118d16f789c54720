"""The prunebook command, as a user runs it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parent / "fixtures" / "demo_series"


def prunebook(*args, root, env_extra=None):
    import os

    env = {**os.environ, "PRUNEBOOK_ROOT": str(root), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "prunebook.cli", *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)


@pytest.fixture
def empty_root(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


@pytest.fixture
def demo_root(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("runs", "figures", "results"))
    return root


def test_list_and_report_with_no_series(empty_root):
    for command in ("list", "report"):
        out = prunebook(command, root=empty_root)
        assert out.returncode == 0 and "no series yet" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "nope"], "no series 'nope'; the series are: none yet"),
    (["run", "--profile", "fast"], "invalid choice: 'fast'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_gets_one_line_and_exit_2(empty_root, args, message):
    out = prunebook(*args, root=empty_root)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_parameters(demo_root):
    out = prunebook("run", "--profile", "smoke", "-p", "epoch=3", root=demo_root)
    assert out.returncode == 2 and "unknown parameter 'epoch'; these notebooks take:" in out.stderr
    assert "epochs" in out.stderr
    out = prunebook("run", "--profile", "smoke", "-p", "seed=0.5", root=demo_root)
    assert out.returncode == 2 and "expects int" in out.stderr
    out = prunebook("run", "-p", "profile=cpu", root=demo_root)
    assert out.returncode == 2 and "--profile" in out.stderr
    out = prunebook("run", "demo", "--only", "zzz", root=demo_root)
    assert out.returncode == 2 and "matches no notebook" in out.stderr


def test_run_report_and_list_on_a_demo_series(demo_root):
    out = prunebook("run", "00", "--profile", "smoke", "-p", "seed=1", root=demo_root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 of 1 notebooks ran at smoke" in out.stdout
    executed = demo_root / "runs" / "smoke" / "00_demo" / "01_demo.ipynb"
    nb = json.loads(executed.read_text())
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert nb["metadata"]["papermill"]["parameters"] == {"profile": "smoke", "seed": 1}
    assert str(demo_root) not in executed.read_text()
    result = json.loads((demo_root / "notebooks/00_demo/results/smoke/01_demo.json").read_text())
    assert result["seed"] == 1 and result["profile"] == "smoke"
    assert (demo_root / "notebooks/00_demo/figures/smoke/demo_accuracy.png").is_file()

    report = prunebook("report", root=demo_root)
    assert "| 00_demo | 01_demo | smoke | paper |" in report.stdout and "| smoke | yes |\n" in report.stdout
    assert (demo_root / "runs" / "report.md").is_file()
    assert "smoke: ran" in prunebook("list", root=demo_root).stdout


def test_a_failing_notebook_is_reported_and_the_others_still_run(demo_root):
    series = demo_root / "notebooks" / "00_demo"
    good = series / "01_demo.ipynb"
    bad = json.loads(good.read_text())
    bad["cells"].insert(3, {"cell_type": "code", "metadata": {}, "source": "raise RuntimeError('boom')",
                            "outputs": [], "execution_count": None})
    (series / "00_broken.ipynb").write_text(json.dumps(bad))
    before = (series / "00_broken.ipynb").read_text()
    out = prunebook("run", "--profile", "smoke", "--inplace", root=demo_root)
    assert out.returncode == 1
    assert "FAILED" in out.stdout and "RuntimeError: boom" in out.stdout
    assert "1 of 2 notebooks ran at smoke" in out.stdout
    assert (series / "00_broken.ipynb").read_text() == before  # a failed run never overwrites its source
    assert json.loads(good.read_text())["cells"][2]["outputs"]  # the good one was run in place


def test_a_refused_value_is_refused_once(demo_root):
    series = demo_root / "notebooks" / "00_demo"
    shutil.copyfile(series / "01_demo.ipynb", series / "02_again.ipynb")
    out = prunebook("run", "--profile", "smoke", "-p", "seed=-1", root=demo_root)
    assert out.returncode == 2
    assert "seed=-1 must be a non-negative integer" in out.stderr
    assert "[2/2]" not in out.stdout          # the second notebook never started


def test_default_workers_one_per_gpu_else_by_cores(monkeypatch):
    import os

    from prunebook import cli

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert cli.default_workers(1) == 3 and cli.default_workers(9) == 3  # one per GPU, however many chains
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA hides every GPU: by the cores, at most one per chain
    assert cli.default_workers(2) == 2 and cli.default_workers(9) == 4


@pytest.mark.parametrize("args, message", [
    (["run", "--profile", "cpu", "--dry-run"], "--dry-run runs the paper profile only, not 'cpu'"),
    (["run", "--dry-run"], "--dry-run runs the paper profile only, not 'cpu'"),
    (["run", "--profile", "smoke", "--dry-run"], "--dry-run runs the paper profile only, not 'smoke'"),
    (["run", "--profile", "paper", "--dry-run", "--inplace"], "--dry-run never writes over the committed notebooks"),
])
def test_dry_run_refusals_take_one_line(demo_root, args, message):
    out = prunebook(*args, root=demo_root)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (demo_root / "runs").exists()


def test_dry_run_refuses_to_write_into_committed_results(demo_root):
    committed = demo_root / "notebooks" / "00_demo" / "results" / "paper"
    out = prunebook("run", "--profile", "paper", "--dry-run", root=demo_root,
                    env_extra={"PRUNEBOOK_RESULTS_DIR": str(committed)})
    assert out.returncode == 2
    assert "--dry-run would write its results into notebooks/00_demo/results/paper" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_dry_run_writes_only_paper_dry_paths_with_its_banner(demo_root, tmp_path):
    cache = tmp_path / "cache"
    out = prunebook("run", "00", "--profile", "paper", "--dry-run", "--workers", "1", root=demo_root,
                    env_extra={"PRUNEBOOK_CACHE": str(cache), "PRUNEBOOK_DRY_RUN": ""})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 of 1 notebooks ran at paper (dry run" in out.stdout
    series = demo_root / "notebooks" / "00_demo"
    executed = demo_root / "runs" / "paper-dry" / "00_demo" / "01_demo.ipynb"
    nb = json.loads(executed.read_text())
    assert nb["cells"][0]["cell_type"] == "markdown" and "Dry run on stand-in data" in nb["cells"][0]["source"]
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "DRY RUN" in printed  # the configuration in force says so
    result = json.loads((series / "results" / "paper-dry" / "01_demo.json").read_text())
    assert result["profile"] == "paper"
    assert (series / "figures" / "paper-dry" / "demo_accuracy.png").is_file()
    assert not (series / "results" / "paper").exists() and not (series / "figures" / "paper").exists()
    assert not (demo_root / "runs" / "paper").exists()
    # the source notebook is untouched
    assert json.loads((series / "01_demo.ipynb").read_text())["cells"][0]["cell_type"] == "markdown"
    assert "Dry run" not in (series / "01_demo.ipynb").read_text()
    # a dry run's results are never reported as the paper profile's
    assert "no results yet" in prunebook("report", root=demo_root).stdout
    assert "no results at paper yet" in prunebook("report", "--profile", "paper", root=demo_root).stdout
    assert "not run yet" in prunebook("list", root=demo_root).stdout


def test_paper_dry_paths_are_git_ignored():
    root = Path(__file__).resolve().parents[1]
    for path in ("notebooks/01_ap/results/paper-dry/x.json", "notebooks/01_ap/figures/paper-dry/x.png",
                 "runs/paper-dry/01_ap/01_dead_neurons.ipynb"):
        out = subprocess.run(["git", "check-ignore", "-q", path], cwd=root)
        assert out.returncode == 0, f"{path} is not ignored"
