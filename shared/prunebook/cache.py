"""Results and checkpoints keyed by a hash of the configuration that produced them.

Everything is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written file that a later run would trust, and two processes computing
the same key (workers of one cluster) each replace the file whole. A file that cannot be read all the same
(a disk filled up, a copy cut short) is named in one warning, moved aside to ``<name>.damaged`` and recomputed.

    scores = cached("el2n", {"seed": 0, "n": 6000, "epochs": 2}, lambda: compute_scores(...))
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import DRY_RUN_DIR, checkout, config_hash, dry_run_requested

# Bump when a change to the shared code makes old cached results wrong.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$PRUNEBOOK_CACHE``, else ``~/.cache/prunebook``; a dry run (``$PRUNEBOOK_DRY_RUN``) uses its ``paper-dry``
    subfolder, so its stand-in results never mix with real runs' entries."""
    root = Path(os.environ.get("PRUNEBOOK_CACHE") or Path.home() / ".cache" / "prunebook")
    return root / DRY_RUN_DIR if dry_run_requested() else root


def key(namespace: str, config: Any) -> str:
    return f"{namespace}-{config_hash([CACHE_VERSION, namespace, config])}"


def method_files(folder: Path) -> list[Path]:
    """A series folder's method code: its module or package (``.py`` files), without a course lab's ``checks.py``
    (it makes no result) or editor and interpreter copies (``.ipynb_checkpoints``, ``__pycache__``)."""
    return sorted(p for p in folder.rglob("*.py") if p.name != "checks.py"
                  and not {".ipynb_checkpoints", "__pycache__"} & set(p.relative_to(folder).parts))


def code_hash(source: str | Path) -> str:
    """A series' method code, as a cache key part: a hash of the syntax trees of the module file ``source`` (or of
    the :func:`method_files` of the folder ``source``), with docstrings dropped, so that a change to what the code
    does recomputes its cached results and a change to its comments or layout does not."""
    source = Path(source)
    files = method_files(source) if source.is_dir() else [source]
    h = hashlib.sha256()
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(path.relative_to(source if source.is_dir() else source.parent).as_posix().encode() + b"\0")
        h.update(ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def method_hash(series: str) -> str | None:
    """:func:`code_hash` of the method code of ``notebooks/<series>/`` in the checkout (its module or package), or
    None where there is no such folder."""
    folder = checkout() / "notebooks" / series
    return code_hash(folder) if folder.is_dir() else None


def path_for(namespace: str, config: Any, suffix: str = ".pt") -> Path:
    """Where the result of ``namespace`` under ``config`` lives (the folder is created). A namespace is
    ``"<series folder>/<what>"`` (``"07_rethinking/run"``): the key holds the series' method code
    (:func:`method_hash`), so a change to what that code does recomputes its results and no version is bumped by
    hand; :data:`CACHE_VERSION` covers the shared package."""
    series = namespace.split("/")[0]
    folder = cache_dir() / series
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (key(namespace.replace("/", "-"), [method_hash(series), config]) + suffix)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


class DamagedCacheFile(RuntimeError):
    """A cache file that exists but cannot be read (truncated, overwritten by something else)."""


def load(path: str | Path) -> Any:
    """torch.load on the CPU. Raises ``DamagedCacheFile``, naming the file, when it cannot be read."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" not in str(exc):
                raise
        # Some series store more than tensors, numbers, strings and lists: NumPy arrays (03_ihomer,
        # 08_data_pruning), dataclasses (02_grokking). Those files need the full unpickler, which runs
        # code named in the file: only point PRUNEBOOK_CACHE at a folder that only you can write.
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise DamagedCacheFile(f"damaged cache file {path} ({' '.join(str(exc).split())[:200]})") from exc


def set_aside(path: str | Path, why: Exception | str) -> Path:
    """Move a damaged file to ``<name>.damaged`` (kept for a look, never read again) with a one-line warning."""
    path = Path(path)
    aside = path.with_name(path.name + ".damaged")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process set it aside (or replaced it) first
        pass
    warnings.warn(f"{why}; moved to {aside.name}, recomputing", RuntimeWarning, stacklevel=3)
    return aside


def load_intact(path: str | Path) -> Any | None:
    """The stored object, or None when the file is missing or damaged (then it is set aside): for a checkpoint
    that a run resumes from when it can and starts over when it cannot."""
    if not Path(path).exists():
        return None
    try:
        return load(path)
    except DamagedCacheFile as exc:
        set_aside(path, exc)
        return None


def save_json(obj: Any, path: str | Path) -> Path:
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # NumPy and torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def cached(namespace: str, config: Any, compute: Callable[[], Any], *, refresh: bool = False) -> Any:
    """The stored result of ``compute()`` for this ``config``; computed and stored on first use."""
    path = path_for(namespace, config)
    if path.exists() and not refresh:
        try:
            return load(path)
        except DamagedCacheFile as exc:
            set_aside(path, exc)
    result = compute()
    save(result, path)
    return result
