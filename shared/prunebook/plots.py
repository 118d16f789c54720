"""The one place figures are written (their look is ``prunebook.style``).

``savefig(fig, "fig2_grokking")`` writes ``figures/<profile>/fig2_grokking.png`` (for the web) and ``.pdf``
(for slides) in the series folder, so a ``smoke`` run never overwrites the committed ``cpu`` figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from . import config
from .style import PALETTE, use_style  # noqa: F401  (notebooks colour their lines with plots.PALETTE)


def figures_dir(profile: str | None = None) -> Path:
    profile = profile or config.current().profile
    return config.output_dir("figures", profile)


def savefig(fig: plt.Figure, name: str, profile: str | None = None, formats: tuple[str, ...] = ("png", "pdf")) -> None:
    """Write ``fig`` as ``figures/<profile>/<name>.<fmt>`` for each format (the notebook still shows it)."""
    if not name or "/" in name or name.endswith((".png", ".pdf")):
        raise ValueError(f"figure name {name!r} must be a bare name such as 'fig2_accuracy' (no folder, no suffix)")
    folder = figures_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        # A fixed creation date keeps the PDFs byte-stable between identical runs.
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        fig.savefig(folder / f"{name}.{fmt}", metadata=metadata)


use_style()
