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


@pytest.fixture
def randomize_bn():
    """Give every BatchNorm2d distinct scales, shifts and running statistics, and put the model in eval mode, so
    that channel choices and outputs are exact."""
    def randomize(model, seed=0):
        import torch
        from torch import nn

        g = torch.Generator().manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.data = torch.rand(n, generator=g) + 0.5
                m.bias.data = torch.rand(n, generator=g) - 0.5
                m.running_mean = torch.rand(n, generator=g) - 0.5
                m.running_var = torch.rand(n, generator=g) + 0.5
        return model.eval()

    return randomize
