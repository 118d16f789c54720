"""What every course lab's tests share: the lab notebook, the names its solved exercise cells define, and the
assertions each lab must pass (marked for nbgrader, stubs that raise, a clean handout, solutions that pass their
checks, checks that reject wrong answers, predictions that match the run).

A lab is named by its series folder (``"02_grokking"``); its exercises by ``NN.k``. Not a test module: pytest collects
nothing here. Each ``tests/test_course_NN.py`` states its lab's facts in a :class:`Lab`, its plausible wrong answers
and its predictions, and subclasses :class:`LabTests` as ``TestLab``, which runs every assertion below on that lab."""

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from prunebook import course

ROOT = Path(__file__).resolve().parents[1]


def lab_path(series: str) -> Path:
    """The solved lab of ``series`` (``notebooks/<series>/exercises.ipynb``)."""
    return ROOT / "notebooks" / series / course.LAB_FILE


def lab_notebook(series: str) -> nbformat.NotebookNode:
    """The solved lab of ``series``, read fresh (tests may change their copy)."""
    return nbformat.read(str(lab_path(series)), as_version=4)


def namespace(nb, preamble: str) -> dict:
    """The names the exercise cells of ``nb`` define, run in order (as the notebook runs them) after ``preamble``."""
    ns: dict = {}
    exec(preamble, ns)
    for cell in course.exercise_cells(nb).values():
        if cell.cell_type == "code":
            exec(cell.source, ns)
    return ns


def solved(series: str, preamble: str) -> dict:
    """The names the solved lab of ``series`` defines; its folder goes on ``sys.path`` first (its checks and the
    series module the preamble imports live there)."""
    course.lab_checks(series[:2])
    return namespace(lab_notebook(series), preamble)


def mistakes(wrong: dict) -> list[tuple[str, str]]:
    """``(exercise id, mistake)`` for every wrong answer of ``wrong`` (id → mistake → answer): parameters of a test."""
    return [(ex_id, mistake) for ex_id, answers in wrong.items() for mistake in answers]


def code_ids(nb) -> list[str]:
    """The ids of the code exercises of ``nb``, in notebook order."""
    return [i for i, c in course.exercise_cells(nb).items() if c.cell_type == "code"]


def _tagged(cell, tag: str) -> bool:
    return tag in cell.metadata.get("tags", [])


def _decided_in(ex: course.Exercise) -> str:
    """The module whose code decides exercise ``ex``: its check's; for a "predict, then run" exercise, whose check
    is course.predictions_exercise's wrapper, the module of the experiment the wrapper runs."""
    return inspect.unwrap(ex.run).__module__


def assert_marked_for_nbgrader(series: str, ids: list[str], written_ids: list[str]) -> None:
    """The lab of ``series`` has exactly the code exercises ``ids`` and written questions ``written_ids``, each
    between nbgrader's markers, defining its name and followed somewhere by its check; one parameters cell; some
    instructor cells; no ``TIME_`` placeholder; the last code cell records the run; and its checks live beside it."""
    nb = lab_notebook(series)
    cells = course.exercise_cells(nb)
    assert code_ids(nb) == ids
    assert [i for i, c in cells.items() if c.cell_type == "markdown"] == written_ids
    assert nb.metadata["prunebook"]["lab"] == series
    assert sum(_tagged(c, "parameters") for c in nb.cells) == 1
    assert any(_tagged(c, "instructor") for c in nb.cells)
    for ex_id in ids:
        assert course.BEGIN in cells[ex_id].source and course.END in cells[ex_id].source, ex_id
        assert course.defines(cells[ex_id].source, course.lookup(ex_id).name)
        assert any(f'course.check("{ex_id}"' in c.source for c in nb.cells), f"no check cell for {ex_id}"
    checks = course.lab_checks(series[:2])
    assert Path(checks.__file__) == lab_path(series).parent / course.CHECKS_FILE
    assert all(_decided_in(course.lookup(i)) == checks.__name__ for i in ids)
    assert "TIME_" not in "".join(c.source for c in nb.cells)  # every exercise states its measured time
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "course.record_lab(" in code[-1].source  # the last code cell records the run


def assert_stubs_fail(series: str, preamble: str, ids: list[str]) -> None:
    """In the handout of ``series`` the code exercises are still ``ids``, and each stub, run after ``preamble``,
    fails its check with ``NotImplementedError`` (a "predictions" value raises where the value is made)."""
    course.lab_checks(series[:2])  # the lab's folder on sys.path, for the preamble's imports
    ns: dict = {}
    exec(preamble, ns)
    handout = course.student_copy(lab_notebook(series))
    assert code_ids(handout) == ids
    stubs = course.exercise_cells(handout)
    for ex_id, cell in stubs.items():
        if cell.cell_type != "code":
            continue
        if course.lookup(ex_id).name == "predictions":
            with pytest.raises(NotImplementedError):
                exec(cell.source, ns)
            continue
        exec(cell.source, ns)
        with pytest.raises(NotImplementedError):
            course.check(ex_id, ns[course.lookup(ex_id).name], quiet=True)


def _solution_lines(nb) -> set[str]:
    """Every line written between the markers (and every written answer), as the student must not see them."""
    lines = set()
    for cell in course.exercise_cells(nb).values():
        if cell.cell_type == "markdown":
            lines |= {ln.strip() for ln in cell.source.splitlines() if ln.strip()}
            continue
        inside = False
        for ln in cell.source.splitlines():
            if course.BEGIN in ln:
                inside = True
            elif course.END in ln:
                inside = False
            elif inside and ln.strip():
                lines.add(ln.strip())
    return lines


def _without_solutions(nb):
    """One Markdown cell holding every line of the lab outside its solutions (lines a handout may show)."""
    sources = [c.source for c in nb.cells if not c.metadata.get("nbgrader", {}).get("solution")]
    sources += [course.stub_source(c.source) for c in course.exercise_cells(nb).values() if c.cell_type == "code"]
    out = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("\n".join(sources))])
    out.metadata = nb.metadata
    return out


def assert_handout_clean(series: str) -> None:
    """The handout of ``series`` shows no line of a solution or written answer, no marker, no instructor cell, no
    output of a solution or reveal cell, no execution count and no run metadata; its code exercises are stubs, its
    written questions blank, and it keeps the one parameters cell (the lab has instructor cells and a run's outputs
    in its reveal cells, so there is something to drop)."""
    nb = lab_notebook(series)
    assert any(_tagged(c, "instructor") for c in nb.cells)
    assert any(c.get("outputs") for c in nb.cells if _tagged(c, "reveal"))
    handout = course.student_copy(nb)
    text = "\n".join(c.source for c in handout.cells)
    shown = {ln.strip() for ln in text.splitlines()}
    public = {ln.strip() for ln in course.student_copy(_without_solutions(nb)).cells[0].source.splitlines()}
    leaked = [ln for ln in _solution_lines(nb) - public if ln in shown]
    assert not leaked, leaked
    assert course.BEGIN not in text and course.END not in text
    assert "Model answer" not in text and "Instructor notes" not in text
    assert not any(_tagged(c, "instructor") for c in handout.cells)
    assert len(handout.cells) == len(nb.cells) - sum(_tagged(c, "instructor") for c in nb.cells)
    for cell in handout.cells:
        if cell.cell_type != "code":
            continue
        if cell.metadata.get("nbgrader", {}).get("solution") or _tagged(cell, "reveal"):
            assert cell.outputs == [], cell.source
        assert cell.execution_count is None
    stubs = course.exercise_cells(handout)
    assert all("raise NotImplementedError()" in c.source for c in stubs.values() if c.cell_type == "code")
    assert all(c.source == course.TEXT_STUB for c in stubs.values() if c.cell_type == "markdown")
    assert any(c.cell_type == "markdown" for c in stubs.values())
    assert sum(_tagged(c, "parameters") for c in handout.cells) == 1
    assert "papermill" not in handout.metadata


