"""The ``prunebook`` command: list the series, run their notebooks headless, report the claims.

    prunebook list
    prunebook run [SERIES ...] --profile cpu [--inplace] [-p key=value ...] [--only PATTERN]
                  [--workers N | --scheduler tcp://host:8786] [--seeds 0 1 2]
    prunebook run [SERIES ...] --profile paper --dry-run
    prunebook report [--profile cpu] [--seeds]
    prunebook course build [--series 00 ...] [--out DIR]
    prunebook course grade SUBMISSIONS... --seed S [--lab 00] [--timeout 600] [--out DIR] [--jobs N]

``run`` executes each notebook with papermill, with the series folder as working directory. Executed
copies go to ``runs/<profile>/<series>/`` unless ``--inplace``, which copies a notebook over its source
only once it ran through. A failing notebook is reported (cell and error) and the others still run.
With more than one worker, or a scheduler, the series run side by side as Dask tasks (each series' notebooks in
reading order); ``--seeds`` runs every series once per seed.

``--dry-run`` (``paper`` only) runs the paper configuration on stand-in data of the real shapes, every training cut
to a few steps: the kernel gets ``PRUNEBOOK_DRY_RUN=1``, executed copies go to ``runs/paper-dry/`` and start with a
note saying what a dry run proves and what it does not, results and figures go to git-ignored ``paper-dry``
folders, the cache to its own folder. It never writes over committed notebooks, results or figures.
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
from .config import DRY_RUN_DIR, DRY_RUN_ENV, DRY_SEEDS, DRY_STEPS, PROFILES, checkout
from .display import kernel_manager_class, one_line
from .report import read_results, read_seed_results, report_markdown, seeds_markdown

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
    here = checkout()
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


DRY_RUN_BANNER = (
    "> **Dry run on stand-in data, not a result.** This copy ran the notebook's `paper` configuration with "
    "`prunebook run --profile paper --dry-run`: the paper's models at full size and the paper's input shapes, class "
    "counts and sequence lengths, but random stand-in data in place of the paper's datasets, every training cut to "
    f"{DRY_STEPS} steps, every evaluation to a batch or two, every count of seeds to the smoke profile's (else "
    f"{DRY_SEEDS}) and long grids to their two ends (stand-in sets are small, so a paper-size batch may hold fewer "
    "examples).\n>\n"
    "> What it proves: the paper's code path runs at the paper's shapes, from loading to the claims table, on "
    "this machine's device. What it does not prove: anything about the paper. Every number, figure and verdict "
    "below comes from random data and a few steps, and means nothing."
)


def add_dry_run_banner(path: Path) -> None:
    """Put the dry run's note (:data:`DRY_RUN_BANNER`) first in an executed notebook."""
    nb = json.loads(path.read_text())
    cell = {"cell_type": "markdown", "id": "prunebook-dry-run", "metadata": {"tags": ["dry-run"]},
            "source": DRY_RUN_BANNER}
    nb["cells"] = [cell] + [c for c in nb["cells"] if c.get("id") != "prunebook-dry-run"]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def check_dry_run(args: argparse.Namespace, root: Path) -> None:
    """Refuse, in one line, a dry run that is not of the ``paper`` profile or that would write into committed
    notebooks, ``results/`` or ``figures/``."""
    if args.profile != "paper":
        raise UsageError(f"--dry-run runs the paper profile only, not {args.profile!r}: use --profile paper --dry-run")
    if args.inplace:
        raise UsageError("--dry-run never writes over the committed notebooks: drop --inplace (the executed copies "
                         f"go to runs/{DRY_RUN_DIR}/)")
    for kind in ("results", "figures"):
        override = os.environ.get(f"PRUNEBOOK_{kind.upper()}_DIR")
        if override and not args.seeds:
            folder = Path(override).resolve()
            if folder.is_relative_to(root / "notebooks") and DRY_RUN_DIR not in folder.parts:
                raise UsageError(f"--dry-run would write its {kind} into {folder.relative_to(root)} "
                                 f"(PRUNEBOOK_{kind.upper()}_DIR): unset it, or name a folder outside notebooks/")


