"""prunebook: the code shared by the notebook series.

Submodules load on first use (``prunebook.train.fit``, ``prunebook.Claims``), so the command line and
``import prunebook`` stay quick.
"""

import importlib

__version__ = "0.1.0"

_MODULES = {"cache", "claims", "cli", "config", "course", "data", "display", "models", "parallel", "plots", "prune",
            "report", "train"}
_NAMES = {"Claims": "claims", "interact": "display", "progress": "display", "show": "display"}
__all__ = sorted(_MODULES | set(_NAMES))


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'prunebook' has no attribute {name!r}")
