"""prunebook.course, the machinery every lab uses: checks and their messages, record_lab, the student copies (course
build) and grading (course grade), tried on the foundations lab. Each lab's own tests are in test_course_NN.py."""

import csv
from pathlib import Path

import nbformat
import pytest
import torch
from labs import ROOT, lab_notebook, lab_path
from prunebook import cli, course, prune

IDS = ["00.1", "00.2", "00.3", "00.4", "00.5", "00.6"]


def lab():
    return lab_notebook("00_pruning_basics")


# ---------------------------------------------------------------- checks


def test_check_names_the_counterexample_and_the_hint():
    def floor_count(weight, sparsity):  # int() where round() is meant
        k = int(sparsity * weight.numel())
        mask = torch.ones(weight.shape)
        if k:
            mask.view(-1)[weight.abs().flatten().argsort()[:k]] = 0
        return mask

    with pytest.raises(AssertionError) as err:
        course.check("00.1", floor_count)
    text = str(err.value)
    assert text.startswith("00.1 (magnitude_mask): magnitude_mask(")
    assert "are wanted" in text and "hint: equation (1)" in text


def test_record_lab_writes_each_check_with_its_seed_and_time(in_series, monkeypatch, capsys):
    import json

    from prunebook import config

    monkeypatch.setattr(course, "CHECKED", {})
    config.resolve({"smoke": {}, "cpu": {}, "paper": {}}, "cpu", verbose=False)
    course.check("00.1", prune.magnitude_mask, seed=3)
    with pytest.raises(AssertionError):
        course.check("00.1", lambda w, s: torch.ones_like(w, dtype=torch.bool), seed=3)
    assert course.record_lab({"00.9": ("a run reproduced", True)}) is None  # nothing for the cell to echo
    record = json.loads((in_series / "results" / "cpu" / "exercises.json").read_text())
    assert [(c["id"], c["kind"], c["verdict"]) for c in record["claims"]] == [
        ("00.1-check", "check", "fails"), ("00.9", "check", "holds")]  # the last check of 00.1 is the one kept
    assert "at seed 3 in" in record["claims"][0]["measured"] and set(record["metrics"]["check_seconds"]) == {"00.1"}


def test_the_claims_report_leaves_lab_records_and_dry_runs_out(tmp_path):
    import json

    from prunebook import report

    for profile, name in (("cpu", "01_a"), ("cpu", "exercises"), ("paper-dry", "01_b")):
        folder = tmp_path / "notebooks" / "99_x" / "results" / profile
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps({"series": "99_x", "notebook": name, "claims": []}))
    assert [r["notebook"] for r in report.read_results(tmp_path)] == ["01_a"]  # no lab record, no dry run


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="00.1"):
        course.check("00.99", lambda: None)
    with pytest.raises(KeyError, match="no lab 99.*00_pruning_basics"):
        course.check("99.9", lambda: None)


def test_a_labs_checks_live_in_its_folder():
    checks = course.lab_checks("00")
    assert Path(checks.__file__) == lab_path("00_pruning_basics").parent / "checks.py"
    assert course.lookup("00.1").run.__module__ == checks.__name__
    assert not hasattr(course, "pitfalls_experiment")  # nothing of one lab in the shared package


def test_a_student_error_becomes_a_counterexample():
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        course.check("00.6", lambda conv, h, w: 1 / 0)


# ---------------------------------------------------------------- student copies


def test_stub_source_keeps_the_code_around_the_markers():
    source = "def f(x):\n    \"\"\"doc\"\"\"\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\ny = 2"
    assert course.stub_source(source) == ("def f(x):\n    \"\"\"doc\"\"\"\n    # YOUR CODE HERE\n"
                                          "    raise NotImplementedError()\n\ny = 2")
    assert course.stub_source("answer = 42") == "# YOUR CODE HERE\nraise NotImplementedError()"
    with pytest.raises(course.CourseError, match="without"):
        course.stub_source("### BEGIN SOLUTION\nx = 1")


