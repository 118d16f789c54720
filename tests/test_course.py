"""prunebook.course: the foundations lab's checks, the student copies (course build) and grading (course grade)."""

import csv
import re
from pathlib import Path

import nbformat
import pytest
import torch
from prunebook import cli, course, prune
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "notebooks" / "00_pruning_basics" / "exercises.ipynb"
IDS = ["00.1", "00.2", "00.3", "00.4", "00.5", "00.6"]
PREAMBLE = "import torch\nfrom torch import nn\nfrom prunebook import course, prune\n"
LAB_01 = ROOT / "notebooks" / "01_ap" / "exercises.ipynb"
IDS_01 = ["01.1", "01.2", "01.3", "01.4", "01.5"]
PREAMBLE_01 = "import torch\nfrom torch import nn\nimport ap\nfrom prunebook import course, prune\n"
LAB_05 = ROOT / "notebooks" / "05_dependencyvit" / "exercises.ipynb"
IDS_05 = ["05.1", "05.2", "05.3", "05.4", "05.5"]
PREAMBLE_05 = "import torch\nimport dependencyvit as dv\nfrom prunebook import course\n"
LAB_04 = ROOT / "notebooks" / "04_vtrans" / "exercises.ipynb"
IDS_04 = ["04.1", "04.2", "04.3", "04.4", "04.5"]
PREAMBLE_04 = "import torch\nimport vtrans as V\nfrom prunebook import course\n"


def lab():
    return nbformat.read(str(LAB), as_version=4)


def namespace(nb, preamble: str = PREAMBLE) -> dict:
    """The names the exercise cells of ``nb`` define, run in order (as the notebook runs them)."""
    ns: dict = {}
    exec(preamble, ns)
    for cell in course.exercise_cells(nb).values():
        if cell.cell_type == "code":
            exec(cell.source, ns)
    return ns


@pytest.fixture(scope="module")
def solved():
    return namespace(lab())


# ---------------------------------------------------------------- the lab and its checks


@pytest.mark.parametrize("ex_id", IDS)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_solution_passes_its_check(solved, ex_id, seed, capsys):
    course.check(ex_id, solved[course.lookup(ex_id).name], seed=seed)
    assert f"{ex_id} passed" in capsys.readouterr().out


def test_every_stub_fails_with_not_implemented():
    course.lab_checks("05")  # put the labs' folders (dependencyvit.py, vtrans/) on sys.path for their preambles
    course.lab_checks("04")
    for nb, preamble in ((lab(), PREAMBLE), (nbformat.read(str(LAB_01), as_version=4), PREAMBLE_01),
                         (nbformat.read(str(LAB_05), as_version=4), PREAMBLE_05),
                         (nbformat.read(str(LAB_04), as_version=4), PREAMBLE_04)):
        ns: dict = {}
        exec(preamble, ns)
        for ex_id, cell in course.exercise_cells(course.student_copy(nb)).items():
            if cell.cell_type != "code":
                continue
            if course.lookup(ex_id).name == "predictions":  # a value: the stub raises where the value is made
                with pytest.raises(NotImplementedError):
                    exec(cell.source, ns)
                continue
            exec(cell.source, ns)
            with pytest.raises(NotImplementedError):
                course.check(ex_id, ns[course.lookup(ex_id).name])


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


def test_record_lab_writes_each_check_with_its_seed_and_time(solved, in_series, monkeypatch, capsys):
    import json

    from prunebook import config

    monkeypatch.setattr(course, "CHECKED", {})
    config.resolve({"smoke": {}, "cpu": {}, "paper": {}}, "cpu", verbose=False)
    course.check("00.1", solved["magnitude_mask"], seed=3)
    with pytest.raises(AssertionError):
        course.check("00.1", lambda w, s: torch.ones_like(w, dtype=torch.bool), seed=3)
    path = course.record_lab({"00.9": ("a run reproduced", True)})
    record = json.loads(path.read_text())
    assert path == in_series / "results" / "cpu" / "exercises.json"
    assert [(c["id"], c["kind"], c["verdict"]) for c in record["claims"]] == [
        ("00.1-check", "check", "fails"), ("00.9", "check", "holds")]  # the last check of 00.1 is the one kept
    assert "at seed 3 in" in record["claims"][0]["measured"] and set(record["metrics"]["check_seconds"]) == {"00.1"}