def run_notebook(nb: Path, out: Path, params: dict[str, Any], profile: str) -> str | None:
    """Execute one notebook with papermill; returns None on success, else a one-paragraph error. A bad parameter
    value (``ConfigError`` from ``resolve()``) stops the whole run instead: every other notebook would refuse it
    too."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(nb), str(out), parameters={"profile": profile, **params}, cwd=str(nb.parent),
                                   kernel_name="python3", progress_bar=False, request_save_on_cell_execute=True,
                                   kernel_manager_class=kernel_manager_class())
    except PapermillExecutionError as exc:
        if exc.ename == "ConfigError":  # a refused parameter is refused once, not once per notebook
            raise UsageError(f"{nb.name}: {one_line(exc.evalue)}") from None
        return f"cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: {one_line(exc.evalue)}"
    except Exception as exc:  # kernel died, notebook unreadable, ...
        return f"{exc.__class__.__name__}: {one_line(str(exc))}"
    return None


def notebook_task(job: dict[str, Any]) -> dict[str, Any]:
    """Run one notebook of a run (in this process or in a Dask worker) and make its executed copy fit to commit."""
    # The kernel inherits these: headless (plain progress, no widgets), the profile, where results go.
    for name, value in job["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "PRUNEBOOK_GPUS" in os.environ:
        from . import parallel

        parallel.pin_gpu()
    nb, out, root = Path(job["nb"]), Path(job["out"]), Path(job["root"])
    t0 = time.time()
    if job.get("scheduler"):
        # The task holds its notebook slot but gives up its thread while the kernel runs, so the kernel's
        # parallel.map can use the cluster, this worker included.
        import distributed

        os.environ["PRUNEBOOK_MAP_SCHEDULER"] = job["scheduler"]
        distributed.secede()
    try:
        error = run_notebook(nb, out, job["params"], job["profile"])
    except UsageError as exc:
        return {**job, "refused": str(exc)}
    finally:
        if job.get("scheduler"):
            os.environ.pop("PRUNEBOOK_MAP_SCHEDULER", None)
            distributed.rejoin()
    took = time.time() - t0
    written = None
    if job.get("dry_run") and out.is_file():
        add_dry_run_banner(out)
    if not error:
        clean_executed(out, root)
        if job["inplace"]:
            shutil.copyfile(out, nb)
        written = str(nb if job["inplace"] else out)
    return {**job, "error": error, "took": took, "written": written}


def plan_run(args: argparse.Namespace, root: Path) -> list[list[dict[str, Any]]]:
    """The notebook runs, as chains: one per series and seed, its notebooks in reading order."""
    series = pick_series(root, args.series)
    wanted = lambda nb: not args.only or any(fnmatch.fnmatch(nb.stem, f"*{pat}*") for pat in args.only)
    selected = {name: [nb for nb in nbs if wanted(nb)] for name, nbs in series.items()}
    notebooks = [nb for nbs in selected.values() for nb in nbs]
    if not notebooks:
        raise UsageError(f"--only {args.only} matches no notebook of {', '.join(series)}")
    dry_run = getattr(args, "dry_run", False)
    if dry_run:
        check_dry_run(args, root)
    params = parse_parameters(args.param)
    if args.seeds and "seed" in params:
        raise UsageError("-p seed=... and --seeds: choose the seeds with --seeds only")
    chains = []
    for seed in args.seeds or [None]:
        per_notebook = check_parameters(params if seed is None else {**params, "seed": seed}, notebooks)
        for name, nbs in selected.items():
            env: dict[str, str | None] = {"PRUNEBOOK_HEADLESS": "1", "PRUNEBOOK_PROFILE": args.profile,
                                          DRY_RUN_ENV: "1" if dry_run else None}
            runs = root / "runs" / (DRY_RUN_DIR if dry_run else args.profile)
            if seed:  # every seed but 0 writes beside, never over, the committed (seed-0) outputs
                runs = runs / f"seed-{seed}"
                env["PRUNEBOOK_RESULTS_DIR"] = str(runs / name / "results")
                env["PRUNEBOOK_FIGURES_DIR"] = str(runs / name / "figures")
            elif seed == 0:
                env["PRUNEBOOK_RESULTS_DIR"] = env["PRUNEBOOK_FIGURES_DIR"] = None
            chains.append([{"nb": str(nb), "out": str(runs / nb.relative_to(root / "notebooks")), "root": str(root),
                            "rel": str(nb.relative_to(root / "notebooks")), "seed": seed, "profile": args.profile,
                            "params": per_notebook[nb], "env": env, "inplace": args.inplace and not seed,
                            "dry_run": dry_run}
                           for nb in nbs])
    return [chain for chain in chains if chain]


def cmd_run(args: argparse.Namespace) -> int:
    root = repo_root()
    if not pick_series(root, args.series):
        print("no series yet: nothing to run")
        return 0
    chains = plan_run(args, root)
    workers = args.workers  # an explicit --workers means a local cluster, whatever $PRUNEBOOK_SCHEDULER says
    scheduler = args.scheduler or (os.environ.get("PRUNEBOOK_SCHEDULER") if workers is None else None)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give at least 1")
    if scheduler is None and workers is None:
        workers = default_workers(len(chains))
    if scheduler is None and workers == 1:
        results = _run_here(chains, root)
    else:
        results = _run_on_cluster(chains, root, scheduler, workers)
    jobs = [job for chain in chains for job in chain]
    failures = [r["rel"] + _seed_note(r) for r in results if r.get("error")]
    dry = " (dry run on stand-in data: no number means anything)" if getattr(args, "dry_run", False) else ""
    print(f"{len(jobs) - len(failures)} of {len(jobs)} notebooks ran at {args.profile}{dry}.")
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures else 0


def default_workers(chains: int) -> int:
    """Without ``--workers``: one worker per visible GPU (the notebooks' grids spread over the GPUs that no notebook
    holds), else as many as the cores allow and no more than there are chains of notebooks to run."""
    from . import parallel

    gpus = parallel.visible_gpus()
    if gpus:
        return len(gpus)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, chains))


def _seed_note(job: dict[str, Any]) -> str:
    return f" (seed {job['seed']})" if job["seed"] is not None else ""


def _run_here(chains: list[list[dict[str, Any]]], root: Path) -> list[dict[str, Any]]:
    """One after another, in this process (no Dask)."""
    jobs = [job for chain in chains for job in chain]
    results = []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job['rel']}{_seed_note(job)} at {job['profile']} ...", flush=True)
        result = notebook_task(job)
        if result.get("refused"):
            raise UsageError(result["refused"])
        print_outcome(result, root)
        results.append(result)
    return results


def _run_on_cluster(chains: list[list[dict[str, Any]]], root: Path, scheduler: str | None,
                    workers: int | None) -> list[dict[str, Any]]:
    """Each chain's notebooks one after another, as tasks; chains side by side on the cluster."""
    from . import parallel

    try:
        return _run_with(parallel.cluster(scheduler=scheduler, workers=workers), chains, root)
    except parallel.CacheNotShared as exc:
        raise UsageError(str(exc)) from None


