"""One look for every figure, and one place figures are written.

``savefig(fig, "fig2_grokking")`` writes ``figures/<profile>/fig2_grokking.png`` (for the web) and ``.pdf``
(for slides) in the series folder, so a ``smoke`` run never overwrites the committed ``cpu`` figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt

from . import config

# Colour-blind-safe (Okabe-Ito), in the order series use them.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 160,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the prunebook look to every later figure."""
    mpl.rcParams.update(STYLE)


def figures_dir(profile: str | None = None) -> Path:
    profile = profile or config.current().profile
    return config.series_dir() / "figures" / profile


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
