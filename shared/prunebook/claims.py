"""The claims table that ends every notebook, its results JSON, and the one rule that decides a claim.

    from prunebook.claims import paired, equivalent, exceeds, exact
    claims = Claims("05_skip_redesign_ablation")
    claims.add("unetpp-beats-unet", "UNet++ beats U-Net", "Table 3", paper="92.63 vs 90.77", kind="paper",
               decision=paired(iou_unetpp, iou_unet, side=">", scale=100, unit=" points"))
    claims.add("params", "the model has 9.04 M parameters", "Table 1", paper=9.04, measured=n / 1e6,
               kind="check", holds=abs(n / 1e6 - 9.04) < 0.01)
    claims.save(metrics={...})     # writes results/<profile>/05_skip_redesign_ablation.json
    claims.table()                 # the table, displayed

**Kinds.** ``paper``: the paper states it (its table, figure or section is the source). ``control``: our own
control, ablation or null model. ``check``: an identity, a count, a recomputation, a sanity check. Headline
counts are of paper claims; controls and checks are counted apart.

**The rule.** A ``paper`` claim is decided by one of the functions below, never by a notebook's own test:

- :func:`paired` — two arms run on the same seeds (same data split, same initialisation where the method
  allows). The 95 % confidence interval of the mean paired difference (Student's t over seeds by default, or a
  percentile bootstrap over seeds) is compared with the paper's margin (0 for "beats"): ``holds`` when the whole
  interval lies on the paper's side, ``fails`` when it lies wholly on the other side, ``inconclusive`` otherwise.
  With two or three seeds the t interval is wide; that is the point: add seeds rather than lower the level.
- :func:`equivalent` — "about equal": ``holds`` when the interval lies inside ±margin, ``fails`` when it lies
  wholly outside, ``inconclusive`` otherwise. The margin is fixed before the run and tied to the paper's number.
- :func:`exceeds` — one arm against an absolute threshold (from the paper, or declared in ``CONFIGS`` with its
  reason before the run): the interval of the mean over seeds against the threshold, decided as above.
- :func:`exact` — a quantity with no seed noise (a count, a deterministic algorithm on a fixed stream): the value
  against the threshold.
- :func:`all_of` — a claim made of several comparisons holds when all hold and fails when any fails.

At ``smoke`` every verdict is ``smoke`` and ``holds`` is ``None``: a run that small proves nothing either way.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import cache, config

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("paper", "control", "check")
VERDICTS = ("holds", "fails", "inconclusive", "smoke")
SIDES = (">", "<")
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
LEGACY = "legacy: the notebook's own test, not yet this rule"


# ---------------------------------------------------------------- the rule


@dataclass
class Decision:
    """The outcome of one comparison: its verdict and the interval it rests on."""

    verdict: str
    mean: float
    lo: float
    hi: float
    n: int
    test: str          # how the interval was made, e.g. "paired t, 95 %, 3 seeds"
    measured: str      # the line shown in the claims table

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS[:3]:
            raise ValueError(f"verdict {self.verdict!r}; one of {VERDICTS[:3]}")


def interval(values: Sequence[float], level: float = LEVEL, method: str = "t") -> tuple[float, float, float]:
    """Mean and ``level`` confidence interval of the mean of ``values`` (one value per seed).

    ``t``: Student's t with n − 1 degrees of freedom. ``bootstrap``: percentile bootstrap over the seeds
    (fixed resampling seed, so the same numbers give the same interval; it is too narrow with few seeds).
    One value has no interval: (−inf, +inf)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"need a non-empty list of finite numbers, got {values!r}")
    mean = float(x.mean())
    if len(x) == 1:
        return mean, -math.inf, math.inf
    if method == "t":
        from scipy import stats

        half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        return mean, mean - half, mean + half
    if method == "bootstrap":
        rng = np.random.default_rng(0)
        means = x[rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
        return mean, float(lo), float(hi)
    raise ValueError(f"method={method!r}; choose 't' or 'bootstrap'")


def _side_verdict(lo: float, hi: float, side: str, margin: float) -> str:
    if side not in SIDES:
        raise ValueError(f"side={side!r}; choose '>' (the paper says above) or '<' (below)")
    above, below = lo > margin, hi < margin
    if side == ">":
        return "holds" if above else "fails" if below else "inconclusive"
    return "holds" if below else "fails" if above else "inconclusive"


def _num(v: float, scale: float, digits: int, sign: bool = True) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v * scale:{'+' if sign else ''}.{digits}f}"