def test_the_claims_report_leaves_lab_records_out(tmp_path):
    import json

    from prunebook import report

    folder = tmp_path / "notebooks" / "99_x" / "results" / "cpu"
    folder.mkdir(parents=True)
    for name in ("01_a", "exercises"):
        (folder / f"{name}.json").write_text(json.dumps({"series": "99_x", "notebook": name, "claims": []}))
    assert [r["notebook"] for r in report.read_results(tmp_path)] == ["01_a"]


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="00.1"):
        course.check("00.99", lambda: None)
    with pytest.raises(KeyError, match="no lab 99.*00_pruning_basics"):
        course.check("99.9", lambda: None)


def test_a_labs_checks_live_in_its_folder():
    checks = course.lab_checks("00")
    assert Path(checks.__file__) == LAB.parent / "checks.py"
    assert course.lookup("00.1").run.__module__ == checks.__name__
    assert not hasattr(course, "pitfalls_experiment")  # nothing of one lab in the shared package


def test_a_student_error_becomes_a_counterexample():
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        course.check("00.6", lambda conv, h, w: 1 / 0)


# Wrong implementations a student plausibly writes: each check must reject them.


def _kthvalue_mask(strict: bool):
    def mask(weight, sparsity):
        k = round(sparsity * weight.numel())
        if k == 0:
            return torch.ones(weight.shape)
        threshold = weight.abs().flatten().kthvalue(k).values
        return (weight.abs() > threshold if strict else weight.abs() >= threshold).float()
    return mask


def _floor_mask(weight, sparsity):
    k = int(sparsity * weight.numel())
    mask = torch.ones(weight.shape)
    if k:
        mask.view(-1)[torch.topk(weight.abs().flatten(), k, largest=False).indices] = 0
    return mask


def _layerwise_masks(model, sparsity):
    return {f"{n}.weight": prune.magnitude_mask(m.weight, sparsity) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _global_masks_with_biases(model, sparsity):
    params = {k: p.detach() for k, p in model.named_parameters() if p.dim() > 1 or k.endswith(".bias")}
    flat = prune.magnitude_mask(torch.cat([p.flatten() for p in params.values()]), sparsity)
    masks = dict(zip(params, flat.split([p.numel() for p in params.values()])))
    return {k: m.view_as(params[k]) for k, m in masks.items()}


def _global_masks_floor(model, sparsity):
    weights = {f"{n}.weight": m.weight.detach() for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))}
    flat = _floor_mask(torch.cat([w.flatten() for w in weights.values()]), sparsity)
    return {k: m.view_as(w) for (k, w), m in zip(weights.items(), flat.split([w.numel() for w in weights.values()]))}


@torch.no_grad()
def _scan_without_restoring(model, evaluate, sparsities):
    out = {}
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            dense = layer.weight.clone()
            out[name] = []
            for s in sparsities:
                layer.weight.copy_(dense * prune.magnitude_mask(dense, s))
                out[name].append(evaluate(model))
    return out


