"""The claims table that ends every notebook, its results JSON, and the one rule that decides a claim.

    from prunebook.claims import paired, equivalent, exceeds, exact, every_run, all_of
    claims = Claims("05_skip_redesign_ablation")
    claims.add("unetpp-beats-unet", "UNet++ beats U-Net", "Table 3", paper="92.63 vs 90.77", kind="paper",
               decision=paired(iou_unetpp, iou_unet, side=">", scale=100, unit=" points"), faithful=True)
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
- :func:`every_run` — compliance with a target ("every run lands within 1 point of the size"): decided run by run,
  holds when every run complies and fails when one does not.
- :func:`all_of` — a claim made of several comparisons ("at every sparsity"): ``holds`` when every part holds,
  ``fails`` only when a part lies on the other side after a Holm correction over the parts (many conditions must
  not make a claim fail more easily), ``inconclusive`` otherwise.

**Replicates.** A ``paper`` claim pairs over independent replicates — seeds, trainings, runs. Timing rounds of
one model, cells of one grid, tokens or heads of one model are not replicates: a comparison over them (``units=``)
decides a ``control`` or a ``check``, and :meth:`Claims.add` refuses it for a paper claim.

**Faithful or not.** Every ``paper`` claim says whether its test speaks about the paper (``faithful=True``): the
procedure that decides it follows the paper's text or official code, in a regime the claim covers, and the test
can both hold and fail. Otherwise ``faithful=False`` with ``unfaithful_because``; headline counts are of faithful
paper claims, the others are listed apart with their reason.

**Power.** :func:`half_width` and :func:`seeds_needed` size a design from a pilot's spread: the interval n paired
seeds give, and the seeds a margin needs (the pilot is not the committed seeds).

At ``smoke`` every verdict is ``smoke`` and ``holds`` is ``None``: a run that small proves nothing either way.
"""

from __future__ import annotations