def _describe(mean: float, lo: float, hi: float, n: int, test: str, scale: float, digits: int, unit: str,
              per_seed: Sequence[float] | None, sign: bool = True, units: str = "seeds") -> str:
    text = f"{_num(mean, scale, digits, sign)}{unit}"
    if n > 1:
        text += f", 95 % CI [{_num(lo, scale, digits, sign)}, {_num(hi, scale, digits, sign)}]"
    text += f" ({test}"
    if per_seed is not None and 1 < len(per_seed) <= 12:
        text += f"; per {units.removesuffix('s')} " + ", ".join(_num(v, scale, digits, sign) for v in per_seed)
    return text + ")"


def _test_name(kind: str, n: int, method: str, units: str = "seeds") -> str:
    if n == 1:
        return f"one {units.removesuffix('s')}: no interval"
    # "paired t" / "t", or with a bootstrap "paired bootstrap" / "bootstrap"
    name = kind if method == "t" else " ".join([w for w in kind.split() if w != "t"] + ["bootstrap"])
    return f"{name}, {n} {units}"


def paired(a: Sequence[float], b: Sequence[float], *, side: str = ">", margin: float = 0.0, scale: float = 1.0,
           digits: int = 2, unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is ``a − b`` on the paper's ``side`` of ``margin``? ``a[i]`` and ``b[i]`` come from the same seed (or the
    same other unit of pairing, named by ``units``: "cells", "timing rounds")."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need one value per seed each; got {len(a)} and {len(b)}")
    diff = a - b
    mean, lo, hi = interval(diff, method=method)
    test = _test_name("paired t", len(diff), method, units)
    verdict = _side_verdict(lo, hi, side, margin)
    measured = _describe(mean, lo, hi, len(diff), test, scale, digits, unit, diff, units=units)
    return Decision(verdict, mean, lo, hi, len(diff), test, measured)


def equivalent(a: Sequence[float], b: Sequence[float], *, margin: float, scale: float = 1.0, digits: int = 2,
               unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is ``a − b`` inside ``±margin``? ``holds`` when the whole interval is inside, ``fails`` when it lies wholly
    outside, ``inconclusive`` when it straddles an edge."""
    if margin <= 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    d = paired(a, b, side=">", scale=scale, digits=digits, unit=unit, method=method, units=units)
    inside = -margin < d.lo and d.hi < margin
    outside = d.lo > margin or d.hi < -margin
    d.verdict = "holds" if inside else "fails" if outside else "inconclusive"
    d.test = d.test.replace("paired t", "paired t, equivalence") if d.n > 1 else d.test
    d.measured = d.measured.replace(" (", f" vs ±{_num(margin, scale, digits, False)}{unit} (", 1)
    return d


def exceeds(values: Sequence[float], *, threshold: float, side: str = ">", scale: float = 1.0, digits: int = 2,
            unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is the mean of ``values`` (one per seed) on the paper's ``side`` of an absolute ``threshold``?"""
    x = np.asarray(values, dtype=float)
    mean, lo, hi = interval(x, method=method)
    test = _test_name("t", len(x), method, units)
    verdict = _side_verdict(lo, hi, side, threshold)
    measured = _describe(mean, lo, hi, len(x), test, scale, digits, unit, x, sign=False, units=units)
    measured = measured.replace(" (", f" vs {side} {_num(threshold, scale, digits, False)}{unit} (", 1)
    return Decision(verdict, mean, lo, hi, len(x), test, measured)


def exact(value: float, *, threshold: float, side: str = ">", scale: float = 1.0, digits: int = 2,
          unit: str = "", inclusive: bool = False) -> Decision:
    """A quantity with no seed noise against ``threshold`` (``inclusive``: equality counts for the paper)."""
    value = float(value)
    if inclusive and value == threshold:
        verdict = "holds"
    else:
        verdict = _side_verdict(value, value, side, threshold)
    measured = f"{_num(value, scale, digits, False)}{unit} vs {side}{'=' if inclusive else ''} " \
               f"{_num(threshold, scale, digits, False)}{unit} (no seed noise)"
    return Decision(verdict, value, value, value, 1, "exact", measured)


def all_of(*decisions: Decision, sep: str = "; ") -> Decision:
    """Several comparisons that make one claim: ``holds`` if all hold, ``fails`` if any fails."""
    if not decisions:
        raise ValueError("all_of needs at least one decision")
    verdicts = {d.verdict for d in decisions}
    verdict = "fails" if "fails" in verdicts else "holds" if verdicts == {"holds"} else "inconclusive"
    worst = min(decisions, key=lambda d: d.lo)
    return Decision(verdict, worst.mean, worst.lo, worst.hi, min(d.n for d in decisions),
                    "; ".join(sorted({d.test for d in decisions})), sep.join(d.measured for d in decisions))


# ---------------------------------------------------------------- the table and the JSON


@dataclass
class Claim:
    id: str
    kind: str
    text: str
    source: str
    paper: Any
    measured: Any
    verdict: str
    holds: bool | None
    test: str = ""
    interval: list[float] | None = None
    note: str = ""


@dataclass
class Claims:
    notebook: str
    cfg: config.Config | None = None
    claims: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg = self.cfg or config.current()

    def add(self, id: str, text: str, source: str, paper: Any, measured: Any = None, holds: bool | None = None, *,
            kind: str | None = None, decision: Decision | None = None, note: str = "") -> Claim:
        """Record one claim. A ``paper`` claim needs a ``decision`` from this module's rule; a control or check
        may pass ``holds`` instead (a count, an identity). ``measured`` defaults to the decision's line.

        A claim with no ``kind`` comes from a notebook not yet converted to the rule: it is kept, marked
        ``legacy``, and counted apart from the decided claims."""
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} is used twice in {self.notebook}")
        if kind is None and decision is None and holds is not None:
            verdict = "smoke" if self.cfg.profile == "smoke" else "holds" if holds else "fails"
            claim = Claim(id, "paper", text, source, _plain(paper), _plain(measured), verdict,
                          None if verdict == "smoke" else verdict == "holds", LEGACY, None, note)
            self.claims.append(claim)
            return claim
        if kind not in KINDS:
            raise ValueError(f"claim {id!r}: kind={kind!r}; choose one of {', '.join(KINDS)}")
        if (decision is None) == (holds is None):
            raise ValueError(f"claim {id!r}: give exactly one of decision= (the shared rule) or holds=")
        if kind == "paper" and decision is None:
            raise ValueError(f"claim {id!r}: a paper claim is decided by prunebook.claims (paired, equivalent, "
                             "exceeds, exact, all_of), not by holds=")
        if decision is not None:
            verdict, test, ci = decision.verdict, decision.test, [decision.lo, decision.hi]
            measured = decision.measured if measured is None else measured
        else:
            verdict, test, ci = ("holds" if holds else "fails"), "", None
        if self.cfg.profile == "smoke":
            verdict = "smoke"
        claim = Claim(id, kind, text, source, _plain(paper), _plain(measured), verdict,
                      None if verdict == "smoke" else verdict == "holds", test,
                      None if ci is None else [_finite(v) for v in ci], note)
        self.claims.append(claim)
        return claim

    def table(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {"kind": c.kind, "claim": c.text, "source": c.source, "paper": _fmt(c.paper),
             "measured": _fmt(c.measured), "verdict": c.verdict, "note": c.note}
            for c in self.claims
        ]
        return pd.DataFrame(rows, columns=["kind", "claim", "source", "paper", "measured", "verdict", "note"])

    def path(self) -> Path:
        return config.output_dir("results", self.cfg.profile) / f"{self.notebook}.json"

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
        if self.cfg.profile == "smoke":
            print(f"{len(self.claims)} claims computed at smoke (which proves nothing); wrote {path.name}")
        else:
            print(f"{summary(result['claims'])} at {self.cfg.profile}; wrote {path.name}")
        return path