@torch.no_grad()
def _scan_all_layers_at_once(model, evaluate, sparsities):  # every layer pruned together, one curve for all
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    dense = [m.weight.clone() for m in layers]
    scores = []
    for s in sparsities:
        for m, w in zip(layers, dense):
            m.weight.copy_(w * prune.magnitude_mask(w, s))
        scores.append(evaluate(model))
    for m, w in zip(layers, dense):
        m.weight.copy_(w)
    return {n: list(scores) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _channels(keep_count, bn_sliced=True, smallest=False, next_sliced=True):
    def prune_channels(conv, bn, next_conv, ratio):
        n_keep = keep_count(conv.out_channels, ratio)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        keep = torch.topk(norms, n_keep, largest=not smallest).indices.sort().values
        c = nn.Conv2d(conv.in_channels, n_keep, conv.kernel_size, padding=conv.padding, bias=conv.bias is not None)
        c.weight.data = conv.weight.data[keep].clone()
        if conv.bias is not None:
            c.bias.data = conv.bias.data[keep].clone()
        b = bn
        if bn_sliced:
            b = nn.BatchNorm2d(n_keep)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(b, name).data = getattr(bn, name).data[keep].clone()
            b.eval()
        nxt = next_conv
        if next_sliced:
            nxt = nn.Conv2d(n_keep, next_conv.out_channels, next_conv.kernel_size, padding=next_conv.padding)
            nxt.weight.data = next_conv.weight.data[:, keep].clone()
            nxt.bias.data = next_conv.bias.data.clone()
        return c.eval(), b, nxt.eval()
    return prune_channels


ROUNDED = prune.channels_to_keep
FLOORED = lambda n, r: max(1, int(n * (1 - r)))


def _conv_cost(stride=True, groups=True, dilation=True):
    def conv_cost(conv, height, width):
        kh, kw = conv.kernel_size
        g = conv.groups if groups else 1
        per = conv.in_channels // g * kh * kw
        params = conv.out_channels * per + (conv.out_channels if conv.bias is not None else 0)
        hw = [(n + 2 * p - (d if dilation else 1) * (k - 1) - 1) // (s if stride else 1) + 1
              for n, k, s, p, d in zip((height, width), conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
        return params, hw[0] * hw[1] * conv.out_channels * per
    return conv_cost


PREDICTED = {"parameters_after_l1_unstructured": 72, "zeros_in_state_dict_weight_orig": 0,
             "zeros_after_prune_remove": 32, "zeros_after_one_step_by_hand": 0, "zeros_with_kthvalue_threshold": 4,
             "zeros_with_topk": 3, "channels_kept_prune_30pct_of_64_rounded": 45,
             "channels_kept_prune_30pct_of_64_floored": 44}

WRONG = {
    "00.1": {"|w| > kthvalue (ties)": _kthvalue_mask(True), "|w| >= kthvalue": _kthvalue_mask(False),
             "int() for round()": _floor_mask},
    "00.2": {"the mask counted as a parameter": {**PREDICTED, "parameters_after_l1_unstructured": 136},
             "the state dict seen as sparse": {**PREDICTED, "zeros_in_state_dict_weight_orig": 32},
             "ties pruned exactly": {**PREDICTED, "zeros_with_kthvalue_threshold": 3}},
    "00.3": {"per-layer instead of global ranking": _layerwise_masks, "biases pruned too": _global_masks_with_biases,
             "off by one in the number pruned": _global_masks_floor},
    "00.4": {"a layer not restored": _scan_without_restoring, "all layers pruned at once": _scan_all_layers_at_once},
    "00.5": {"BatchNorm not sliced": _channels(ROUNDED, bn_sliced=False),
             "the smallest filters kept": _channels(ROUNDED, smallest=True),
             "a floor for the channel count": _channels(FLOORED),
             "next conv not sliced": _channels(ROUNDED, next_sliced=False)},
    "00.6": {"stride left out": _conv_cost(stride=False), "groups left out": _conv_cost(groups=False),
             "dilation left out": _conv_cost(dilation=False)},
}


@pytest.mark.parametrize("ex_id, mistake", [(e, m) for e, ms in WRONG.items() for m in ms])
def test_each_check_rejects_plausible_wrong_answers(ex_id, mistake):
    with pytest.raises(AssertionError, match=re.escape(ex_id)):
        course.check(ex_id, WRONG[ex_id][mistake], quiet=True)


def test_the_right_predictions_pass():
    course.check("00.2", dict(PREDICTED), quiet=True)


# ---------------------------------------------------------------- student copies


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


def test_student_copy_has_no_solutions_no_instructor_cells_and_no_solution_outputs():
    nb = lab()
    assert any("instructor" in c.metadata.get("tags", []) for c in nb.cells)  # the lab does have some
    assert any(c.get("outputs") for c in nb.cells if "reveal" in c.metadata.get("tags", []))  # a run's outputs
    handout = course.student_copy(nb)
    text = "\n".join(c.source for c in handout.cells)
    shown = {ln.strip() for ln in text.splitlines()}
    public = {ln.strip() for ln in course.student_copy(_without_solutions(nb)).cells[0].source.splitlines()}
    leaked = [ln for ln in _solution_lines(nb) - public if ln in shown]
    assert not leaked, leaked
    assert course.BEGIN not in text and course.END not in text
    assert not any("instructor" in c.metadata.get("tags", []) for c in handout.cells)
    assert len(handout.cells) == len(nb.cells) - sum("instructor" in c.metadata.get("tags", []) for c in nb.cells)
    for cell in handout.cells:
        if cell.cell_type != "code":
            continue
        if cell.metadata.get("nbgrader", {}).get("solution") or "reveal" in cell.metadata.get("tags", []):
            assert cell.outputs == [], cell.source
        assert cell.execution_count is None
    stubs = course.exercise_cells(handout)
    assert all("raise NotImplementedError()" in c.source for c in stubs.values() if c.cell_type == "code")
    assert stubs["00.q1"].source == course.TEXT_STUB
    assert sum("parameters" in c.metadata.get("tags", []) for c in handout.cells) == 1
    assert "papermill" not in handout.metadata


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


def test_the_pitfalls_experiment_is_what_the_lab_predicts():
    measured = course.lab_checks("00").pitfalls_experiment()
    assert measured == PREDICTED
    assert all(type(v) is int for v in measured.values())


# ---------------------------------------------------------------- the 01_ap lab: checks against ap.py



def lab_01():
    return nbformat.read(str(LAB_01), as_version=4)


@pytest.fixture(scope="module")
def solved_01():
    return namespace(lab_01(), PREAMBLE_01)


@pytest.mark.parametrize("path, ids, name", [(LAB, IDS, "00_pruning_basics"), (LAB_01, IDS_01, "01_ap")])
def test_each_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it(path, ids, name):
    nb = nbformat.read(str(path), as_version=4)
    cells = course.exercise_cells(nb)
    assert [i for i, c in cells.items() if c.cell_type == "code"] == ids
    assert [i for i, c in cells.items() if c.cell_type == "markdown"] == [f"{name[:2]}.q1"]
    assert nb.metadata["prunebook"]["lab"] == name
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    for ex_id in ids:
        assert course.BEGIN in cells[ex_id].source and course.END in cells[ex_id].source, ex_id
        assert course.defines(cells[ex_id].source, course.lookup(ex_id).name)
        assert any(f'course.check("{ex_id}"' in c.source for c in nb.cells), f"no check cell for {ex_id}"
    checks = course.lab_checks(name[:2])
    assert Path(checks.__file__) == path.parent / "checks.py"
    assert all(course.lookup(i).run.__module__ == checks.__name__ for i in ids)
    assert "TIME_" not in "".join(c.source for c in nb.cells)  # every exercise states its measured time


@pytest.mark.parametrize("ex_id, seeds", [("01.1", [0, 7]), ("01.2", [0, 7]), ("01.3", [0, 7]), ("01.4", [3]),
                                          ("01.5", [0])])
def test_every_01_solution_passes_its_check(solved_01, ex_id, seeds, capsys):
    for seed in seeds:
        course.check(ex_id, solved_01[course.lookup(ex_id).name], seed=seed)
        assert f"{ex_id} passed" in capsys.readouterr().out


def _dnr(per_layer_mean=False, any_zero=False, train_mode=False):
    def dead_neuron_rate(model, x):
        outs = []
        hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach().clone()))
                 for m in model.modules() if isinstance(m, nn.ReLU)]
        was = model.training
        model.train(train_mode)
        with torch.no_grad():
            model(x)
        model.train(was)
        for h in hooks:
            h.remove()
        rates = [float((o == 0).float().mean()) for o in outs]
        element = sum(rates) / len(rates) if per_layer_mean else \
            sum(int((o == 0).sum()) for o in outs) / sum(o.numel() for o in outs)
        dead = [((o.flatten(2) == 0).any(2) if any_zero else (o.flatten(2) == 0).all(2)) if o.ndim > 2 else o == 0
                for o in outs]
        return element, sum(int(d.sum()) for d in dead) / sum(d.numel() for d in dead)
    return dead_neuron_rate