def assert_solution_passes(ns: dict, ex_id: str, seeds: list[int], capsys) -> None:
    """The solved lab's answer to ``ex_id`` (from ``ns``) passes its check at every seed of ``seeds``, and says so."""
    for seed in seeds:
        course.check(ex_id, ns[course.lookup(ex_id).name], seed=seed)
        assert f"{ex_id} passed" in capsys.readouterr().out


def assert_rejects(ex_id: str, wrong_fn) -> None:
    """The check of ``ex_id`` rejects ``wrong_fn`` (a wrong function or value) with an error that names ``ex_id``."""
    with pytest.raises(AssertionError, match=re.escape(ex_id)):
        course.check(ex_id, wrong_fn, quiet=True)


def assert_predicted(ex_id: str, predicted: dict, measured: dict, ns: dict) -> None:
    """The "predict, then run" exercise ``ex_id``: the run ``measured`` what the lab predicts (``predicted``), the
    solved lab's answer in ``ns`` says the same, and the check passes it."""
    assert measured == predicted
    assert ns[course.lookup(ex_id).name] == predicted
    course.check(ex_id, dict(predicted), quiet=True)


@dataclass(frozen=True)
class Lab:
    """What a lab's tests hold it to."""

    series: str  # its folder under notebooks/, as its metadata names it: "02_grokking"
    ids: list[str]  # its code exercises, in notebook order
    written_ids: list[str]  # its written questions
    preamble: str  # the imports its exercise cells run after
    seeds: dict[str, list[int]]  # exercise id -> the seeds its solution is checked at
    experiment: str  # the name of the "predict, then run" experiment in its checks.py


class LabTests:
    """The tests every lab passes. A lab's test file subclasses this as ``TestLab`` and sets ``lab`` (a :class:`Lab`),
    ``wrong`` (exercise id -> mistake -> a plausible wrong answer) and ``predicted`` (what its experiment measures)."""

    lab: Lab
    wrong: dict[str, dict]
    predicted: dict

    def pytest_generate_tests(self, metafunc):
        """One test per exercise and seed for the solutions, one per plausible wrong answer for the checks."""
        if "seed" in metafunc.fixturenames:
            metafunc.parametrize("ex_id, seed", [(i, s) for i, seeds in self.lab.seeds.items() for s in seeds])
        if "mistake" in metafunc.fixturenames:
            metafunc.parametrize("ex_id, mistake", mistakes(self.wrong))

    @pytest.fixture(scope="class")
    @classmethod
    def solved(cls):
        """The names the solved lab defines, made once for the class."""
        return solved(cls.lab.series, cls.lab.preamble)

    def measured(self) -> dict:
        """What the lab's "predict, then run" experiment measures, run now."""
        return getattr(course.lab_checks(self.lab.series[:2]), self.lab.experiment)()

    def test_the_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it(self):
        assert_marked_for_nbgrader(self.lab.series, self.lab.ids, self.lab.written_ids)

    def test_every_solution_passes_its_check(self, solved, ex_id, seed, capsys):
        assert_solution_passes(solved, ex_id, [seed], capsys)

    def test_every_stub_fails_with_not_implemented(self):
        assert_stubs_fail(self.lab.series, self.lab.preamble, self.lab.ids)

    def test_the_handout_has_no_solutions_no_instructor_cells_and_no_solution_outputs(self):
        assert_handout_clean(self.lab.series)

    def test_each_check_rejects_plausible_wrong_answers(self, solved, ex_id, mistake):
        assert_rejects(ex_id, self.wrong[ex_id][mistake])

    def test_the_experiment_is_what_the_lab_predicts(self, solved):
        predictions = next(i for i in self.lab.ids if course.lookup(i).name == "predictions")
        assert_predicted(predictions, self.predicted, self.measured(), solved)
