"""Profiles, the notebook configuration, seeding and device choice.

A notebook declares one dict of settings per profile and resolves them in one line:

    cfg = prunebook.config.resolve(CONFIGS, profile, seed=seed, device=device, data_root=data_root, steps=steps)

The profile comes from the argument, else ``$PRUNEBOOK_PROFILE``, else ``cpu``. Every override must name a
setting the profile defines and have its type; ``None`` keeps the profile's value (the papermill default).

A dry run (``prunebook run --profile paper --dry-run``, which sets ``$PRUNEBOOK_DRY_RUN=1`` for the kernel) runs
the ``paper`` configuration at the paper's model sizes on stand-in data of the real datasets' shapes, every
training cut to a few steps (:func:`dry_steps`): ``cfg.dry_run`` is True, results and figures go to git-ignored
``paper-dry`` folders (:func:`output_dir`) and the cache to its own folder. It proves that the paper's code path
runs; none of its numbers means anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"
DEVICES = ("auto", "cpu", "cuda", "mps")
DRY_RUN_ENV = "PRUNEBOOK_DRY_RUN"
DRY_RUN_DIR = "paper-dry"  # the results/figures folder (and cache folder) of a dry run
DRY_STEPS = 2  # a dry run's trainings take this many steps (epochs, iterations), evaluations this many batches
DRY_SEEDS = 2  # a dry run's seed counts (n_seeds, *_seeds) where the notebook's smoke profile names none

PROFILE_HELP = {
    "smoke": "CI size, under a minute; proves nothing about the paper",
    "cpu": "the paper's qualitative claims on offline data, minutes on a 2-core laptop",
    "paper": "the paper's own datasets, models and schedules; meant for a GPU",
}

_current: Config | None = None


class ConfigError(ValueError):
    """A bad profile, parameter name or value. The message says what is allowed."""


class Config(dict):
    """The settings in force: a dict whose keys are also attributes (``cfg.epochs``). ``cfg.dry_run`` (True only in
    a dry run of the ``paper`` profile) is an attribute, not a setting: it changes no cache key."""

    dry_run = False

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}; settings are: {', '.join(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def key(self, *drop: str) -> str:
        """A short stable hash of the settings (minus ``drop``), for cache keys."""
        return config_hash({k: v for k, v in self.items() if k not in drop and not k.startswith("_")})


def config_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_profile(profile: str | None = None) -> str:
    """The profile name from the argument, else ``$PRUNEBOOK_PROFILE``, else ``cpu``; validated."""
    source = "profile"
    if profile is None:
        profile = os.environ.get("PRUNEBOOK_PROFILE") or DEFAULT_PROFILE
        source = "PRUNEBOOK_PROFILE" if os.environ.get("PRUNEBOOK_PROFILE") else "profile"
    if profile not in PROFILES:
        raise ConfigError(f"{source}={profile!r} is not a profile; choose one of: {', '.join(PROFILES)}")
    return profile


def dry_run_requested() -> bool:
    """Whether this process runs a dry run (``$PRUNEBOOK_DRY_RUN`` set to anything but empty or ``0``)."""
    return os.environ.get(DRY_RUN_ENV, "") not in ("", "0")


def dry_steps(n: int, steps: int = DRY_STEPS) -> int:
    """``n`` (epochs, iterations, evaluation batches), cut to ``steps`` in a dry run; ``n`` itself otherwise. The
    one place where the paper's schedules are shortened, used where the training loops are."""
    return min(n, steps) if dry_run_requested() else n


def dry_grid(values: list) -> list:
    """A grid of settings (sparsities, budgets, ratios): in a dry run only its first and last points, which still
    run every branch between them; all of it otherwise."""
    values = list(values)
    return values[:1] + values[-1:] if dry_run_requested() and len(values) > 2 else values


def dry_cut(name: str, value: Any, at_smoke: Any = None) -> Any:
    """A setting as a dry run uses it: a seed count (an int named ``n_seeds`` or ``*_seeds``) cut to the smoke
    profile's (``at_smoke``: the fewest seeds the notebook's claims are known to run on), else to
    :data:`DRY_SEEDS`; every other setting, the models and shapes among them, unchanged."""
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if not (is_int(value) and name.endswith("_seeds")):
        return value
    return min(value, at_smoke if is_int(at_smoke) and at_smoke >= 1 else DRY_SEEDS)


def _check_type(name: str, value: Any, default: Any, choices: dict[str, Any]) -> Any:
    allowed = choices.get(name)
    if allowed is not None:
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")
        return value
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be True or False")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r} must be an integer (like {default!r})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number (like {default!r})")
        return float(value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} must be a list (like {list(default)!r})")
        return type(default)(value)
    if not isinstance(value, type(default)):
        raise ConfigError(f"{name}={value!r} must be of type {type(default).__name__} (like {default!r})")
    return value