def _run_with(cluster: Any, chains: list[list[dict[str, Any]]], root: Path) -> list[dict[str, Any]]:
    from distributed import as_completed

    from . import parallel

    with cluster as client:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        # a worker that declares a GPU (or a notebook slot) gives it to one notebook at a time
        resources = parallel.notebook_resources(client)
        address = client.scheduler.address if resources else None
        # A chain's next notebook is submitted when the one before ends, and a finished notebook's future is let go:
        # the cluster keeps no result that a worker's death would make it compute again (a whole notebook).
        n, results, later = sum(map(len, chains)), [], {}
        running = as_completed()

        def submit(chain: list[dict[str, Any]]) -> None:
            job = chain[0]
            future = client.submit(notebook_task, {**job, "scheduler": address}, pure=False,
                                   resources=resources, key=f"{job['rel']}{_seed_note(job)}-{os.urandom(4).hex()}")
            later[future.key] = chain[1:]
            running.add(future)

        for chain in chains:
            submit(chain)
        for future in running:
            try:
                result = future.result()
            except Exception as exc:  # the worker died every time Dask tried (KilledWorker)
                job = future.key.rsplit("-", 1)[0]
                result = {"rel": job, "seed": None, "out": "", "took": 0.0, "error": f"{type(exc).__name__}: "
                          f"{one_line(str(exc))}", "lost": True}
            rest = later.pop(future.key)
            future.release()
            if result.get("refused"):
                client.cancel(list(running.futures))
                raise UsageError(result["refused"])
            if rest:  # a refused parameter has stopped the run above; a failed notebook does not stop its series
                submit(rest)
            results.append(result)
            head = f"[{len(results)}/{n}] {result['rel']}{_seed_note(result)}"
            if result.get("lost"):
                print(f"{head}: FAILED: {result['error']}", flush=True)
            else:
                print(head, end="", flush=True)
                print_outcome(result, root, prefix=": ")
    return results


def print_outcome(result: dict[str, Any], root: Path, prefix: str = "    ") -> None:
    if result["error"]:
        print(f"{prefix}FAILED after {result['took']:.0f} s: {result['error']}\n    the executed copy, with the "
              f"error: {Path(result['out']).relative_to(root)}", flush=True)
    else:
        print(f"{prefix}done in {result['took']:.0f} s -> {Path(result['written']).relative_to(root)}", flush=True)


