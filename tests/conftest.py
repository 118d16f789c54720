"""Test fixtures; the profile and other settings are in the top-level conftest.py."""

import sys
from pathlib import Path

import pytest

# Each series' method module (notebooks/02_grokking/grokking.py, ...) is importable by its plain name,
# as the notebooks import it.
for series in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*")):
    if series.is_dir():
        sys.path.insert(0, str(series))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private cache folder for one test."""
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def in_series(tmp_path, monkeypatch):
    """Run the test as if inside a series folder (where notebooks write figures and results)."""
    folder = tmp_path / "99_test"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder
