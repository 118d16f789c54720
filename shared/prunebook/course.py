"""Course labs: exercises checked against prunebook's own code, student copies, and grading.

A lab is a solved notebook, ``notebooks/<NN_name>/exercises.ipynb``: the source of truth. Its exercises use nbgrader's
own markers, so an instructor who uses nbgrader can take them as they are:

- a *solution cell* (cell metadata ``nbgrader.solution = true``, ``grade_id`` the exercise id, e.g. ``"00.1"``)
  holds the answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the student copy has
  ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` there instead (a Markdown solution cell, a written
  answer, becomes ``YOUR ANSWER HERE``);
- the cell after it calls ``course.check("00.1", magnitude_mask)``: the student's function against the reference
  on fresh random cases drawn from ``seed`` (0 by default; an instructor grades with a private one). It raises
  ``AssertionError`` with the first counterexample and a hint that points at the lab's equation;
- cells tagged ``instructor`` are dropped from student copies, and the outputs of solution cells and of cells
  tagged ``reveal`` are cleared; the papermill ``parameters`` cell stays.

Each lab's checks live with the lab, in ``notebooks/<NN_name>/checks.py``: small functions registered with
:func:`exercise` (``@exercise("01.2", "ap_choose", hint=...)``). ``check("01.2", fn)`` imports lab 01's
``checks.py`` on first use, from the working directory when it is the lab's folder (a notebook's kernel, a handout,
the grader's copy) or else from the checkout, with the lab folder on ``sys.path`` so that the checks import the
series module they compare against (``import ap``). This module holds only what every lab uses.

    prunebook course build [--series 00 ...] [--out DIR]       student copies (handouts)
    prunebook course grade SUBMISSIONS... --seed S [--lab 00]  points per exercise (CSV), feedback per student

torch, nbformat and nbclient are imported where they are used: each takes seconds to import, and the command line
(``course build``, ``--help``) needs neither torch nor a kernel.
"""

from __future__ import annotations

import ast
import copy
import csv
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import checkout
from .display import kernel_manager_class, one_line

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = "YOUR ANSWER HERE"
LAB_FILE = "exercises.ipynb"
INSTRUCTOR, REVEAL = "instructor", "reveal"


class CourseError(Exception):
    """A lab or a command-line input that cannot be used: one line saying why."""


# ---------------------------------------------------------------- the registry of checks


@dataclass
class Exercise:
    """One exercise: the name its solution cell defines, its points, the hint shown when it fails, and the check
    ``run(answer, generator)`` that raises ``AssertionError`` with a counterexample."""

    id: str
    name: str
    points: int
    hint: str
    run: Callable[[Any, Any], None]
    goal: str = ""
    uses_seed: bool = True  # False: checked against a deterministic run (a "predict, then run" answer)

    @property
    def lab(self) -> str:
        return self.id.split(".")[0]


REGISTRY: dict[str, Exercise] = {}
CHECKS_FILE = "checks.py"
_LOADED: dict[str, Any] = {}  # lab number → its imported checks module
_FOLDERS: dict[str, Path] = {}  # lab number → the folder its checks came from (or are to come from)