def _choose(candidates=lambda w: w < 0, score=lambda w, w0: (w - w0).abs(), largest=False, per_layer=False,
            stable=True):
    def ap_choose(weights, start, k):
        w, w0 = torch.cat([t.flatten() for t in weights]), torch.cat([t.flatten() for t in start])
        s = torch.where(candidates(w), score(w, w0), torch.full_like(w, float("inf") if not largest else -1.0))
        chosen = torch.zeros(w.numel(), dtype=torch.bool)
        if per_layer:  # k shared out over the tensors by their candidates, each ranked on its own
            sizes, c = [t.numel() for t in weights], candidates(w)
            counts = [int(x.sum()) for x in c.split(sizes)]
            ks = [round(k * n / max(sum(counts), 1)) for n in counts]
            ks[-1] = k - sum(ks[:-1])
            offset = 0
            for size, kk, part in zip(sizes, ks, s.split(sizes)):
                chosen[offset + torch.argsort(part, stable=True)[:max(kk, 0)]] = True
                offset += size
        elif stable:
            chosen[torch.argsort(s, stable=True, descending=largest)[:k]] = True
        else:
            chosen[torch.topk(s, k, largest=largest).indices] = True
        return [c.view_as(t) for c, t in zip(chosen.split([t.numel() for t in weights]), weights)]
    return ap_choose


