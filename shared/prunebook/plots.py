"""Figures: their one look and the one place they are written.

``use_style()`` applies a colour-blind-safe palette (``PALETTE``, the colours notebooks draw with) and a few
rcParams; ``config.resolve()`` calls it at the start of every notebook. ``savefig(fig, "fig2_grokking")`` writes
``figures/<profile>/fig2_grokking.png`` (for the web) and ``.pdf`` (for slides) in the series folder, so a
``smoke`` run never overwrites the committed ``cpu`` figures. ``seeds_and_mean`` draws a comparison over seeds
the one way every series shows it: a dot per seed, the seeds joined across arms, the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

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


def seeds_and_mean(ax: plt.Axes, values: Any, scale: float = 1.0, colors: Sequence[str] | None = None) -> None:
    """The figure of a comparison over seeds: ``values`` is a table (a DataFrame: one row per seed, one column per
    arm); each seed's value is a dot, one seed's values are joined across the arms (the pairing a paired test
    uses), and each arm's mean is a black bar. ``scale`` multiplies every value (100 for percent)."""
    arms = list(values.columns)
    table = scale * values.to_numpy(dtype=float)
    colors = colors or PALETTE
    for row in table:
        ax.plot(range(len(arms)), row, color="0.75", lw=0.8, zorder=1)
    for i in range(len(arms)):
        ax.scatter(np.full(len(table), i), table[:, i], color=colors[i % len(colors)], s=18, zorder=3)
        ax.hlines(np.nanmean(table[:, i]), i - 0.25, i + 0.25, color="black", lw=2, zorder=4)
    ax.set_xticks(range(len(arms)), [str(a) for a in arms])
    ax.set_xlim(-0.5, len(arms) - 0.5)
