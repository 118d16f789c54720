"""The ``prunebook`` command: list the series, run their notebooks headless, report the claims.

    prunebook list
    prunebook run [SERIES ...] --profile cpu [--inplace] [-p key=value ...] [--only PATTERN]
    prunebook report [--profile cpu]

``run`` executes each notebook with papermill, with the series folder as working directory. Executed
copies go to ``runs/<profile>/<series>/`` unless ``--inplace``, which copies a notebook over its source
only once it ran through. A failing notebook is reported (cell and error) and the others still run.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import claims
from .config import PROFILES

SERIES_RE = re.compile(r"^\d\d_[a-z0-9_]+$")
NOTEBOOK_RE = re.compile(r"^\d\d_.+\.ipynb$")


class UsageError(Exception):
    """Bad input on the command line: one line saying what is wrong and what is allowed."""


# ---------------------------------------------------------------- finding things


def repo_root() -> Path:
    """``$PRUNEBOOK_ROOT``, else the nearest folder above the working directory holding ``notebooks/``
    and ``pyproject.toml``, else the checkout this package was installed from (editable install)."""
    if os.environ.get("PRUNEBOOK_ROOT"):
        return Path(os.environ["PRUNEBOOK_ROOT"]).resolve()
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    here = Path(__file__).resolve().parents[2]
    if (here / "notebooks").is_dir():
        return here
    raise UsageError("cannot find the prunebook checkout: run inside it, or set PRUNEBOOK_ROOT to its folder")


def all_series(root: Path) -> dict[str, list[Path]]:
    """Series folder name → its notebooks in reading order (only folders that hold notebooks)."""
    out = {}
    for folder in sorted((root / "notebooks").iterdir()):
        if folder.is_dir() and SERIES_RE.match(folder.name):
            notebooks = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_RE.match(p.name))
            if notebooks:
                out[folder.name] = notebooks
    return out


def pick_series(root: Path, names: list[str]) -> dict[str, list[Path]]:
    """The named series (full name ``02_grokking``, number ``02`` or ``2``, or name ``grokking``); all if none."""
    series = all_series(root)
    if not names:
        return series
    picked = {}
    for name in names:
        matches = [s for s in series if name in (s, s[:2], s[3:]) or (name.isdigit() and int(name) == int(s[:2]))]
        if len(matches) != 1:
            known = ", ".join(series) or "none yet"
            raise UsageError(f"no series {name!r}; the series are: {known}")
        picked[matches[0]] = series[matches[0]]
    return picked


def read_results(root: Path, profile: str | None = None) -> list[dict[str, Any]]:
    results = []
    for path in sorted((root / "notebooks").glob("*/results/*/*.json")):
        if profile and path.parent.name != profile:
            continue
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"warning: skipping unreadable {path.relative_to(root)} ({exc})", file=sys.stderr)
    return results


# ---------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    root = repo_root()
    series = all_series(root)
    if not series:
        print("no series yet: notebooks/ has no series folder (NN_name/) with notebooks in it")
        return 0
    results = {(r["series"], r["notebook"], r["profile"]): r for r in read_results(root)}
    for name, notebooks in series.items():
        print(f"{name}  ({len(notebooks)} notebooks)")
        for nb in notebooks:
            status = []
            for profile in PROFILES:
                r = results.get((name, nb.stem, profile))
                if r:
                    verdict = "ran" if profile == "smoke" else claims.summary(r["claims"])
                    status.append(f"{profile}: {verdict}, {r['wall_s']:.0f} s")
            print(f"  {nb.stem:<40} {'; '.join(status) or 'not run yet'}")
    return 0


# ---------------------------------------------------------------- run


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are Python literals (``3``, ``0.5``, ``True``, ``'x'``) or bare strings."""
    params = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"-p {pair!r}: write parameters as key=value, e.g. -p seed=1")
        if key == "profile":
            raise UsageError("-p profile=...: choose the profile with --profile")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text
    return params


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters cell's names and default values (a default that is not a literal reads as None)."""
    import papermill

    out = {}
    for name, info in papermill.inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            out[name] = None
    return out


