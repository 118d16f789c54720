"""The one look of every figure: a colour-blind-safe palette and a few rcParams.

Kept apart from ``plots`` (which writes figures into the series folder and so reads the configuration) because
``config.resolve()`` applies the look at the start of every notebook, before its first figure.
"""

from __future__ import annotations

import matplotlib as mpl

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