# ---------------------------------------------------------------- report


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
    try:
        if args.seeds:
            text = seeds_markdown(results + read_seed_results(root, args.profile))
        else:
            text = report_markdown(results)
    except ValueError as exc:  # a results file older than the rule (a paper claim without its flag)
        raise UsageError(str(exc)) from exc
    print(text, end="")
    out = root / "runs" / ("report-seeds.md" if args.seeds else "report.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"\n(written to {out.relative_to(root)})")
    return 0


# ---------------------------------------------------------------- course


def cmd_course_build(args: argparse.Namespace) -> int:
    from . import course

    root = repo_root()
    try:
        written = course.build(root, args.series, Path(args.out) if args.out else None)
    except course.CourseError as exc:
        raise UsageError(str(exc)) from None
    for path in written:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        print(f"student copy: {shown}")
    return 0


def cmd_course_grade(args: argparse.Namespace) -> int:
    from . import course

    root = repo_root()
    if args.timeout <= 0 or args.jobs < 1:
        raise UsageError(f"--timeout {args.timeout} --jobs {args.jobs}: give a positive time limit and at least 1 job")
    missing = [p for p in args.submissions if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    out = Path(args.out) if args.out else root / "runs" / "course" / "grades"
    try:
        grades = course.grade([Path(p) for p in args.submissions], args.seed, root, lab=args.lab, out=out,
                              timeout=args.timeout, profile=args.profile, jobs=args.jobs)
    except course.CourseError as exc:
        raise UsageError(str(exc)) from None
    shown = out.relative_to(root) if out.resolve().is_relative_to(root) else out
    print(f"{len(grades)} submissions graded: {shown}/grades.csv, feedback in {shown}/feedback/")
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
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run on a local Dask cluster of N worker processes (default: one per visible GPU; without "
                          "GPUs, as many as the cores, at most one per series and seed); 1 runs everything here, one "
                          "notebook after another")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run on the Dask cluster at ADDRESS, e.g. tcp://host:8786 (default: $PRUNEBOOK_SCHEDULER)")
    run.add_argument("--dry-run", action="store_true",
                     help="with --profile paper: the paper configuration at full model size on stand-in data of the "
                          f"real shapes, every training cut to {DRY_STEPS} steps; writes only under git-ignored "
                          f"{DRY_RUN_DIR} folders; proves the code path runs, not any number")
    run.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                     help="run once per seed (-p seed=S); seed 0 writes the usual outputs, the others under "
                          "runs/<profile>/seed-S/")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="all claims, paper vs measured, as one Markdown table")
    report.add_argument("--profile", choices=PROFILES, default=None, help="only this profile's results")
    report.add_argument("--seeds", action="store_true",
                        help="per claim: on how many seeds it held, and the measured value per seed")
    report.set_defaults(func=cmd_report)
    course = sub.add_parser("course", help="labs for teaching: student copies (build) and grading (grade)")
    course_sub = course.add_subparsers(dest="course_command", required=True, parser_class=_Parser)
    build = course_sub.add_parser("build", help="write the student copies of the labs (solutions stubbed)")
    build.add_argument("--series", nargs="+", default=None, metavar="SERIES",
                       help="labs to build (00_pruning_basics, 00 or pruning_basics); all if none")
    build.add_argument("--out", default=None, metavar="DIR", help="where to write them (default: runs/course/handouts)")
    build.set_defaults(func=cmd_course_build)
    grade = course_sub.add_parser("grade", help="grade submitted notebooks: CSV of points, feedback per student")
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSION",
                       help="submitted notebooks, or folders of them (alice.ipynb, or alice/exercises.ipynb)")
    grade.add_argument("--seed", type=int, required=True, help="the grading seed of the checks' random cases")
    grade.add_argument("--lab", default=None, metavar="LAB",
                       help="the lab graded (00, 00_pruning_basics, or a solved lab notebook); default: the lab the "
                            "submissions name")
    grade.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                       help="time limit per submission (default 600)")
    grade.add_argument("--profile", choices=PROFILES, default="smoke",
                       help="the profile submissions run at (default smoke: the checks do not depend on it)")
    grade.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded side by side")
    grade.add_argument("--out", default=None, metavar="DIR",
                       help="where grades.csv, feedback/ and answers/ go (default: runs/course/grades)")
    grade.set_defaults(func=cmd_course_grade)
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