def exercise(id: str, name: str, *, points: int = 1, hint: str = "", goal: str = "", uses_seed: bool = True):
    """Register the decorated ``check(answer, generator)`` as exercise ``id`` (``"NN.k"``, NN the series number).
    The check's docstring gives the learning goal and the hint shown on a failure (``Goal: ...``, a blank line,
    ``Hint: ...``) unless ``goal``/``hint`` are passed. A lab's ``checks.py`` registers its exercises this way;
    importing the same file again replaces them."""
    if not re.fullmatch(r"\d\d\.\w+", id):
        raise ValueError(f"exercise id {id!r}: write it as NN.k, NN the series number (00.1, 07.2)")

    def register(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        old = REGISTRY.get(id)
        if old is not None and _source_file(old.run) != _source_file(fn):
            raise ValueError(f"exercise {id} is registered twice ({_source_file(old.run)} and {_source_file(fn)})")
        doc_goal, doc_hint = _goal_and_hint(fn)
        REGISTRY[id] = Exercise(id, name, points, hint or doc_hint, fn, goal or doc_goal, uses_seed)
        return fn

    return register


def _goal_and_hint(fn: Callable) -> tuple[str, str]:
    """``Goal: ...`` and ``Hint: ...`` from a check's docstring, each on one line ("" where absent)."""
    parts = {"Goal": "", "Hint": ""}
    for block in inspect.cleandoc(fn.__doc__ or "").split("\n\n"):
        label, _, text = block.partition(": ")
        if label in parts:
            parts[label] = " ".join(text.split())
    return parts["Goal"], parts["Hint"]


PREDICT = "run the experiment cell after the question and read each number; "


def predictions_exercise(id: str, experiment: Callable[[], dict[str, Any]], *, points: int = 2) -> None:
    """Register a "predict, then run" exercise ``id``: the student's dict ``predictions`` against what
    ``experiment()`` measures (:func:`compare_predictions`). The experiment's docstring gives the learning goal
    (``Goal: ...``) and the end of the hint (``Hint: ...``, the notebook sections that explain each number)."""
    goal, explained = _goal_and_hint(experiment)

    def check(student: Any, generator: Any) -> str:
        return compare_predictions(student, experiment())

    check.__wrapped__ = experiment  # the check belongs to the experiment's lab (see _source_file)
    exercise(id, "predictions", points=points, uses_seed=False, goal=goal, hint=PREDICT + explained)(check)


def _source_file(fn: Callable) -> str:
    """The file a check comes from (a predictions check: its experiment's, in the lab's ``checks.py``)."""
    return str(Path(inspect.unwrap(fn).__code__.co_filename).resolve())


def lab_folder(number: str, root: Path | None = None) -> Path:
    """The folder whose ``checks.py`` holds lab ``number``'s checks: one given to :func:`use_lab`; else the working
    directory when it is that lab's folder (a notebook's kernel, a handout, the grader's copy); else
    ``notebooks/NN_*/`` of the checkout."""
    if number in _FOLDERS:
        return _FOLDERS[number]
    cwd = Path.cwd()
    if cwd.name.startswith(f"{number}_") and (cwd / CHECKS_FILE).is_file():
        return cwd
    root = root or checkout()
    hits = sorted(p for p in (root / "notebooks").glob(f"{number}_*") if (p / CHECKS_FILE).is_file())
    if len(hits) != 1:
        have = sorted(p.parent.name for p in (root / "notebooks").glob(f"[0-9][0-9]_*/{CHECKS_FILE}"))
        raise KeyError(f"no lab {number}: no folder notebooks/{number}_*/ with a {CHECKS_FILE} under {root} (nor is "
                       f"the working directory one); the labs with checks are: {', '.join(have) or 'none'}")
    return hits[0]


def use_lab(folder: Path) -> Any:
    """Take lab ``NN``'s checks from ``folder`` (named ``NN_...``), and import them now."""
    folder = Path(folder).resolve()
    number = folder.name[:2]
    if not re.fullmatch(r"\d\d", number):
        raise CourseError(f"{folder}: a lab folder's name starts with its number (01_ap)")
    if _FOLDERS.get(number) != folder:
        _FOLDERS[number] = folder
        _LOADED.pop(number, None)
    return lab_checks(number)


def lab_checks(number: str) -> Any:
    """Lab ``number``'s checks module (its folder's ``checks.py``), imported once. The lab's folder goes on
    ``sys.path`` first, as the notebooks have it, so the checks import the series module they compare against
    (``import ap``) by its plain name."""
    if number in _LOADED:
        return _LOADED[number]
    folder = lab_folder(number)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = f"prunebook_lab_{number}_checks"
    spec = importlib.util.spec_from_file_location(name, folder / CHECKS_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _LOADED[number] = module
    return module


CHECKED: dict[str, tuple[bool, int, float]] = {}  # this kernel's checks: exercise id → (passed, seed, seconds)


def check(exercise_id: str, answer: Any, seed: int = 0, quiet: bool = False) -> None:
    """Compare ``answer`` (the student's function, or value) with the reference on random cases drawn from ``seed``.

    Prints one line when every case agrees; raises ``AssertionError`` with the first
    counterexample and a hint otherwise. A stub's ``NotImplementedError`` passes through as it is."""
    import torch

    ex = lookup(exercise_id)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    try:
        info = ex.run(answer, generator)
    except AssertionError as exc:
        CHECKED[ex.id] = (False, seed, time.perf_counter() - started)
        raise AssertionError(f"{ex.id} ({ex.name}): {exc}\nhint: {ex.hint}") from None
    CHECKED[ex.id] = (True, seed, time.perf_counter() - started)
    if not quiet:
        cases = f"{info} cases, seed {seed}" if ex.uses_seed else "checked against the run"
        print(f"{ex.id} passed ({ex.name}: {cases})")


def lookup(exercise_id: str) -> Exercise:
    """Exercise ``NN.k``, its lab's checks imported first if need be."""
    number = str(exercise_id).split(".")[0]
    if exercise_id not in REGISTRY and re.fullmatch(r"\d\d", number):
        lab_checks(number)
    if exercise_id not in REGISTRY:
        known = ", ".join(sorted(i for i in REGISTRY if i.startswith(number + "."))) or "none"
        raise KeyError(f"no exercise {exercise_id!r}; the exercises of lab {number} are: {known}")
    return REGISTRY[exercise_id]


def call(fn: Callable, case: str, *args: Any) -> Any:
    """Call the student's function; any error but a stub's ``NotImplementedError`` becomes a counterexample."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(f"{case}: raised {type(exc).__name__}: {exc}") from exc


def compare_predictions(student: Any, measured: dict[str, Any]) -> str:
    """A "predict, then run" answer: ``student`` must be a dict with every key of ``measured`` and its value (a
    ``True``/``False`` where the run gives one, not 1/0). Raises ``AssertionError`` listing the predictions that
    differ; returns ``"run"`` (what :func:`check` prints for a check without a seed)."""
    assert isinstance(student, dict), f"predictions is a {type(student).__name__}; it must be a dict"
    missing = [k for k in measured if k not in student]
    assert not missing, f"predictions has no value for: {', '.join(missing)}"
    wrong = [f"{k}: predicted {student[k]!r}, the run gives {v!r}" for k, v in measured.items()
             if student[k] != v or (isinstance(v, bool) and type(student[k]) is not bool)]
    assert not wrong, f"{len(wrong)} of {len(measured)} predictions differ from the run: " + "; ".join(wrong)
    return "run"


def same_runs(mine: dict, reference: dict, where: Callable[[Any], str], names: Sequence[str] | None = None) -> None:
    """An integration exercise's runs with the student's function against the reference runs, number by number:
    ``{run: {name: value}}`` (only ``names`` where given); the first that differs is named, ``where(run)`` saying
    which run it is."""
    for run, want in reference.items():
        for name in names or want:
            assert mine[run][name] == want[name], (f"{where(run)}: {name} = {mine[run][name]}, the reference run "
                                                   f"gives {want[name]}")


def same_claims_table(got: Any, want: Any, with_what: str) -> None:
    """An integration exercise's last test: the claims table of the run with the student's function (``got``, a
    DataFrame) equals the reference run's, cell for cell."""
    assert got.equals(want), (f"the claims table of the run with {with_what} differs from the reference run's:\n"
                              f"{got.to_string()}\nwanted:\n{want.to_string()}")


def record_lab(outcomes: dict[str, tuple[str, bool]] | None = None) -> None:
    """Write the lab's ``results/<profile>/exercises.json``: its wall time and, as checks, every exercise checked in
    this kernel (passed or not, at which seed, in how many seconds), plus what its integration and "predict, then
    run" exercises found on this run, e.g. ``{"05.4": ("the patched pipeline's claims table equals the reference
    run's", ok)}``. Labs teach; the claims report and its counts leave these files out."""
    from . import claims  # torch and pandas come with it; the grader's own imports stay light

    book = claims.Claims(Path(LAB_FILE).stem)
    for ex_id, (passed, seed, seconds) in sorted(CHECKED.items()):
        book.add(f"{ex_id}-check", f"the lab's answer to {ex_id} passes its check", f"exercise {ex_id}", None,
                 f"{'passed' if passed else 'failed'} at seed {seed} in {seconds:.1f} s", holds=passed, kind="check")
    for ex_id, (text, ok) in (outcomes or {}).items():
        book.add(ex_id, text, f"exercise {ex_id}", paper=None, holds=bool(ok), kind="check")
    book.save(metrics={"check_seconds": {k: round(v[2], 2) for k, v in sorted(CHECKED.items())}})  # prints its line


def brief(t: Any) -> str:
    """A tensor short enough to read in a message (its values when small, else its shape)."""
    import torch

    if isinstance(t, torch.Tensor):
        if t.numel() <= 12:
            return f"tensor({[round(v, 4) for v in t.flatten().tolist()]}).view{tuple(t.shape)}"
        return f"a tensor of shape {tuple(t.shape)}"
    return repr(t)


def rel_error(a: Any, b: Any) -> float:
    """max |a − b| / max(|a| + |b|, 1e-8), elementwise, as CS231n's notebooks compare floats."""
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(((a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)).max()) if a.numel() else 0.0


def randint(g, lo: int, hi: int) -> int:
    """An integer in [lo, hi] from the generator."""
    import torch

    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def uniform(g, lo: float, hi: float) -> float:
    """A float in [lo, hi) from the generator."""
    import torch

    return lo + (hi - lo) * float(torch.rand(1, generator=g))


# ---------------------------------------------------------------- reading labs and submissions


def repo_labs(root: Path) -> dict[str, Path]:
    """Series folder name → its solved lab (``notebooks/NN_name/exercises.ipynb``)."""
    return {p.parent.name: p for p in sorted((root / "notebooks").glob(f"[0-9][0-9]_*/{LAB_FILE}"))}


def pick_labs(root: Path, names: Sequence[str] | None) -> dict[str, Path]:
    """The labs named (``00_pruning_basics``, ``00`` or ``pruning_basics``), or a lab notebook's path; all if none."""
    labs = repo_labs(root)
    if not names:
        if not labs:
            raise CourseError(f"no labs yet: no notebooks/NN_name/{LAB_FILE} under {root}")
        return labs
    picked = {}
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            picked[lab_id(read_notebook(path), path)] = path
            continue
        hits = [s for s in labs if name in (s, s[:2], s[3:]) or (name.isdigit() and int(name) == int(s[:2]))]
        if len(hits) != 1:
            raise CourseError(f"no lab {name!r}; the labs are: {', '.join(labs) or 'none yet'}")
        picked[hits[0]] = labs[hits[0]]
    return picked


def read_notebook(path: Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def lab_id(nb, path: Path | None = None) -> str:
    """The lab a notebook belongs to (``metadata.prunebook.lab``), else its folder's name."""
    lab = nb.metadata.get("prunebook", {}).get("lab")
    if lab:
        return lab
    if path is not None:
        return path.resolve().parent.name
    raise CourseError("the notebook has no metadata.prunebook.lab")


def _nbgrader(cell) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_cells(nb) -> dict[str, Any]:
    """grade_id → the solution cell (code or Markdown) of each exercise or written question."""
    out = {}
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if meta.get("solution") and meta.get("grade_id"):
            out[str(meta["grade_id"])] = cell
    return out


def defines(source: str, name: str) -> bool:
    """Whether code defines ``name`` at top level (a function, a class, or an assignment)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return re.search(rf"^(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=", source, re.M) is not None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


# ---------------------------------------------------------------- student copies


def stub_source(source: str, where: str = "cell") -> str:
    """Replace each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block (markers included) by the nbgrader stub, at
    the BEGIN marker's indentation; a source without markers is stubbed whole, as nbgrader does."""
    lines = source.splitlines()
    if not any(BEGIN in line for line in lines):
        return "\n".join(CODE_STUB)
    out, inside = [], False
    for line in lines:
        if BEGIN in line:
            if inside:
                raise CourseError(f"{where}: {BEGIN} inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + stub for stub in CODE_STUB]
        elif END in line:
            if not inside:
                raise CourseError(f"{where}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise CourseError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def student_copy(nb):
    """The handout: solutions stubbed, instructor cells dropped, outputs of solution and reveal cells cleared,
    execution counts and run metadata removed. The result depends on the lab's content only."""
    nb = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(nb.cells):
        if INSTRUCTOR in _tags(cell):
            continue
        meta = _nbgrader(cell)
        solution = bool(meta.get("solution"))
        for key in ("execution", "papermill", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            if solution or BEGIN in cell.source:
                cell.source = stub_source(cell.source, f"cell {i} ({meta.get('grade_id', 'no grade_id')})")
            if solution or BEGIN in cell.source or REVEAL in _tags(cell):
                cell.outputs = []
            cell.execution_count = None
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = None
        elif solution:
            cell.source = TEXT_STUB
        cell.pop("id", None)
        cells.append(cell)
    nb.cells = cells
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    import nbformat

    nb.nbformat_minor = max(nb.get("nbformat_minor", 4), 5)
    for i, cell in enumerate(nb.cells):  # stable ids, so a rebuild writes the same bytes
        cell["id"] = f"cell-{i:03d}"
    nbformat.validate(nb)
    return nb


def lab_code(folder: Path) -> list[Path]:
    """The Python a lab's notebook imports: its folder's modules and packages (04_vtrans's method is a package)."""
    return sorted([*folder.glob("*.py"), *(p.parent for p in folder.glob("*/__init__.py"))])


def copy_code(paths: Sequence[Path], dest: Path) -> None:
    """Copy modules and packages (without their bytecode caches) into ``dest``."""
    for p in paths:
        if p.is_dir():
            shutil.copytree(p, dest / p.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(p, dest / p.name)


def build(root: Path, series: Sequence[str] | None = None, out: Path | None = None) -> list[Path]:
    """Write the student copy of each lab to ``out/<series>/exercises.ipynb`` (default ``runs/course/handouts``),
    with the lab folder's Python modules beside it; returns the notebooks written."""
    import nbformat

    out = Path(out) if out is not None else root / "runs" / "course" / "handouts"
    written = []
    for name, path in pick_labs(root, series).items():
        nb = read_notebook(path)
        nb.metadata.setdefault("prunebook", {})["lab"] = lab_id(nb, path)
        copy_ = student_copy(nb)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / LAB_FILE
        target.write_text(nbformat.writes(copy_) + "\n")
        copy_code(lab_code(path.parent), folder)
        written.append(target)
    return written


# ---------------------------------------------------------------- grading


@dataclass
class Grade:
    student: str
    path: Path
    points: dict[str, float] = field(default_factory=dict)
    feedback: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each: what is wrong with the submission itself
    answers: dict[str, str] = field(default_factory=dict)
    status: str = "graded"


def student_name(path: Path) -> str:
    """``alice.ipynb`` → alice; ``alice/exercises.ipynb`` (nbgrader's layout) → alice."""
    return path.parent.name if path.name == LAB_FILE else path.stem


def submission_files(paths: Sequence[Path]) -> list[Path]:
    """The files to grade: each file given, and every file under each folder given (hidden ones and checkpoints
    left out)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(p).parts))
        else:
            files.append(p)
    return files


GRADER_CELL = """\
import prunebook.course as _prunebook_course
_prunebook_course.grade_namespace(globals(), {ids!r}, {seed!r}, {out!r})
"""


def grade_namespace(namespace: dict[str, Any], ids: Sequence[str], seed: int, out: str) -> None:
    """Run the checks of ``ids`` on the names a submission defined (in its kernel); write one result per id."""
    results = {}
    for ex_id in ids:
        ex = lookup(ex_id)
        if ex.name not in namespace:
            results[ex_id] = {"passed": False, "message": f"{ex.name} is not defined"}
            continue
        try:
            check(ex_id, namespace[ex.name], seed=seed, quiet=True)
            results[ex_id] = {"passed": True, "message": "passed"}
        except NotImplementedError:
            results[ex_id] = {"passed": False, "message": "not done (raise NotImplementedError() is still there)"}
        except AssertionError as exc:
            results[ex_id] = {"passed": False, "message": str(exc)}
        except Exception as exc:  # a check that the student's value breaks in a way no case foresaw
            results[ex_id] = {"passed": False, "message": f"{type(exc).__name__}: {exc}"}
    Path(out).write_text(json.dumps(results, indent=1))


def _execute(notebook: Path, cwd: Path, result: Path, profile: str, cell_timeout: int) -> int:
    """Run one notebook in a fresh kernel, every cell even after an error (the grader's cell comes last)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    os.environ["PRUNEBOOK_PROFILE"] = profile
    os.environ["PRUNEBOOK_HEADLESS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}}, kernel_manager_class=kernel_manager_class())
    client.execute()
    nbformat.write(nb, str(result))
    return 0


def _error_lines(nb, skip: set[int]) -> list[str]:
    """One line per cell that raised (except the cells in ``skip``: the check cells, whose failures are graded)."""
    lines = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i in skip:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                why = one_line(out.get("evalue", ""), 160)
                lines.append(f"cell {i + 1} ({one_line(first, 40)!r}) raised {out.get('ename')}"
                             + (f": {why}" if why else ""))
    return lines


def _check_cells(nb, ids: Sequence[str]) -> set[int]:
    """Indices of the cells that call ``check`` on one of ``ids`` (their errors are the exercise's failures)."""
    pattern = re.compile(r"check\(\s*[\"'](" + "|".join(re.escape(i) for i in ids) + r")[\"']")
    return {i for i, c in enumerate(nb.cells) if c.cell_type == "code" and pattern.search(c.source)}


def grade_one(path: Path, lab: str, lab_nb, seed: int, timeout: float, profile: str = "smoke",
              cwd_files: Sequence[Path] = ()) -> Grade:
    """Grade one submission: static checks of its cells, then a run in its own process (killed at ``timeout``
    seconds, kernel included), then every exercise's check on what it defined. Never raises."""
    grade = Grade(student_name(path), path)
    wanted = exercise_cells(lab_nb)
    code_ids = [i for i, c in wanted.items() if c.cell_type == "code"]
    text_ids = [i for i, c in wanted.items() if c.cell_type == "markdown"]
    grade.points = {i: 0.0 for i in code_ids}
    try:
        import nbformat

        nb = nbformat.read(str(path), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
    except Exception as exc:
        grade.status = "not a notebook"
        grade.problems.append(f"not a notebook ({one_line(type(exc).__name__ + ': ' + str(exc), 120)})")
        return grade
    theirs = nb.metadata.get("prunebook", {}).get("lab")
    if theirs != lab:
        grade.status = "other lab"
        grade.problems.append(f"a submission for {theirs!r}, not for {lab!r}" if theirs else
                              f"not a copy of the {lab} handout (its notebook metadata names no lab)")
        return grade
    got = exercise_cells(nb)
    for ex_id in wanted:
        if ex_id not in got:
            grade.problems.append(f"exercise {ex_id}'s cell is missing (deleted, or its nbgrader metadata changed)")
    for ex_id in got:
        if ex_id not in wanted:
            grade.problems.append(f"a solution cell has grade_id {ex_id!r}, which the lab does not have (renamed?)")
    runnable = []
    for ex_id in code_ids:
        name = lookup(ex_id).name
        if ex_id in got and not defines(got[ex_id].source, name):
            grade.problems.append(f"exercise {ex_id}'s cell no longer defines {name} (renamed?)")
        elif ex_id in got:
            runnable.append(ex_id)
    for ex_id in text_ids:
        if ex_id in got:
            grade.answers[ex_id] = got[ex_id].source.strip()
    results: dict[str, Any] = {}
    if runnable:
        results = _run_submission(grade, nb, runnable, seed, timeout, profile, cwd_files, lab)
    for ex_id in code_ids:
        ex = lookup(ex_id)
        r = results.get(ex_id)
        if r and r["passed"]:
            grade.points[ex_id] = float(ex.points)
            grade.feedback.append(f"{ex_id} {ex.name}: {ex.points}/{ex.points} passed")
        else:
            why = r["message"] if r else ("not graded: " + (grade.problems[-1] if grade.problems else "no result"))
            grade.feedback.append(f"{ex_id} {ex.name}: 0/{ex.points}\n    " + why.replace("\n", "\n    "))
    if grade.problems and grade.status == "graded":
        grade.status = "graded, with problems"
    return grade


def _run_submission(grade: Grade, nb, ids: Sequence[str], seed: int, timeout: float, profile: str,
                    cwd_files: Sequence[Path], lab: str) -> dict[str, Any]:
    import nbformat

    with tempfile.TemporaryDirectory(prefix="prunebook-grade-") as tmp:
        tmp = Path(tmp)
        work = tmp / lab  # named as the lab's folder, with its modules: the kernel finds checks.py here
        work.mkdir()
        copy_code(cwd_files, work)
        result, executed = tmp / "result.json", tmp / "executed.ipynb"
        nb = copy.deepcopy(nb)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in _tags(c)]
        nb.cells.append(nbformat.v4.new_code_cell(GRADER_CELL.format(ids=list(ids), seed=seed, out=str(result))))
        source = tmp / "submission.ipynb"
        nbformat.write(nb, str(source))
        cmd = [sys.executable, "-m", "prunebook.course", "_execute", str(source), str(work), str(executed), profile,
               str(max(1, int(timeout)))]
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            grade.status = "timed out"
            grade.problems.append(f"ran past the time limit of {timeout:.0f} s (stopped; its exercises get 0)")
            return {}
        took = time.time() - t0
        if executed.is_file():
            done = nbformat.read(str(executed), as_version=4)
            grade.problems += _error_lines(done, _check_cells(done, ids) | {len(done.cells) - 1})
        if not result.is_file():
            grade.status = "did not run"
            grade.problems.append(f"the notebook could not be run to the end: {_why_stopped(log, proc.returncode)}")
            return {}
        grade.feedback.append(f"(ran in {took:.0f} s at profile {profile}, checks with the grading seed)")
        return json.loads(result.read_text())


def _why_stopped(log: str, status: int | None) -> str:
    """The runner's last error line (``SomeError: …``), not a warning the kernel printed after it."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and "warn" not in ln.lower()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", ln)]
    return one_line((errors or lines or [f"exit status {status}"])[-1], 300)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the grading process and the kernel it started (they share a process group of their own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def grade(submissions: Sequence[Path], seed: int, root: Path, lab: str | None = None, out: Path | None = None,
          timeout: float = 600, profile: str = "smoke", jobs: int = 1,
          report: Callable[[str], None] = print) -> list[Grade]:
    """Grade every submission; write ``grades.csv``, ``feedback/<student>.txt`` and ``answers/<question>.md`` under
    ``out`` (default ``runs/course/grades``). One line per submission is passed to ``report``."""
    files = submission_files(submissions)
    if not files:
        raise CourseError(f"no submissions found in {', '.join(map(str, submissions))}")
    lab_name, lab_path = _which_lab(root, lab, files)
    lab_nb = read_notebook(lab_path)
    if (lab_path.parent / CHECKS_FILE).is_file() and re.match(r"\d\d_", lab_path.parent.name):
        use_lab(lab_path.parent)
    out = Path(out) if out is not None else root / "runs" / "course" / "grades"
    cwd_files = lab_code(lab_path.parent)

    def one(path: Path) -> Grade:
        try:
            return grade_one(path, lab_name, lab_nb, seed, timeout, profile, cwd_files)
        except Exception as exc:  # never let one submission stop the others
            g = Grade(student_name(path), path, status="grader error")
            g.problems.append(f"the grader failed on it: {type(exc).__name__}: {one_line(str(exc), 160)}")
            return g

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        grades = list(pool.map(one, files))
    _unique_names(grades)
    ids = [i for i, c in exercise_cells(lab_nb).items() if c.cell_type == "code"]
    write_grades(grades, ids, out, lab_nb)
    for g in grades:
        total = sum(g.points.values())
        line = f"{g.student}: {total:g}/{max_points(ids):g}"
        if g.problems:
            line += " — " + "; ".join(g.problems)
        report(line)
    return grades


def max_points(ids: Sequence[str]) -> float:
    return float(sum(lookup(i).points for i in ids))


def _unique_names(grades: list[Grade]) -> None:
    seen: dict[str, int] = {}
    for g in grades:
        seen[g.student] = seen.get(g.student, 0) + 1
        if seen[g.student] > 1:
            g.student = f"{g.student}-{seen[g.student]}"


def _which_lab(root: Path, lab: str | None, files: Sequence[Path]) -> tuple[str, Path]:
    if lab is not None:
        (name, path), = pick_labs(root, [lab]).items()
        return name, path
    named = {}
    for f in files:
        try:
            named.setdefault(json.loads(f.read_text())["metadata"]["prunebook"]["lab"], []).append(f)
        except Exception:
            continue
    labs = repo_labs(root)
    counts = sorted(((len(v), k) for k, v in named.items() if k in labs), reverse=True)
    if not counts or (len(counts) > 1 and counts[0][0] == counts[1][0]):
        raise CourseError("cannot tell which lab these submissions are for: name it with --lab (e.g. --lab 00)")
    return counts[0][1], labs[counts[0][1]]


def write_grades(grades: Sequence[Grade], ids: Sequence[str], out: Path, lab_nb) -> None:
    """``grades.csv`` (points per exercise, total, status, problems), one feedback file per student, and the
    written answers gathered per question."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *ids, "total", "out_of", "status", "problems"])
        for g in grades:
            writer.writerow([g.student, *(f"{g.points.get(i, 0.0):g}" for i in ids), f"{sum(g.points.values()):g}",
                             f"{max_points(ids):g}", g.status, " | ".join(g.problems)])
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    for g in grades:
        lines = [f"{g.student} ({g.path.name}): {sum(g.points.values()):g} of {max_points(ids):g} points", ""]
        lines += [f"problem: {p}" for p in g.problems] + ([""] if g.problems else [])
        lines += g.feedback
        (feedback / f"{g.student}.txt").write_text("\n".join(lines) + "\n")
    questions = {i: c for i, c in exercise_cells(lab_nb).items() if c.cell_type == "markdown"}
    if questions:
        answers = out / "answers"
        answers.mkdir(exist_ok=True)
        prompts = _question_prompts(lab_nb)
        for q in questions:
            text = [f"# {q}", "", prompts.get(q, ""), ""]
            for g in grades:
                if q in g.answers:
                    text += [f"## {g.student}", "", g.answers[q], ""]
            (answers / f"{q}.md").write_text("\n".join(text))


def _question_prompts(nb) -> dict[str, str]:
    """The Markdown cell just before each written answer: its question."""
    prompts, previous = {}, None
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "markdown" and meta.get("solution") and previous is not None:
            prompts[str(meta["grade_id"])] = previous.source.strip()
        previous = cell
    return prompts


def _main(argv: Sequence[str]) -> int:
    """``python -m prunebook.course _execute NOTEBOOK CWD OUT PROFILE CELL_TIMEOUT``: what ``grade`` runs in its own
    process for each submission."""
    if len(argv) == 6 and argv[0] == "_execute":
        return _execute(Path(argv[1]), Path(argv[2]), Path(argv[3]), argv[4], int(argv[5]))
    print("usage: prunebook course build|grade ... (this module's own entry point is for the grader)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