def check_parameters(params: dict[str, Any], notebooks: list[Path]) -> dict[Path, dict[str, Any]]:
    """Which notebooks take which of ``params``; an unknown name or a value of the wrong type is an error."""
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    known = sorted({k for d in declared.values() for k in d})
    for key, value in params.items():
        if key not in known:
            raise UsageError(f"unknown parameter {key!r}; these notebooks take: {', '.join(known) or 'none'}")
        for nb, defaults in declared.items():
            if key in defaults and not _same_kind(value, defaults[key]):
                raise UsageError(f"-p {key}={value!r}: {nb.name} expects {type(defaults[key]).__name__} "
                                 f"(its default is {defaults[key]!r})")
    return {nb: {k: v for k, v in params.items() if k in d} for nb, d in declared.items()}


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def clean_executed(path: Path, root: Path) -> None:
    """Make an executed notebook fit to commit: drop papermill's injected-parameters cell (it would pin the
    profile for later runs), its machine paths, and keep the standard kernel name."""
    nb = json.loads(path.read_text())
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    pm = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if pm.get(key):
            pm[key] = os.path.relpath(pm[key], root)
    nb["metadata"].setdefault("kernelspec", {}).update({"name": "python3", "display_name": "Python 3 (ipykernel)",
                                                        "language": "python"})
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_notebook(nb: Path, out: Path, params: dict[str, Any], profile: str) -> str | None:
    """Execute one notebook with papermill; returns None on success, else a one-paragraph error. A bad parameter
    value (``ConfigError`` from ``resolve()``) stops the whole run instead: every other notebook would refuse it
    too."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(nb), str(out), parameters={"profile": profile, **params}, cwd=str(nb.parent),
                                   kernel_name="python3", progress_bar=False, request_save_on_cell_execute=True)
    except PapermillExecutionError as exc:
        if exc.ename == "ConfigError":  # a refused parameter is refused once, not once per notebook
            raise UsageError(f"{nb.name}: {_one_line(exc.evalue)}") from None
        return f"cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: {_one_line(exc.evalue)}"
    except Exception as exc:  # kernel died, notebook unreadable, ...
        return f"{exc.__class__.__name__}: {_one_line(str(exc))}"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def cmd_run(args: argparse.Namespace) -> int:
    root = repo_root()
    series = pick_series(root, args.series)
    if not series:
        print("no series yet: nothing to run")
        return 0
    notebooks = [nb for nbs in series.values() for nb in nbs
                 if not args.only or any(fnmatch.fnmatch(nb.stem, f"*{pat}*") for pat in args.only)]
    if not notebooks:
        raise UsageError(f"--only {args.only} matches no notebook of {', '.join(series)}")
    per_notebook = check_parameters(parse_parameters(args.param), notebooks)

    # The kernels inherit these: headless (plain progress, no widgets), and the profile for whatever reads it.
    os.environ["PRUNEBOOK_HEADLESS"] = "1"
    os.environ["PRUNEBOOK_PROFILE"] = args.profile
    failures = []
    for i, nb in enumerate(notebooks, 1):
        rel = nb.relative_to(root / "notebooks")
        out = root / "runs" / args.profile / rel
        print(f"[{i}/{len(notebooks)}] {rel} at {args.profile} ...", flush=True)
        t0 = time.time()
        error = run_notebook(nb, out, per_notebook[nb], args.profile)
        took = time.time() - t0
        if error:
            failures.append(rel)
            print(f"    FAILED after {took:.0f} s: {error}\n    the executed copy, with the error: "
                  f"{out.relative_to(root)}", flush=True)
            continue
        clean_executed(out, root)
        if args.inplace:
            shutil.copyfile(out, nb)
        written = nb if args.inplace else out
        print(f"    done in {took:.0f} s -> {written.relative_to(root)}", flush=True)
    print(f"{len(notebooks) - len(failures)} of {len(notebooks)} notebooks ran at {args.profile}.")
    if failures:
        print("failed: " + ", ".join(map(str, failures)))
    return 1 if failures else 0


# ---------------------------------------------------------------- report


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _ordered(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: (r["series"], r["notebook"], PROFILES.index(r["profile"])))


def claim_rows(results: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every claim with its results file, in the report's order (series, notebook, profile)."""
    return [(r, c) for r in _ordered(results) for c in r["claims"]]