def test_build_is_deterministic_and_writes_only_the_handout(tmp_path, capsys):
    assert cli.main(["course", "build", "--series", "00", "--out", str(tmp_path / "a")]) == 0
    assert "student copy" in capsys.readouterr().out
    course.build(ROOT, ["00_pruning_basics"], tmp_path / "b")
    a = (tmp_path / "a" / "00_pruning_basics" / "exercises.ipynb").read_bytes()
    assert a == (tmp_path / "b" / "00_pruning_basics" / "exercises.ipynb").read_bytes()
    nbformat.validate(nbformat.reads(a.decode(), as_version=4))
    assert cli.main(["course", "build", "--series", "nope", "--out", str(tmp_path / "c")]) == 2
    assert "no lab 'nope'" in capsys.readouterr().err


def test_a_handout_carries_the_series_code_it_imports(tmp_path):
    course.build(ROOT, ["04_vtrans"], tmp_path)               # 04's method is a package, not one module
    folder = tmp_path / "04_vtrans"
    assert (folder / "checks.py").is_file() and (folder / "vtrans" / "__init__.py").is_file()
    assert not list(folder.rglob("__pycache__"))


# ---------------------------------------------------------------- grading


def _handout() -> nbformat.NotebookNode:
    return course.student_copy(lab())


def _filled(replace: dict | None = None, extra: str | None = None, minimal: bool = False):
    """The handout with the lab's solutions pasted back (the source of ``replace``'s ids swapped for its value);
    ``minimal``: only the parameters, set-up, exercise and check cells (a student may delete the rest), to run fast."""
    nb = _handout()
    if minimal:
        nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader") or "parameters" in c.metadata.get("tags", [])
                    or "CONFIGS = " in c.source]
    sources = {i: c.source for i, c in course.exercise_cells(lab()).items()}
    sources.update(replace or {})
    for i, cell in course.exercise_cells(nb).items():
        cell.source = sources[i]
    if extra:
        nb.cells.insert(3, nbformat.v4.new_code_cell(extra))
    return nb


WRONG_00_1 = '''
def magnitude_mask(weight, sparsity):
    k = round(sparsity * weight.numel())
    if k == 0:
        return torch.ones(weight.shape)
    return (weight.abs() > weight.abs().flatten().kthvalue(k).values).float()
'''

