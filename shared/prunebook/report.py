"""The claims report: every results JSON read back, one table of claims and one of counts per series.

``prunebook report`` prints it and the book's dashboard renders it, from the same rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import claims
from .config import PROFILES

# ---------------------------------------------------------------- reading the results files


def read_results(root: Path, profile: str | None = None) -> list[dict[str, Any]]:
    """The committed results (``notebooks/<series>/results/<profile>/``), of one profile or all. Left out: the labs'
    records (``exercises.json``, see :func:`prunebook.course.record_lab`: teaching, not evidence) and any folder not
    named after a profile, such as a dry run's ``paper-dry`` (its files say ``"profile": "paper"`` but hold numbers
    from stand-in data)."""
    paths = [p for p in sorted((root / "notebooks").glob("*/results/*/*.json"))
             if p.name != "exercises.json" and p.parent.name in PROFILES]
    return _read_json(root, paths, profile, lambda path: path.parent.name)


def _read_json(root: Path, paths: list[Path], profile: str | None, profile_of) -> list[dict[str, Any]]:
    """Each results file of ``profile`` (all if None), parsed; an unreadable one is skipped with a warning."""
    results = []
    for path in paths:
        if profile and profile_of(path) != profile:
            continue
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: skipping unreadable {path.relative_to(root)} ({exc})", file=sys.stderr)
    return results


# ---------------------------------------------------------------- the tables


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: (r["series"], r["notebook"], PROFILES.index(r["profile"])))


def claim_rows(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every claim with its results file, in the report's order (series, notebook, profile)."""
    return [(r, c) for r in _ordered(results) for c in r["claims"]]


COUNT_COLUMNS = (  # the claim counts' columns, in order: key in count_rows' rows, heading
    ("held", "faithful paper claims held"), ("inconclusive", "inconclusive"), ("failed", "failed"),
    ("unfaithful", "paper claims not faithful (held / inconclusive / failed)"), ("controls", "controls held"),
    ("checks", "checks held"))


def count_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claim counts per profile and series (smoke runs prove nothing and are left out), then one row per
    profile over all series (``series`` is ``"all"``). Faithful paper claims by verdict (the headline); paper
    claims whose test is not faithful as held / inconclusive / failed; controls and checks as held/total."""
    per_series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in _ordered(results):
        if r["profile"] != "smoke":
            per_series.setdefault((r["profile"], r["series"]), []).extend(r["claims"])
    totals: dict[str, list[dict[str, Any]]] = {}
    keys = sorted(per_series)
    for profile, series in keys:
        totals.setdefault(profile, []).extend(per_series[profile, series])
    return ([_counts(profile, series, per_series[profile, series]) for profile, series in keys]
            + [_counts(profile, "all", cs) for profile, cs in totals.items()])


def _counts(profile: str, series: str, cs: list[dict[str, Any]]) -> dict[str, Any]:
    t = claims.tally(cs)
    p, u = t["paper"], t["unfaithful"]
    return {"profile": profile, "series": series, "held": p["holds"], "inconclusive": p["inconclusive"],
            "failed": p["fails"],
            "unfaithful": f"{u['holds']} / {u['inconclusive']} / {u['fails']}" if sum(u.values()) else "",
            "controls": f"{t['control']['holds']}/{sum(t['control'].values())}",
            "checks": f"{t['check']['holds']}/{sum(t['check'].values())}"}


def faithful_cell(claim: dict[str, Any]) -> str:
    """A paper claim's fidelity as the tables show it: ``yes`` or ``no: <reason>``; empty for ours."""
    group = claims.group_of(claim)  # refuses a paper claim that does not say
    return {"paper": "yes", "unfaithful": f"no: {claim.get('unfaithful_because', '')}"}.get(group, "")


def report_markdown(results: list[dict[str, Any]]) -> str:
    """One table of every claim, then the counts per series: faithful paper claims first, the paper claims whose
    test is not faithful apart, controls and checks apart."""
    lines = ["| series | notebook | profile | kind | claim | source | paper | measured | verdict | faithful |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, c in claim_rows(results):
        verdict = c["verdict"]
        shown = verdict if verdict in ("holds", "smoke") else f"**{verdict}**"
        lines.append("| " + " | ".join(_cell(v) for v in (r["series"], r["notebook"], r["profile"],
                                                          c["kind"], c["text"], c["source"],
                                                          c["paper"], c["measured"])) + f" | {shown} | "
                     + _cell(faithful_cell(c)) + " |")
    out = "\n".join(lines) + "\n"
    counts = count_rows(results)
    if counts:
        out += "\n| profile | series | " + " | ".join(head for _, head in COUNT_COLUMNS) + " |\n"
        out += "|---|---|" + "---:|" * len(COUNT_COLUMNS) + "\n"
        for row in counts:
            series = "**all**" if row["series"] == "all" else row["series"]
            out += f"| {row['profile']} | {series} | " + " | ".join(str(row[k]) for k, _ in COUNT_COLUMNS) + " |\n"
    return out


def read_seed_results(root: Path, profile: str | None = None) -> list[dict[str, Any]]:
    """The results of the runs for seeds other than 0 (``runs/<profile>/seed-S/<series>/results/``)."""
    return _read_json(root, sorted((root / "runs").glob("*/seed-*/*/results/*.json")), profile,
                      lambda path: path.parts[-5])


def seed_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim (series, notebook, profile, claim id): its verdict and measured value on each seed."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r.get("seed", 0)):
        for c in r["claims"]:
            row = rows.setdefault((r["series"], r["notebook"], r["profile"], c["id"]),
                                  {"series": r["series"], "notebook": r["notebook"], "profile": r["profile"],
                                   "claim": c, "seeds": {}})
            row["seeds"].setdefault(r.get("seed", 0), (c["verdict"], c["measured"]))
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1], PROFILES.index(k[2])))]


def seeds_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| series | notebook | profile | kind | claim | paper | held on | measured per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for row in seed_rows(results):
        c, seeds = row["claim"], row["seeds"]
        held = sum(v == "holds" for v, _ in seeds.values())
        shown = f"smoke, {len(seeds)} seeds" if row["profile"] == "smoke" else f"{held} of {len(seeds)} seeds"
        measured = "; ".join(f"{s}: {_cell(m)} ({v})" for s, (v, m) in seeds.items())
        lines.append("| " + " | ".join(_cell(v) for v in (row["series"], row["notebook"], row["profile"],
                                                          c["kind"], c["text"], c["paper"])) +
                     f" | {shown} | {measured} |")
    return "\n".join(lines) + "\n"