def _imp_round(count="total", rewind="masked", per_layer=False):
    def imp_round(weights, masks, init, r, rate):
        eff = [w * m for w, m in zip(weights, masks)]
        n = sum(w.numel() for w in weights)
        if count == "total":
            k = round((1 - (1 - rate) ** (r + 1)) * n)
        elif count == "linear":
            k = min(n, round(rate * (r + 1) * n))
        else:  # round(rate · alive) more than before
            pruned = sum(int((m == 0).sum()) for m in masks)
            k = pruned + round(rate * (n - pruned))
        if per_layer:
            new = [prune.magnitude_mask(w, k / n) for w in eff]
        else:
            flat = prune.magnitude_mask(torch.cat([w.flatten() for w in eff]), k / n)
            new = [m.view_as(w) for m, w in zip(flat.split([w.numel() for w in eff]), eff)]
        back = {"masked": [w0 * m for w0, m in zip(init, new)], "none": [w * m for w, m in zip(weights, new)],
                "revive": [w0.clone() for w0 in init]}[rewind]
        return new, back
    return imp_round


def _ap_step(k_of="alive", base_to="target - k"):
    def ap_prune_step(net, target, params, start, p2):
        import ap

        zeros, total = ap.count_zeros(params)
        k = round(p2 * (total - zeros if k_of == "alive" else total))
        goal = round(target * total)
        prune.global_magnitude(net, (goal - k if base_to == "target - k" else goal) / total, params)
        weights = [getattr(m, n).detach() for m, n in params]
        before = [ap.start_weight(start, net, m, n) for m, n in params]
        ap.prune_chosen(params, _choose()(weights, before, k))
    return ap_prune_step


PREDICTED_01 = {"zeros_after_3_rounds_of_20pct": 488, "removed_by_magnitude_in_round_4": 92,
                "removed_by_ap_in_round_4": 10, "positive_weights_ap_removes": 0, "layer1_preactivations_lowered": True,
                "layer2_preactivations_lowered": 0, "same_sparsity_as_without_ap": True}

