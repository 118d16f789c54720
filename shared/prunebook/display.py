"""What notebooks show the reader: a function's source, progress bars, and interactive controls.

Progress bars are ``tqdm.auto`` widgets when a person runs a notebook. Headless runs (:func:`headless`: the
``prunebook`` runner and the tests set ``PRUNEBOOK_HEADLESS=1``) get a plain line on stdout every 30 s and one at
the end (no carriage returns, nothing on stderr), so the committed notebooks stay small and read well on GitHub,
and widgets become one static call. ``PRUNEBOOK_PROGRESS=0`` silences every bar.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable
from typing import Any

HEADLESS = "PRUNEBOOK_HEADLESS"


def headless() -> bool:
    """True when no person watches the notebook (the runner, papermill, nbval): no widgets, plain progress."""
    return os.environ.get(HEADLESS) == "1"


def show(*objects: Callable | type) -> Any:
    """Display the source of functions or classes, highlighted, so the method can be read in place."""
    from IPython.display import Code

    source = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    return Code(source, language="python")


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any):
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``); see the module note for modes."""
    disable = not enabled or os.environ.get("PRUNEBOOK_PROGRESS") == "0"
    if headless():
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("ascii", True)
        return _plain_bar()(iterable, disable=disable, file=sys.stdout, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable, **kwargs)


def one_line(text: Any, limit: int | None = None) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def kernel_manager_class() -> type:
    """A Jupyter kernel manager whose kernels talk over local sockets (IPC) instead of TCP: nothing listens on the
    network, and ipykernel has no plain-text-TCP warning to print into every headless run's output."""
    from jupyter_client.manager import KernelManager  # only where notebooks are executed

    class IpcKernelManager(KernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(tempfile.gettempdir(), f"prunebook-kernel-{uuid.uuid4().hex}")

    return IpcKernelManager


def interact(fn: Callable, **controls: Any) -> None:
    """``ipywidgets.interact(fn, **controls)`` when a person runs the notebook. In headless runs (:func:`headless`)
    ``fn`` is called once with each control's starting value
    instead: the notebook keeps a static output that reads on GitHub, and no interact traffic goes through
    papermill's client, which can hang on such cells (jupyter/nbclient#312). A control is a widget (its
    ``value``), a list of options (the first) or a fixed value."""
    if headless():
        shown = fn(**{name: _starting_value(c) for name, c in controls.items()})
        if shown is not None:  # what the widget's output area would show
            from IPython.display import display

            display(shown)
        return  # nothing for the cell to echo (ipywidgets.interact returns the function)
    import ipywidgets

    ipywidgets.interact(fn, **controls)


def _starting_value(control: Any) -> Any:
    if hasattr(control, "value"):
        return control.value
    if isinstance(control, list):
        return control[0]
    return control


def _plain_bar() -> type:
    """A tqdm that prints each refresh as its own line on stdout (a stored notebook output keeps every ``\\r``
    frame of a normal bar); tqdm's own cursor writes go to a sink."""
    from tqdm.std import tqdm

    class PlainBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._out, self._last_line = kwargs.pop("file"), None
            super().__init__(*args, file=_Sink(), **kwargs)

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            line = (msg if msg is not None else self.__str__()).strip()
            if line and line != self._last_line:
                self._out.write(line + "\n")
                self._out.flush()
                self._last_line = line
            return True

    return PlainBar


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass
