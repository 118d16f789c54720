"""Every numbered notebook's ``paper`` profile, dry-run: ``prunebook run --profile paper --dry-run``.

The paper's models at full size and the paper's input shapes on stand-in data, every training cut to a few steps
(shared/prunebook/config.py says what a dry run cuts). The suite's longest test: the series run two side by side, from
an empty cache of its own, so every run is cold. It proves the paper's code path runs; it checks no number.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from prunebook.config import DRY_RUN_DIR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))


def _tracked_changes() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "notebooks"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_every_notebook_runs_its_paper_profile_on_stand_in_data(tmp_path):
    before = _tracked_changes()
    env = {**os.environ, "PRUNEBOOK_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for name in ("PRUNEBOOK_PROFILE", "PRUNEBOOK_RESULTS_DIR", "PRUNEBOOK_FIGURES_DIR", "PRUNEBOOK_DRY_RUN"):
        env.pop(name, None)
    try:
        run = subprocess.run([str(Path(sys.executable).parent / "prunebook"), "run", "--profile", "paper",
                              "--dry-run", "--workers", "2"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=1800)
    finally:
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)  # several GB of paper-size runs, never read again
    print(run.stdout)  # each notebook's wall time, shown with pytest -rA
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]

    for notebook in NOTEBOOKS:
        series = notebook.parent
        executed = ROOT / "runs" / DRY_RUN_DIR / series.name / notebook.name
        assert executed.is_file(), f"{executed} was not written"
        assert json.loads(executed.read_text())["cells"][0]["id"] == "prunebook-dry-run"
        if (series / "results" / "cpu" / f"{notebook.stem}.json").is_file():  # a notebook with claims
            result = json.loads((series / "results" / DRY_RUN_DIR / f"{notebook.stem}.json").read_text())
            assert result["profile"] == "paper" and result["dry_run"] is True, notebook
    assert _tracked_changes() == before, "a dry run changed committed files"