WRONG_01 = {
    "01.1": {"the mean of the layers' rates": _dnr(per_layer_mean=True),
             "a channel dead when any of its map is zero": _dnr(any_zero=True),
             "measured in train mode": _dnr(train_mode=True)},
    "01.2": {"either sign": _choose(candidates=lambda w: w != 0),
             "pruned (zero) weights as candidates": _choose(candidates=lambda w: w <= 0),
             "|w| instead of |Δw|": _choose(score=lambda w, w0: w.abs()),
             "the weights that moved most": _choose(largest=True),
             "a ranking per layer": _choose(per_layer=True)},
    "01.3": {"round(p·alive) more, not a total target": _imp_round(count="alive"),
             "p·(r+1) of all weights": _imp_round(count="linear"),
             "a ranking per layer": _imp_round(per_layer=True),
             "no rewind": _imp_round(rewind="none"),
             "a rewind that revives pruned weights": _imp_round(rewind="revive")},
    "01.4": {"AP's share of all weights": _ap_step(k_of="all"),
             "the base method to the full target first": _ap_step(base_to="target")},
    "01.5": {"20 % of all weights a round": {**PREDICTED_01, "zeros_after_3_rounds_of_20pct": 600},
             "AP's 2 % of all weights": {**PREDICTED_01, "removed_by_ap_in_round_4": 20,
                                         "removed_by_magnitude_in_round_4": 82},
             "layer 2 can fall too": {**PREDICTED_01, "layer2_preactivations_lowered": 1}},
}


@pytest.mark.parametrize("ex_id, mistake", [(e, m) for e, ms in WRONG_01.items() for m in ms])
def test_each_01_check_rejects_plausible_wrong_answers(ex_id, mistake):
    with pytest.raises(AssertionError, match=re.escape(ex_id)):
        course.check(ex_id, WRONG_01[ex_id][mistake], quiet=True)


def test_the_01_experiment_is_what_the_lab_predicts():
    assert course.lab_checks("01").ap_experiment() == PREDICTED_01
    course.check("01.5", dict(PREDICTED_01), quiet=True)


# ---------------------------------------------------------------- the 05_dependencyvit lab: against dependencyvit.py


@pytest.fixture(scope="module")
def solved_05():
    course.lab_checks("05")  # puts the lab folder (dependencyvit.py) on sys.path
    return namespace(nbformat.read(str(LAB_05), as_version=4), PREAMBLE_05)


def test_the_05_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it():
    test_each_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it(LAB_05, IDS_05, "05_dependencyvit")


@pytest.mark.parametrize("ex_id, seeds", [("05.1", [0, 7]), ("05.2", [0, 7]), ("05.3", [0, 7]), ("05.4", [0]),
                                          ("05.5", [0]), ("04.1", [0, 7]), ("04.2", [0, 7]), ("04.3", [0]),
                                          ("04.4", [0, 7]), ("04.5", [0])])
def test_every_05_and_04_solution_passes_its_check(request, ex_id, seeds, capsys):
    solved = request.getfixturevalue(f"solved_{ex_id[:2]}")
    for seed in seeds:
        course.check(ex_id, solved[course.lookup(ex_id).name], seed=seed)
        assert f"{ex_id} passed" in capsys.readouterr().out


def _reversed(transpose=True, gate="child", heads="sum"):
    def reversed_attention(a, p, m, v):
        gated = a * p.unsqueeze(-1) * (m[:, None, :, None] if gate == "child" else m[:, None, None, :])
        sent = gated.transpose(-2, -1) if transpose else gated
        return sent @ v, (sent.sum(1) if heads == "sum" else sent.mean(1))
    return reversed_attention


