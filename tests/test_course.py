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


def lab():
    return nbformat.read(str(LAB), as_version=4)


def namespace(nb) -> dict:
    """The names the exercise cells of ``nb`` define, run in order (as the notebook runs them)."""
    ns: dict = {}
    exec(PREAMBLE, ns)
    for cell in course.exercise_cells(nb).values():
        if cell.cell_type == "code":
            exec(cell.source, ns)
    return ns


@pytest.fixture(scope="module")
def solved():
    return namespace(lab())


# ---------------------------------------------------------------- the lab and its checks


def test_the_lab_has_its_exercises_marked_for_nbgrader():
    nb = lab()
    cells = course.exercise_cells(nb)
    assert [i for i, c in cells.items() if c.cell_type == "code"] == IDS
    assert [i for i, c in cells.items() if c.cell_type == "markdown"] == ["00.q1"]
    assert nb.metadata["prunebook"]["lab"] == "00_pruning_basics"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    for ex_id, cell in cells.items():
        if cell.cell_type == "code":
            assert course.BEGIN in cell.source and course.END in cell.source, ex_id
            assert course.defines(cell.source, course.REGISTRY[ex_id].name)
            assert any(f'course.check("{ex_id}"' in c.source for c in nb.cells), f"no check cell for {ex_id}"


@pytest.mark.parametrize("ex_id", IDS)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_every_solution_passes_its_check(solved, ex_id, seed, capsys):
    course.check(ex_id, solved[course.REGISTRY[ex_id].name], seed=seed)
    assert f"{ex_id} passed" in capsys.readouterr().out


def test_every_stub_fails_with_not_implemented():
    copy_ = course.student_copy(lab())
    ns: dict = {}
    exec(PREAMBLE, ns)
    for ex_id, cell in course.exercise_cells(copy_).items():
        if cell.cell_type != "code":
            continue
        if ex_id == "00.2":  # a value, not a function: the stub raises where the value is made
            with pytest.raises(NotImplementedError):
                exec(cell.source, ns)
            continue
        exec(cell.source, ns)
        with pytest.raises(NotImplementedError):
            course.check(ex_id, ns[course.REGISTRY[ex_id].name])


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


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="00.1"):
        course.check("99.9", lambda: None)


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
    assert _points(row) == {i: course.REGISTRY[i].points for i in IDS}
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
    assert course.pitfalls_experiment() == PREDICTED
    assert all(type(v) is int for v in course.pitfalls_experiment().values())
