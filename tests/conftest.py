"""Test settings. Set before any notebook kernel starts, so nbval runs every notebook at `smoke`."""

import os

os.environ["PRUNEBOOK_PROFILE"] = "smoke"
os.environ["PRUNEBOOK_PLAIN_PROGRESS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


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