def _parents(axis=0, repair="most"):
    def tree_parents(mask):
        mask = torch.as_tensor(mask, dtype=torch.float64)
        parent = mask.argmax(dim=axis).tolist()
        received = mask.sum(dim=1).tolist()
        if repair is None:
            return parent
        state = [0] * len(parent)
        for start in range(len(parent)):
            walk, i = [], start
            while state[i] == 0:
                state[i] = 1
                walk.append(i)
                i = parent[i]
            if state[i] == 1:
                loop = walk[walk.index(i):]
                if len(loop) > 1:
                    by_mass = sorted(loop, key=received.__getitem__)  # stable: ties keep the walk's order
                    root = {"most": max(loop, key=received.__getitem__), "least": by_mass[0], "first": loop[0]}[repair]
                    parent[root] = root
            for j in walk:
                state[j] = 2
        return parent
    return tree_parents


def _keep(count=round, lowest=False, order="position"):
    def lite_keep(m, keep):
        k = max(1, count(m.shape[1] * keep))
        idx = m.topk(k, dim=1, largest=not lowest).indices
        return idx.sort(dim=1).values if order == "position" else idx
    return lite_keep


def _labels(heads_by="received", self_counts=True):
    def subtree_labels(mask, k):
        parent = _parents()(mask)
        mask = torch.as_tensor(mask, dtype=torch.float64)
        score = mask.sum(dim=1) if heads_by == "received" else mask.sum(dim=0)
        heads = torch.argsort(-score, stable=True)[:k].tolist() if heads_by != "roots" else []
        stop = [parent[i] == i or i in heads for i in range(len(parent))]
        labels = []
        for i in range(len(parent)):
            j = i if self_counts or stop[i] and parent[i] == i else parent[i]
            while not stop[j]:
                j = parent[j]
            labels.append(j)
        return labels
    return subtree_labels


PREDICTED_05 = {"column_sum_of_child_2": 0.1, "parents_change_when_m_is_set_to_1": False,
                "reversed_equals_ordinary_attention": False, "cycles_broken": 2, "roots": 3, "root_of_the_pair_4_5": 5,
                "tokens_after_the_second_pruning_layer": 33}

WRONG_05 = {
    "05.1": {"ordinary attention, A V": _reversed(transpose=False),
             "M gating the parents' columns": _reversed(gate="parent"),
             "the mask averaged over heads": _reversed(heads="mean")},
    "05.2": {"argmax along the rows": _parents(axis=1), "no cycle repair": _parents(repair=None),
             "the cycle broken at the member receiving least": _parents(repair="least"),
             "the cycle broken at the first member met": _parents(repair="first")},
    "05.3": {"floor, not round": _keep(count=int), "the lowest M kept": _keep(lowest=True),
             "indices in score order": _keep(order="score")},
    "05.4": {"heads by what they send (column sums)": _labels(heads_by="sent"),
             "the roots only as heads": _labels(heads_by="roots"),
             "the token itself not on its path": _labels(self_counts=False)},
    "05.5": {"a column sums to 1": {**PREDICTED_05, "column_sum_of_child_2": 1.0},
             "M moves the parents": {**PREDICTED_05, "parents_change_when_m_is_set_to_1": True},
             "keep of the survivors, not of the original tokens": {**PREDICTED_05,
                                                                    "tokens_after_the_second_pruning_layer": 28}},
}




def test_the_05_experiment_is_what_the_lab_predicts():
    assert course.lab_checks("05").dependency_experiment() == PREDICTED_05


# ---------------------------------------------------------------- the 04_vtrans lab: against the vtrans package


@pytest.fixture(scope="module")
def solved_04():
    course.lab_checks("04")  # puts the lab folder (vtrans/) on sys.path
    return namespace(nbformat.read(str(LAB_04), as_version=4), PREAMBLE_04)


def test_the_04_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it():
    test_each_lab_is_marked_for_nbgrader_and_its_checks_live_beside_it(LAB_04, IDS_04, "04_vtrans")