import hashlib
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
REPLICATES = ("seeds", "trainings", "runs", "exact")    # units a paper claim may pair over ("exact": no noise)
BOOTSTRAP_RESAMPLES = 10_000


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
    units: str = "seeds"   # what the values are replicates of ("seeds", "timing rounds", ...)
    # the verdict at another confidence level (all_of's Holm correction asks for it)
    at_level: Callable[[float], str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS[:3]:
            raise ValueError(f"verdict {self.verdict!r}; one of {VERDICTS[:3]}")
        if self.at_level is None:
            self.at_level = lambda level: self.verdict


def interval(values: Sequence[float], level: float = LEVEL, method: str = "t") -> tuple[float, float, float]:
    """Mean and ``level`` confidence interval of the mean of ``values`` (one value per seed).

    ``t``: Student's t with n − 1 degrees of freedom. ``bootstrap``: percentile bootstrap over the seeds
    (fixed resampling seed, so the same numbers give the same interval; it is too narrow with few seeds).
    One value has no interval: (−inf, +inf)."""
    x = _values(values)
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


def _values(values: Sequence[float]) -> np.ndarray:
    """One value per seed (or run) as a float array; refuses an empty, nested or non-finite list."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"need a non-empty list of finite numbers, got {values!r}")
    return x


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
              per_seed: Sequence[float] | None, sign: bool = True, units: str = "seeds", against: str = "") -> str:
    """``mean, 95 % CI [lo, hi] <against> (test; per seed …)``; ``against`` names the margin or threshold."""
    text = f"{_num(mean, scale, digits, sign)}{unit}"
    if n > 1:
        text += f", 95 % CI [{_num(lo, scale, digits, sign)}, {_num(hi, scale, digits, sign)}]"
    text += f"{against} ({test}"
    if per_seed is not None and 1 < len(per_seed) <= 12:
        text += f"; per {units.removesuffix('s')} " + ", ".join(_num(v, scale, digits, sign) for v in per_seed)
    return text + ")"


def _test_name(kind: str, n: int, method: str, units: str = "seeds", what: str = "") -> str:
    if n == 1:
        return f"one {units.removesuffix('s')}: no interval"
    # "paired t" / "t", or with a bootstrap "paired bootstrap" / "bootstrap"
    name = kind if method == "t" else " ".join([w for w in kind.split() if w != "t"] + ["bootstrap"])
    return f"{name}{what}, {n} {units}"


def _pair(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a − b``, seed by seed."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need one value per seed each; got {len(a)} and {len(b)}")
    return a - b


def paired(a: Sequence[float], b: Sequence[float], *, side: str = ">", margin: float = 0.0, scale: float = 1.0,
           digits: int = 2, unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is ``a − b`` on the paper's ``side`` of ``margin``? ``a[i]`` and ``b[i]`` come from the same seed (or the
    same other unit of pairing, named by ``units``: "cells", "timing rounds")."""
    diff = _pair(a, b)
    mean, lo, hi = interval(diff, method=method)
    test = _test_name("paired t", len(diff), method, units)
    verdict = _side_verdict(lo, hi, side, margin)
    measured = _describe(mean, lo, hi, len(diff), test, scale, digits, unit, diff, units=units)
    return Decision(verdict, mean, lo, hi, len(diff), test, measured, units,
                    lambda level: _side_verdict(*interval(diff, level, method)[1:], side, margin))


def equivalent(a: Sequence[float], b: Sequence[float], *, margin: float, scale: float = 1.0, digits: int = 2,
               unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is ``a − b`` inside ``±margin``? ``holds`` when the whole interval is inside, ``fails`` when it lies wholly
    outside, ``inconclusive`` when it straddles an edge."""
    if margin <= 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    diff = _pair(a, b)

    def verdict_at(level: float) -> str:
        _, lo, hi = interval(diff, level, method)
        inside = -margin < lo and hi < margin
        outside = lo > margin or hi < -margin
        return "holds" if inside else "fails" if outside else "inconclusive"

    mean, lo, hi = interval(diff, method=method)
    test = _test_name("paired t", len(diff), method, units, what=", equivalence")
    measured = _describe(mean, lo, hi, len(diff), test, scale, digits, unit, diff, units=units,
                         against=f" vs ±{_num(margin, scale, digits, False)}{unit}")
    return Decision(verdict_at(LEVEL), mean, lo, hi, len(diff), test, measured, units, verdict_at)


def exceeds(values: Sequence[float], *, threshold: float, side: str = ">", scale: float = 1.0, digits: int = 2,
            unit: str = "", method: str = "t", units: str = "seeds") -> Decision:
    """Is the mean of ``values`` (one per seed) on the paper's ``side`` of an absolute ``threshold``?"""
    x = np.asarray(values, dtype=float)
    mean, lo, hi = interval(x, method=method)
    test = _test_name("t", len(x), method, units)
    verdict = _side_verdict(lo, hi, side, threshold)
    measured = _describe(mean, lo, hi, len(x), test, scale, digits, unit, x, sign=False, units=units,
                         against=f" vs {side} {_num(threshold, scale, digits, False)}{unit}")
    return Decision(verdict, mean, lo, hi, len(x), test, measured, units,
                    lambda level: _side_verdict(*interval(x, level, method)[1:], side, threshold))


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
    return Decision(verdict, value, value, value, 1, "exact", measured, "exact")


def every_run(values: Sequence[float], *, target: float, tolerance: float, scale: float = 1.0, digits: int = 2,
              unit: str = "") -> Decision:
    """Compliance, run by run: ``holds`` when every run lies within ``±tolerance`` of ``target``, ``fails`` when one
    does not. No interval: the claim is about each run ("every model lands within 1 point of the target")."""
    gaps = _values(values) - target
    outside = int((np.abs(gaps) > tolerance).sum())
    verdict = "fails" if outside else "holds"
    worst = float(gaps[np.argmax(np.abs(gaps))])
    measured = (f"{outside} of {len(gaps)} runs outside ±{_num(tolerance, scale, digits, False)}{unit} of "
                f"{_num(target, scale, digits, False)}{unit}; gap per run "
                + ", ".join(_num(g, scale, digits) for g in gaps) + f"{unit} (each run decided alone)")
    return Decision(verdict, worst, float(gaps.min()), float(gaps.max()), len(gaps),
                    f"per run, {len(gaps)} runs", measured, "runs")


def holm_failures(decisions: Sequence[Decision], level: float = LEVEL) -> int:
    """How many of ``decisions`` lie on the other side of the paper after Holm's step-down correction.

    Holm at family level α = 1 − ``level``: with k parts still in play, a part is rejected when its interval at
    level 1 − α/k lies wholly on the other side; rejected parts leave the family and the next step uses k − 1."""
    alpha, left, failed = 1 - level, list(decisions), 0
    while left:
        out = [d for d in left if d.at_level(1 - alpha / len(left)) == "fails"]
        if not out:
            break
        failed += len(out)
        left = [d for d in left if all(d is not o for o in out)]
    return failed


def all_of(*decisions: Decision, sep: str = "; ") -> Decision:
    """Several comparisons that make one claim ("at every sparsity"): ``holds`` when every part holds at 95 %,
    ``fails`` only when a part lies on the other side after a Holm correction over the parts, ``inconclusive``
    otherwise. Without the correction a claim over many conditions would fail more easily the more it covers."""
    if not decisions:
        raise ValueError("all_of needs at least one decision")

    def verdict_at(level: float) -> str:
        if all(d.at_level(level) == "holds" for d in decisions):
            return "holds"
        return "fails" if holm_failures(decisions, level) else "inconclusive"

    verdict = verdict_at(LEVEL)
    worst = min(decisions, key=lambda d: d.lo)
    test = "; ".join(sorted({d.test for d in decisions}))
    measured = sep.join(d.measured for d in decisions)
    if len(decisions) > 1:
        test += f"; Holm over {len(decisions)} parts"
        unadjusted = sum(d.verdict == "fails" for d in decisions)
        if unadjusted:
            measured += (f" [{unadjusted} of {len(decisions)} parts on the other side at 95 %, "
                         f"{holm_failures(decisions)} after Holm]")
    units = next((d.units for d in decisions if d.units not in REPLICATES), decisions[0].units)
    return Decision(verdict, worst.mean, worst.lo, worst.hi, min(d.n for d in decisions), test, measured,
                    units, verdict_at)


# ---------------------------------------------------------------- power


def half_width(sd: float, n: int, level: float = LEVEL) -> float:
    """The half-width of the ``level`` paired-t interval that ``n`` seeds give when the paired differences have
    standard deviation ``sd`` (a pilot's spread): the smallest gap from the margin a claim can be decided at."""
    from scipy import stats

    if n < 2:
        return math.inf
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def seeds_needed(sd: float, margin: float, level: float = LEVEL, most: int = 1000) -> int:
    """The fewest paired seeds whose interval is narrower than ``margin`` at a pilot's ``sd``: for an equivalence
    test at a true difference of zero, the margin itself; for a one-sided test, the expected gap plus the margin.
    ``most`` + 1 when even ``most`` seeds do not reach it."""
    if margin <= 0:
        raise ValueError(f"the distance the interval must clear must be positive, got {margin}")
    for n in range(2, most + 1):
        if half_width(sd, n, level) < margin:
            return n
    return most + 1


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
    faithful: bool | None = None       # paper claims only: does the test speak about the paper?
    unfaithful_because: str = ""


@dataclass
class Claims:
    notebook: str
    cfg: config.Config | None = None
    claims: list[Claim] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg = self.cfg or config.current()

    def add(self, id: str, text: str, source: str, paper: Any, measured: Any = None, holds: bool | None = None, *,
            kind: str | None = None, decision: Decision | None = None, note: str = "",
            faithful: bool | None = None, unfaithful_because: str = "") -> Claim:
        """Record one claim. A ``paper`` claim needs a ``decision`` from this module's rule, over replicates, and
        ``faithful`` (with ``unfaithful_because`` when False); a control or check may pass ``holds`` instead (a
        count, an identity) and takes no ``faithful``. ``measured`` defaults to the decision's line."""
        if any(c.id == id for c in self.claims):
            raise ValueError(f"claim id {id!r} is used twice in {self.notebook}")
        if kind not in KINDS:
            raise ValueError(f"claim {id!r}: kind={kind!r}; choose one of {', '.join(KINDS)}")
        if (decision is None) == (holds is None):
            raise ValueError(f"claim {id!r}: give exactly one of decision= (the shared rule) or holds=")
        if kind == "paper":
            if decision is None:
                raise ValueError(f"claim {id!r}: a paper claim is decided by prunebook.claims (paired, equivalent, "
                                 "exceeds, exact, every_run, all_of), not by holds=")
            if decision.units not in REPLICATES:
                raise ValueError(f"claim {id!r}: a paper claim pairs over replicates ({', '.join(REPLICATES)}), "
                                 f"not over {decision.units}; make it a check or a control, or decide it over seeds")
            if not isinstance(faithful, bool):
                raise ValueError(f"claim {id!r}: say whether the test is faithful to the paper (faithful=True, or "
                                 "faithful=False with unfaithful_because='why')")
            if faithful == bool(unfaithful_because.strip()):
                raise ValueError(f"claim {id!r}: unfaithful_because is the reason a test is not faithful: give it "
                                 "exactly when faithful=False")
        elif faithful is not None or unfaithful_because:
            raise ValueError(f"claim {id!r}: only paper claims are marked faithful or not; a {kind} is ours")
        if decision is not None:
            verdict, test, ci = decision.verdict, decision.test, [decision.lo, decision.hi]
            measured = decision.measured if measured is None else measured
        else:
            verdict, test, ci = ("holds" if holds else "fails"), "", None
        if self.cfg.profile == "smoke":
            verdict = "smoke"
        claim = Claim(id, kind, text, source, _plain(paper), _plain(measured), verdict,
                      None if verdict == "smoke" else verdict == "holds", test,
                      None if ci is None else [_finite(v) for v in ci], note, faithful, unfaithful_because)
        self.claims.append(claim)
        return claim

    def table(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {"kind": c.kind, "claim": c.text, "source": c.source, "paper": _fmt(c.paper),
             "measured": _fmt(c.measured), "verdict": c.verdict,
             "faithful": {True: "yes", False: f"no: {c.unfaithful_because}", None: ""}[c.faithful], "note": c.note}
            for c in self.claims
        ]
        return pd.DataFrame(rows, columns=["kind", "claim", "source", "paper", "measured", "verdict", "faithful",
                                           "note"])

    def path(self) -> Path:
        return config.output_dir("results", self.cfg.profile) / f"{self.notebook}.json"

    def save(self, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``results/<profile>/<notebook>.json`` and print a one-line summary."""
        result = {
            "series": config.series_dir().name,
            "notebook": self.notebook,
            "profile": self.cfg.profile,
            **({"dry_run": True} if getattr(self.cfg, "dry_run", False) else {}),  # stand-in data: no verdict counts
            "seed": self.cfg.seed,
            "wall_s": round(time.time() - getattr(self.cfg, "started", time.time()), 1),
            "versions": versions(self.cfg.device),
            "code": provenance(config.series_dir()),
            "config": {k: v for k, v in self.cfg.items() if k not in ("data_root",)},
            "claims": [asdict(c) for c in self.claims],
            "metrics": _plain(metrics or {}),
        }
        path = cache.save_json(result, self.path())
        if self.cfg.profile == "smoke" or result.get("dry_run"):
            which = "in a dry run" if result.get("dry_run") else "at smoke"
            print(f"{len(self.claims)} claims computed {which} (which proves nothing); wrote {path.name}")
        else:
            print(f"{summary(result['claims'])} at {self.cfg.profile}; wrote {path.name}")
        return path


GROUPS = ("paper", "unfaithful", "control", "check")


def group_of(claim: dict[str, Any]) -> str:
    """Where a results-JSON claim is counted: ``paper`` (a faithful paper claim, the headline), ``unfaithful`` (a
    paper claim whose test does not speak about the paper), ``control`` or ``check``."""
    if claim["kind"] != "paper":
        return claim["kind"]
    if not isinstance(claim.get("faithful"), bool):
        raise ValueError(f"paper claim {claim['id']!r} does not say whether its test is faithful: rerun its notebook")
    return "paper" if claim["faithful"] else "unfaithful"


def tally(claims: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts by group (:func:`group_of`) and verdict: ``{"paper": {"holds": 3, "inconclusive": 1, "fails": 0}, ...}``;
    ``paper`` counts faithful paper claims only."""
    out = {g: dict.fromkeys(VERDICTS[:3], 0) for g in GROUPS}
    for c in claims:
        if c["verdict"] != "smoke":
            out[group_of(c)][c["verdict"]] += 1
    return out


def summary(claims: Sequence[dict[str, Any]]) -> str:
    """``faithful paper claims: 3 hold, 1 inconclusive, 0 fail; 2 paper claims not faithful (1 hold, 1 fail);
    controls 1/1 hold; checks 2/2 hold``."""
    t = tally(claims)
    p = t["paper"]
    parts = [f"faithful paper claims: {p['holds']} hold, {p['inconclusive']} inconclusive, {p['fails']} fail"]
    u = t["unfaithful"]
    n = sum(u.values())
    if n:
        parts.append(f"{n} paper claim{'s' * (n > 1)} not faithful ({u['holds']} hold, {u['inconclusive']} "
                     f"inconclusive, {u['fails']} fail)")
    for kind, label in (("control", "controls"), ("check", "checks")):
        n = sum(t[kind].values())
        if n:
            parts.append(f"{label} {t[kind]['holds']}/{n} hold")
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


def provenance(series: Path) -> dict[str, str]:
    """What code made a result: the commit (``git describe --always --dirty``; ``-dirty`` when the checkout had
    uncommitted edits) and a hash of the series' method code (its ``.py`` files) and of this package, so a result
    can be matched to its code even from a dirty checkout."""
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=series, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    method = cache.method_files(series)
    return {"commit": commit,
            "method": ", ".join(str(p.relative_to(series)) for p in method),
            "method_sha256": _sha256(method),
            "prunebook_sha256": _sha256(sorted(Path(__file__).parent.glob("*.py")))}


def _sha256(paths: Sequence[Path]) -> str:
    """The first 16 hex digits of one SHA-256 over the files' names and bytes, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


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