def resolve(
    configs: dict[str, dict[str, Any]],
    profile: str | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    data_root: str | None = None,
    choices: dict[str, Any] | None = None,
    verbose: bool = True,
    **overrides: Any,
) -> Config:
    """The configuration in force for this run.

    ``configs`` maps each profile the notebook supports to its settings. ``overrides`` are the notebook's
    knobs: ``None`` keeps the profile's value, anything else must have the setting's type (or be one of
    ``choices[name]``). Seeds every generator, picks the device and prints the result.
    """
    global _current
    profile = resolve_profile(profile)
    dry_run = dry_run_requested()
    if dry_run and profile != "paper":
        raise ConfigError(f"a dry run (${DRY_RUN_ENV}=1) runs the 'paper' profile only, not {profile!r}: "
                          f"use `prunebook run --profile paper --dry-run`, or unset {DRY_RUN_ENV}")
    if profile not in configs:
        raise ConfigError(f"this notebook has no {profile!r} profile; it defines: {', '.join(configs)}")
    choices = choices or {}
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")
    if data_root is not None and not isinstance(data_root, (str, os.PathLike)):
        raise ConfigError(f"data_root={data_root!r} must be a folder path or None")

    values = dict(configs[profile])
    for name, value in overrides.items():
        if name not in values:
            raise ConfigError(f"unknown parameter {name!r}; this notebook's parameters are: {', '.join(values)}")
        if value is not None:
            values[name] = _check_type(name, value, values[name], choices)
    for name, value in values.items():  # the profile tables themselves must respect the choices
        if name in choices:
            _check_type(name, value, None, choices)

    if dry_run:
        smoke = configs.get("smoke", {})
        values = {name: dry_cut(name, value, smoke.get(name)) for name, value in values.items()}
    cfg = Config(profile=profile, seed=seed, **values)
    cfg["device"] = str(pick_device(device))
    cfg["data_root"] = None if data_root is None else str(data_root)
    object.__setattr__(cfg, "started", time.time())
    object.__setattr__(cfg, "dry_run", dry_run)
    seed_everything(seed)
    from .plots import use_style  # (here: plots imports config) every notebook resolves its configuration first

    use_style()
    _current = cfg
    if verbose:
        print(describe(cfg))
    return cfg


def current() -> Config:
    """The configuration resolved last in this process (used by plots and claims to find the profile)."""
    if _current is None:
        raise ConfigError("no configuration resolved yet: call prunebook.config.resolve(...) first")
    return _current


def describe(cfg: Config) -> str:
    width = max(map(len, cfg))
    lines = [f"profile {cfg.profile!r}: {PROFILE_HELP[cfg.profile]}"]
    if cfg.dry_run:
        lines.append(f"  DRY RUN: stand-in data of the paper's shapes, trainings cut to {DRY_STEPS} steps, "
                     f"seed counts to smoke's (else {DRY_SEEDS}); it shows "
                     f"that the code path runs, and no number it prints means anything")
    lines += [f"  {k:<{width}} = {v!r}" for k, v in cfg.items() if k != "profile"]
    return "\n".join(lines)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a fresh torch generator with that seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA, else Apple's MPS, else the CPU; a named device must be available."""
    import torch

    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ConfigError(f"device={device!r} is not a device; choose one of: {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if device.startswith("cuda") and not cuda:
        raise ConfigError(f"device={device!r} but no CUDA GPU is visible; use device='auto' or 'cpu'")
    if device == "mps" and not mps:
        raise ConfigError("device='mps' but Apple's MPS is not available; use device='auto' or 'cpu'")
    return torch.device(device)


def checkout() -> Path:
    """The checkout this package is installed from (``shared/prunebook/`` lies two levels below it)."""
    return Path(__file__).resolve().parents[2]


def series_dir() -> Path:
    """The series folder a notebook runs in (its working directory, as papermill and nbval set it)."""
    return Path.cwd()


def output_dir(kind: str, profile: str) -> Path:
    """Where a notebook writes its ``results`` or ``figures``: ``<series>/<kind>/<profile>/``, unless
    ``$PRUNEBOOK_RESULTS_DIR`` / ``$PRUNEBOOK_FIGURES_DIR`` names another folder (``prunebook run --seeds`` sets
    them for every seed but the first, so those runs never overwrite the committed outputs). A dry run writes to
    ``<series>/<kind>/paper-dry/``, which git ignores."""
    override = os.environ.get(f"PRUNEBOOK_{kind.upper()}_DIR")
    if override:
        return Path(override)
    return series_dir() / kind / (DRY_RUN_DIR if dry_run_requested() else profile)