def count_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The claim counts per profile and series (smoke runs prove nothing and are left out), then one row per
    profile over all series (``series`` is ``"all"``). Paper claims by verdict; controls and checks as held/total;
    ``legacy``: claims still decided by their notebook's own test."""
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
    p = t["paper"]
    return {"profile": profile, "series": series, "held": p["holds"], "inconclusive": p["inconclusive"],
            "failed": p["fails"], "controls": f"{t['control']['holds']}/{sum(t['control'].values())}",
            "checks": f"{t['check']['holds']}/{sum(t['check'].values())}", "legacy": sum(t["legacy"].values())}


def report_markdown(results: list[dict[str, Any]]) -> str:
    """One table of every claim, then the count of paper claims per series (controls and checks apart)."""
    lines = ["| series | notebook | profile | kind | claim | source | paper | measured | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r, c in claim_rows(results):
        verdict = claims.verdict_of(c)
        shown = verdict if verdict in ("holds", "smoke") else f"**{verdict}**"
        if claims.is_legacy(c):
            shown += " (own test, not the shared rule)"
        lines.append("| " + " | ".join(_cell(v) for v in (r["series"], r["notebook"], r["profile"],
                                                          c.get("kind", "paper"), c["text"], c["source"],
                                                          c["paper"], c["measured"])) + f" | {shown} |")
    out = "\n".join(lines) + "\n"
    counts = count_rows(results)
    if counts:
        out += ("\n| profile | series | paper claims held | inconclusive | failed | controls held | checks held "
                "| not yet under the shared rule |\n")
        out += "|---|---|---:|---:|---:|---:|---:|---:|\n"
        for row in counts:
            series = "**all**" if row["series"] == "all" else row["series"]
            out += (f"| {row['profile']} | {series} | {row['held']} | {row['inconclusive']} | {row['failed']} "
                    f"| {row['controls']} | {row['checks']} | {row['legacy'] or ''} |\n")
    return out


def cmd_report(args: argparse.Namespace) -> int:
    root = repo_root()
    if not all_series(root):
        print("no series yet: there are no claims to report")
        return 0
    results = read_results(root, args.profile)
    if not results:
        which = f"at {args.profile} " if args.profile else ""
        print(f"no results {which}yet: run `prunebook run --profile {args.profile or 'cpu'}` first")
        return 0
    text = report_markdown(results)
    print(text, end="")
    out = root / "runs" / "report.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"\n(written to {out.relative_to(root)})")
    return 0


# ---------------------------------------------------------------- entry point


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like our own usage errors
        self.exit(2, f"prunebook: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunebook", description="Run and report the prunebook notebook series.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="the series, their notebooks and their claim status").set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="execute notebooks headless with papermill")
    run.add_argument("series", nargs="*", help="series to run (02_grokking, 02 or grokking); all if none")
    run.add_argument("--profile", choices=PROFILES, default="cpu", help="smoke, cpu (default) or paper")
    run.add_argument("--inplace", action="store_true", help="write executed notebooks over their sources")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a notebook parameter, e.g. -p seed=1 (repeatable)")
    run.add_argument("--only", action="append", default=[], metavar="PATTERN",
                     help="run only notebooks whose name contains PATTERN (repeatable)")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="all claims, paper vs measured, as one Markdown table")
    report.add_argument("--profile", choices=PROFILES, default=None, help="only this profile's results")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"prunebook: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