def _size(embeddings=True, layer_norms=True, ln_when_off=False):
    def bert_size(shape, hidden, heads, inner, attn_on, ffn_on):
        H, dh, P = hidden, shape.head_dim, shape.pooler
        ln = 2 * H if layer_norms else 0
        size = ((shape.vocab + shape.max_positions + shape.type_vocab) * H if embeddings else 0) + ln
        for h, f, a, b in zip(heads, inner, attn_on, ffn_on):
            size += a * (4 * H * h * dh + 3 * h * dh + H) + (ln if a or ln_when_off and h else 0)
            size += b * (2 * H * f + f + H) + (ln if b or ln_when_off and f else 0)
        return size + H * P + P + P * shape.num_labels + shape.num_labels
    return bert_size


def _slice(columns="blocks", which="keep", biases=True):
    def slice_heads(attn, keep):
        import vtrans as V

        dh, n = attn.head_dim, int(keep.sum())
        heads = keep.nonzero().flatten().tolist() if which == "keep" else list(range(n))
        cols = torch.cat([torch.arange(j * dh, (j + 1) * dh) if columns == "blocks" else
                          torch.arange(j, attn.heads * dh, attn.heads) for j in heads])
        small = V.bert.Attention(attn.o.out_features, n, dh, attn.ln.eps, 0.0).to(attn.o.weight.dtype)
        with torch.no_grad():
            for w in ("q", "k", "v"):
                getattr(small, w).weight.copy_(getattr(attn, w).weight[cols])
                getattr(small, w).bias.copy_(getattr(attn, w).bias[cols] if biases else getattr(attn, w).bias)
            small.o.weight.copy_(attn.o.weight[:, cols])
            small.o.bias.copy_(attn.o.bias)
            small.ln.load_state_dict(attn.ln.state_dict())
        return small
    return slice_heads


PREDICTED_04 = {"minilm_parameters_in_millions": 22.7, "embedding_share_percent": 52, "saved_by_one_head": 49248,
                "saved_by_one_hidden_dimension": 59106, "sparsity_percent_with_every_ffn_removed": 31,
                "kl_of_the_unit_with_mu_0": 0.0, "kept_mu_0_6_sigma2_0_25": True}

WRONG_04 = {
    "04.1": {"σ for σ²": lambda mu, ls: 0.5 * torch.log1p(mu**2 / (0.5 * ls).exp()).sum(),
             "a mean over units": lambda mu, ls: 0.5 * torch.log1p(mu**2 / ls.exp()).mean(),
             "no ½": lambda mu, ls: torch.log1p(mu**2 / ls.exp()).sum()},
    "04.2": {"log α = 0 kept": lambda mu, ls: ls - torch.log(mu**2 + 1e-8) <= 0,
             "the rule reversed": lambda mu, ls: ls - torch.log(mu**2 + 1e-8) > 0,
             "|μ| > σ²": lambda mu, ls: mu.abs() > ls.exp()},
    "04.3": {"no embedding tables": _size(embeddings=False), "no LayerNorms": _size(layer_norms=False),
             "a sublayer that is off keeps its LayerNorm": _size(ln_when_off=True)},
    "04.4": {"interleaved columns": _slice(columns="interleaved"), "the first k heads": _slice(which="first"),
             "q, k, v biases left whole": _slice(biases=False)},
    "04.5": {"embeddings a small share": {**PREDICTED_04, "embedding_share_percent": 10},
             "a head without its biases": {**PREDICTED_04, "saved_by_one_head": 49152},
             "σ² = 0.25 prunes μ = 0.6": {**PREDICTED_04, "kept_mu_0_6_sigma2_0_25": False}},
}


@pytest.mark.parametrize("ex_id, mistake", [(e, m) for w in (WRONG_05, WRONG_04) for e, ms in w.items() for m in ms])
def test_each_05_and_04_check_rejects_plausible_wrong_answers(request, ex_id, mistake):
    request.getfixturevalue(f"solved_{ex_id[:2]}")  # the lab's folder on sys.path, as its checks need
    with pytest.raises(AssertionError, match=re.escape(ex_id)):
        course.check(ex_id, {**WRONG_05, **WRONG_04}[ex_id][mistake], quiet=True)


def test_the_04_experiment_is_what_the_lab_predicts():
    assert course.lab_checks("04").vtrans_experiment() == PREDICTED_04