WRONG_00_5 = '''
def prune_channels(conv, bn, next_conv, ratio):
    n_keep = prune.channels_to_keep(conv.out_channels, ratio)
    keep = torch.topk(conv.weight.detach().abs().sum(dim=(1, 2, 3)), n_keep).indices.sort().values
    new = nn.Conv2d(conv.in_channels, n_keep, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    nxt = nn.Conv2d(n_keep, next_conv.out_channels, next_conv.kernel_size, next_conv.stride, next_conv.padding)
    with torch.no_grad():
        new.weight.copy_(conv.weight[keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[keep])
        nxt.weight.copy_(next_conv.weight[:, keep])
        nxt.bias.copy_(next_conv.bias)
    return new, bn, nxt  # the BatchNorm keeps its old width
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    write = lambda name, nb: nbformat.write(nb, str(folder / name))
    write("alice.ipynb", _filled({"00.q1": "The big linear layer is flat; the convs drop first."}))
    write("bob.ipynb", _filled({"00.1": WRONG_00_1, "00.5": WRONG_00_5}))
    write("carol.ipynb", _filled(extra="x = 1 / 0", minimal=True))
    (folder / "dave.ipynb").write_text("this is not a notebook")
    nb = _filled(minimal=True)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "00.3"]
    write("erin.ipynb", nb)
    nb = _filled()
    nb.metadata["prunebook"]["lab"] = "07_rethinking"
    write("frank.ipynb", nb)
    nb = _filled({"00.6": course.exercise_cells(lab())["00.6"].source.replace("def conv_cost(", "def conv_costs(")},
                 minimal=True)
    write("gina.ipynb", nb)
    out = tmp_path_factory.mktemp("grades")
    lines: list[str] = []
    grades = course.grade([folder], seed=2024, root=ROOT, lab="00", out=out, timeout=300, jobs=2,
                          report=lines.append)
    with open(out / "grades.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    return {"grades": grades, "rows": rows, "lines": lines, "out": out}


def _points(row) -> dict[str, float]:
    return {i: float(row[i]) for i in IDS}


def test_grade_gives_full_points_to_a_correct_submission(graded):
    row = graded["rows"]["alice"]
    assert _points(row) == {i: course.lookup(i).points for i in IDS}
    assert row["total"] == row["out_of"] == "13" and row["status"] == "graded" and row["problems"] == ""
    feedback = (graded["out"] / "feedback" / "alice.txt").read_text()
    assert "13 of 13 points" in feedback and "00.5 prune_channels: 3/3 passed" in feedback


def test_grade_takes_the_points_of_wrong_answers_with_the_counterexample(graded):
    row = graded["rows"]["bob"]
    assert _points(row) == {"00.1": 0, "00.2": 2, "00.3": 2, "00.4": 2, "00.5": 0, "00.6": 2}
    feedback = (graded["out"] / "feedback" / "bob.txt").read_text()
    assert "ties at the threshold" in feedback and "BatchNorm must be sliced with its conv" in feedback


def test_bad_submissions_get_one_line_each_and_do_not_stop_the_others(graded):
    rows, lines = graded["rows"], graded["lines"]
    assert len(rows) == 7 and len(lines) == 7
    assert rows["carol"]["total"] == "13" and "raised ZeroDivisionError" in rows["carol"]["problems"]
    assert rows["dave"]["status"] == "not a notebook" and rows["dave"]["total"] == "0"
    assert "exercise 00.3's cell is missing" in rows["erin"]["problems"]
    assert float(rows["erin"]["00.3"]) == 0 and float(rows["erin"]["00.1"]) == 2
    assert rows["frank"]["status"] == "other lab" and "'07_rethinking'" in rows["frank"]["problems"]
    assert "no longer defines conv_cost" in rows["gina"]["problems"] and float(rows["gina"]["00.6"]) == 0
    assert float(rows["gina"]["00.5"]) == 3
    for name in ("carol", "dave", "erin", "frank", "gina"):
        assert sum(line.startswith(f"{name}:") for line in lines) == 1


def test_written_answers_are_gathered_per_question(graded):
    text = (graded["out"] / "answers" / "00.q1.md").read_text()
    assert text.startswith("# 00.q1") and "Question 00.q1" in text
    assert "## alice\n\nThe big linear layer is flat" in text
    assert "## bob\n\n" + course.exercise_cells(lab())["00.q1"].source.strip()[:40] in text


def test_grade_stops_a_submission_past_its_time_limit(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nb = _filled(extra="import time\ntime.sleep(120)", minimal=True)
    nbformat.write(nb, str(folder / "slow.ipynb"))
    code = cli.main(["course", "grade", str(folder), "--seed", "1", "--timeout", "5", "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "slow: 0/13 — ran past the time limit of 5 s" in out
    row = next(csv.DictReader(open(tmp_path / "out" / "grades.csv")))
    assert row["status"] == "timed out"
    assert cli.main(["course", "grade", str(tmp_path / "missing"), "--seed", "1"]) == 2


def test_grade_needs_a_seed():
    with pytest.raises(SystemExit):
        cli.main(["course", "grade", "x.ipynb"])


def test_a_predictions_exercise_registered_from_two_labs_is_refused(tmp_path):
    def experiment():
        """What the run measures.

        Goal: a goal

        Hint: notebook 1 explains
        it
        """
        return {}

    course.predictions_exercise("99.1", experiment)
    try:
        ex = course.lookup("99.1")
        assert (ex.goal, ex.hint) == ("a goal", course.PREDICT + "notebook 1 explains it")
        namespace = {}
        exec(compile("def experiment():\n    return {}\n", str(tmp_path / "checks.py"), "exec"), namespace)
        with pytest.raises(ValueError, match="registered twice"):
            course.predictions_exercise("99.1", namespace["experiment"])
    finally:
        course.REGISTRY.pop("99.1", None)
