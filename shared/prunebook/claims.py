"""The claims table that ends every notebook, and the results JSON it writes.

    claims = Claims("01_grokking_and_ipr")
    claims.add("grok-test", "test accuracy reaches 99% within 100 steps", "Fig. 2a",
               paper="≈100 steps", measured=steps_to_99, holds=steps_to_99 <= 100)
    claims.save(metrics={"final_test_acc": acc})   # writes results/<profile>/01_grokking_and_ipr.json
    claims.table()                                 # the table, displayed

At ``smoke`` a claim's ``holds`` is stored as ``None``: a run that small proves nothing either way.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import cache, config

VERDICTS = {True: "holds", False: "FAILS", None: "n/a at smoke"}


@dataclass
class Claim:
    id: str
    text: str
    source: str
    paper: Any
    measured: Any
    holds: bool | None
    note: str = ""


@dataclass
class Claims:
    notebook: str
    cfg: config.Config | None = None
    claims: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg = self.cfg or config.current()

    def add(self, id: str, text: str, source: str, paper: Any, measured: Any, holds: Any, note: str = "") -> Claim:
        """Record one claim: what the paper reports, what we measured, and whether it holds here."""
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} is used twice in {self.notebook}")
        verdict = None if self.cfg.profile == "smoke" else bool(holds)
        claim = Claim(id, text, source, _plain(paper), _plain(measured), verdict, note)
        self.claims.append(claim)
        return claim

    def table(self) -> pd.DataFrame:
        rows = [
            {"claim": c.text, "source": c.source, "paper": _fmt(c.paper), "measured": _fmt(c.measured),
             "verdict": VERDICTS[c.holds], "note": c.note}
            for c in self.claims
        ]
        return pd.DataFrame(rows, columns=["claim", "source", "paper", "measured", "verdict", "note"])

    def path(self) -> Path:
        return config.series_dir() / "results" / self.cfg.profile / f"{self.notebook}.json"

    def save(self, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``results/<profile>/<notebook>.json`` and print a one-line summary."""
        result = {
            "series": config.series_dir().name,
            "notebook": self.notebook,
            "profile": self.cfg.profile,
            "seed": self.cfg.seed,
            "wall_s": round(time.time() - getattr(self.cfg, "started", time.time()), 1),
            "versions": versions(self.cfg.device),
            "config": {k: v for k, v in self.cfg.items() if k not in ("data_root",)},
            "claims": [asdict(c) for c in self.claims],
            "metrics": _plain(metrics or {}),
        }
        path = cache.save_json(result, self.path())
        held = sum(c.holds is True for c in self.claims)
        if self.cfg.profile == "smoke":
            print(f"{len(self.claims)} claims computed at smoke (which proves nothing); wrote {path.name}")
        else:
            print(f"{held} of {len(self.claims)} claims hold at {self.cfg.profile}; wrote {path.name}")
        return path


def versions(device: str = "cpu") -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform(terse=True)}
    for dist in ("torch", "torchvision", "numpy", "prunebook"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    out["device"] = torch.cuda.get_device_name() if device.startswith("cuda") else f"{device} ({_cpu_name()})"
    out["threads"] = str(torch.get_num_threads())
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _plain(value: Any) -> Any:
    """NumPy/torch scalars and arrays as plain Python, so the JSON stays readable."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
