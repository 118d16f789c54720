"""benchmarks/gpu_check.py: its quick form runs on the CPU and writes a report of the expected shape; every series'
planned steps name a model it times."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_quick_form_writes_the_report(tmp_path):
    out = tmp_path / "gpu_check"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["quick"] is True and report["device"]["type"] == "cpu"
    assert set(report["versions"]) >= {"python", "torch", "cuda"}
    assert report["dry_run"]["available"] is False and report["dry_run"]["note"] == "skipped (--quick)"
    rows = report["steps"]
    assert {r["series"] for r in rows} == set(report["series"]) == {"01_ap", "02_grokking"}
    for r in rows:
        assert "error" not in r, r
        assert r["batch"] == 2 and r["paper_batch"] >= 2
        assert r["fp32_s"] > 0 and r["bf16_s"] > 0 and r["bf16_over_fp32"] > 0
        assert len(r["rounds_fp32_s"]) == len(r["rounds_bf16_s"]) == report["settings"]["rounds"] == 1
    loop = report["loop"]
    assert loop["fit_images_per_s"] > 0 and loop["dataloader_images_per_s"] > 0
    assert loop["ratio"] == pytest.approx(loop["fit_images_per_s"] / loop["dataloader_images_per_s"])
    for p in report["projection"]:
        assert p["missing"] == [] and p["seconds"] > 0 and p["hours"] == pytest.approx(p["seconds"] / 3600)
        assert p["seconds"] == pytest.approx(sum(q["steps"] * q["step_s"] for q in p["parts"]))
    md = out.with_suffix(".md").read_text()
    for heading in ("## 1. The paper profile's dry run", "## 2. Training step times", "## 3. Projected wall time",
                    "| series | projected paper wall time on one CPU |", "**Quick form**"):
        assert heading in md
    assert md.count("\n| 01_ap |") == 4  # three models, one projection


def test_every_planned_step_names_a_timed_model(gpu_check):
    assert list(gpu_check.SERIES_CHECKS) == list(gpu_check.SERIES)
    for series, check in gpu_check.SERIES_CHECKS.items():
        loads, plans = check(False)
        names = {w.name for w in loads}
        assert len(names) == len(loads) and all(w.series == series and w.batch >= 1 for w in loads)
        assert {p.workload for p in plans} <= names, series
        assert all(p.steps > 0 and p.count for p in plans)


def test_projection_needs_every_planned_model(gpu_check):
    plans = {"01_ap": [gpu_check.Plan("a", 100, ""), gpu_check.Plan("b", 10, "")]}
    rows = [{"series": "01_ap", "model": "a", "best_s": 0.5}]
    (p,) = gpu_check.projections(rows, plans, ["01_ap"])
    assert p["missing"] == ["b"] and p["seconds"] is None
    rows.append({"series": "01_ap", "model": "b", "best_s": 2.0})
    (p,) = gpu_check.projections(rows, plans, ["01_ap"])
    assert p["seconds"] == 70.0 and gpu_check._hours(p["seconds"]) == "about 1 min"


def test_a_missing_dry_run_is_said_not_failed(gpu_check, monkeypatch):
    import torch

    monkeypatch.setattr(gpu_check, "PRUNEBOOK", "/nonexistent/prunebook")
    dry = gpu_check.dry_runs(["01_ap"], torch.device("cpu"), limit=5, parallel=1, budget=5)
    assert dry["available"] is False and dry["note"].startswith("dry run not available") and dry["runs"] == []