def tally(claims: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts by kind and verdict: ``{"paper": {"holds": 3, "inconclusive": 1, "fails": 0}, ...}``."""
    out = {k: dict.fromkeys(VERDICTS[:3], 0) for k in KINDS}
    out["legacy"] = dict.fromkeys(VERDICTS[:3], 0)
    for c in claims:
        verdict = verdict_of(c)
        if verdict != "smoke":
            out["legacy" if is_legacy(c) else c.get("kind", "paper")][verdict] += 1
    return out


def verdict_of(claim: dict[str, Any]) -> str:
    """A results-JSON claim's verdict; a file written before verdicts existed has only ``holds``."""
    return claim.get("verdict") or {True: "holds", False: "fails"}.get(claim.get("holds"), "smoke")


def is_legacy(claim: dict[str, Any]) -> bool:
    """A claim decided by its notebook's own test (a file written before this rule, or an unconverted call)."""
    return "kind" not in claim or claim.get("test") == LEGACY


def summary(claims: Sequence[dict[str, Any]]) -> str:
    """``paper claims: 3 hold, 1 inconclusive, 0 fail; controls 1/1; checks 2/2``."""
    t = tally(claims)
    p = t["paper"]
    parts = [f"paper claims: {p['holds']} hold, {p['inconclusive']} inconclusive, {p['fails']} fail"]
    for kind, label in (("control", "controls"), ("check", "checks")):
        n = sum(t[kind].values())
        if n:
            parts.append(f"{label} {t[kind]['holds']}/{n} hold")
    n = sum(t["legacy"].values())
    if n:
        parts.append(f"{n} claims not yet decided by the shared rule ({t['legacy']['holds']} hold by their own test)")
    return "; ".join(parts)


def versions(device: str = "cpu") -> dict[str, str]:
    import torch

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


def _finite(v: float) -> float | None:
    return float(f"{v:.6g}") if math.isfinite(v) else None


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
