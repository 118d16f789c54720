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

A check is one small function registered with :func:`exercise`; a series' lab adds its own in the same style.

    prunebook course build [--series 00 ...] [--out DIR]       student copies (handouts)
    prunebook course grade SUBMISSIONS... --seed S [--lab 00]  points per exercise (CSV), feedback per student
"""

from __future__ import annotations

import ast
import copy
import csv
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


def exercise(id: str, name: str, *, points: int = 1, hint: str, goal: str = "", uses_seed: bool = True):
    """Register the decorated ``check(answer, generator)`` as exercise ``id`` (``"NN.k"``, NN the series number)."""
    if not re.fullmatch(r"\d\d\.\w+", id):
        raise ValueError(f"exercise id {id!r}: write it as NN.k, NN the series number (00.1, 07.2)")

    def register(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        if id in REGISTRY:
            raise ValueError(f"exercise {id} is registered twice")
        REGISTRY[id] = Exercise(id, name, points, hint, fn, goal, uses_seed)
        return fn

    return register


def check(exercise_id: str, answer: Any, seed: int = 0, quiet: bool = False) -> None:
    """Compare ``answer`` (the student's function, or value) with the reference on random cases drawn from ``seed``.

    Prints one line when every case agrees; raises ``AssertionError`` with the first
    counterexample and a hint otherwise. A stub's ``NotImplementedError`` passes through as it is."""
    import torch

    ex = _lookup(exercise_id)
    generator = torch.Generator().manual_seed(seed)
    try:
        info = ex.run(answer, generator)
    except AssertionError as exc:
        raise AssertionError(f"{ex.id} ({ex.name}): {exc}\nhint: {ex.hint}") from None
    if not quiet:
        cases = f"{info} cases, seed {seed}" if ex.uses_seed else "checked against the run"
        print(f"{ex.id} passed ({ex.name}: {cases})")


def _lookup(exercise_id: str) -> Exercise:
    if exercise_id not in REGISTRY:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are: {known}")
    return REGISTRY[exercise_id]


def _call(fn: Callable, case: str, *args: Any) -> Any:
    """Call the student's function; any error but a stub's ``NotImplementedError`` becomes a counterexample."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as exc:
        raise AssertionError(f"{case}: raised {type(exc).__name__}: {exc}") from exc


def _show(t: Any) -> str:
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


def _randint(g, lo: int, hi: int) -> int:
    """An integer in [lo, hi] from the generator."""
    import torch

    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _uniform(g, lo: float, hi: float) -> float:
    import torch

    return lo + (hi - lo) * float(torch.rand(1, generator=g))


# ---------------------------------------------------------------- 00 · the foundations lab


def _weights(g, shape: tuple[int, ...], tied: bool):
    """Gaussian weights, or (``tied``) weights on a coarse grid, so many |w| are equal (as in quantized models)."""
    import torch

    w = torch.randn(shape, generator=g)
    return (w * 2).round() / 4 if tied else w


@exercise("00.1", "magnitude_mask", points=2, goal="fine-grained magnitude pruning of one tensor, exact sparsity",
          hint="equation (1) of the lab: k = round(s·n) entries with the smallest |w| get m = 0, exactly k of them "
               "even when several |w| tie at the threshold (topk on |w| picks exactly k; a comparison with the "
               "k-th value does not)")
def _check_magnitude_mask(student, g) -> int:
    import torch

    from . import prune

    shapes = [(6,), (3, 4), (2, 3, 2, 2), (10, 9), (8, 4, 3, 3), (64,)]
    n = 0
    for shape in shapes:
        for tied in (False, True):
            for s in (_uniform(g, 0.05, 0.95), _uniform(g, 0.05, 0.95), 0.0, 1.0) if shape != (6,) else \
                    (_uniform(g, 0.05, 0.95),):
                w = _weights(g, shape, tied)
                before = w.clone()
                case = f"magnitude_mask({_show(w)}, sparsity={s:.4g})"
                m = _call(student, case, w, s)
                n += 1
                assert isinstance(m, torch.Tensor), f"{case} returned {type(m).__name__}, not a tensor"
                assert tuple(m.shape) == shape, f"{case}: the mask has shape {tuple(m.shape)}, not {shape}"
                assert torch.equal(w, before), f"{case} changed the weight it was given"
                m = m.detach().float()
                assert bool(((m == 0) | (m == 1)).all()), f"{case}: the mask holds values other than 0 and 1"
                k, zeros = round(s * w.numel()), int((m == 0).sum())
                assert zeros == k, (f"{case}: {zeros} zeros, but round({s:.4g}·{w.numel()}) = {k} are wanted"
                                    + (" (|w| has ties at the threshold)" if tied else ""))
                a = w.abs()
                if 0 < k < w.numel():
                    assert float(a[m == 0].max()) <= float(a[m == 1].min()), \
                        f"{case}: a pruned weight has a larger |w| than a kept one"
                if not tied:
                    assert torch.equal(m, prune.magnitude_mask(w, s)), f"{case}: not the reference's mask"
    return n


def pitfalls_experiment() -> dict[str, int]:
    """The lab's "predict, then run" experiment: what ``torch.nn.utils.prune``, hand-made masks, a threshold with
    ties and a channel count really do. Deterministic; each entry is one prediction to make."""
    import torch
    from torch import nn
    from torch.nn.utils import prune as torch_prune

    from . import prune

    torch.manual_seed(0)
    layer = nn.Linear(8, 8)  # 64 weights, 8 biases
    torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    out = {"parameters_after_l1_unstructured": sum(p.numel() for p in layer.parameters()),
           "zeros_in_state_dict_weight_orig": int((layer.state_dict()["weight_orig"] == 0).sum())}
    torch_prune.remove(layer, "weight")
    out["zeros_after_prune_remove"] = int((layer.weight == 0).sum())

    hand = nn.Linear(8, 8)  # zero half the weights by hand, then one SGD step without re-applying the mask
    with torch.no_grad():
        hand.weight.mul_(prune.magnitude_mask(hand.weight, 0.5))
    opt = torch.optim.SGD(hand.parameters(), lr=0.1)
    hand(torch.randn(16, 8)).pow(2).sum().backward()
    opt.step()
    out["zeros_after_one_step_by_hand"] = int((hand.weight == 0).sum())

    w = torch.tensor([0.9, -0.2, 0.1, 0.2, -0.5, 0.2])  # prune 50 %: k = 3, and |w| = 0.2 three times
    threshold = w.abs().kthvalue(3).values
    out["zeros_with_kthvalue_threshold"] = int((w.abs() <= threshold).sum())  # mask = |w| > threshold
    out["zeros_with_topk"] = int((prune.magnitude_mask(w, 0.5) == 0).sum())
    out["channels_kept_prune_30pct_of_64_rounded"] = prune.channels_to_keep(64, 0.3)
    out["channels_kept_prune_30pct_of_64_floored"] = int(64 * (1 - 0.3))
    return out


@exercise("00.2", "predictions", points=2, uses_seed=False,
          goal="what torch.nn.utils.prune, hand-made masks, ties and channel counts really do",
          hint="run the experiment cell after the question and read each number; the section 'Four things that "
               "bite' explains each one")
def _check_predictions(student, g) -> str:
    measured = pitfalls_experiment()
    assert isinstance(student, dict), f"predictions is a {type(student).__name__}; it must be a dict"
    missing = [k for k in measured if k not in student]
    assert not missing, f"predictions has no value for: {', '.join(missing)}"
    wrong = [f"{k}: predicted {student[k]!r}, the run gives {v}" for k, v in measured.items() if student[k] != v]
    assert not wrong, f"{len(wrong)} of {len(measured)} predictions differ from the run: " + "; ".join(wrong)
    return "run"


def _random_model(g, conv: bool):
    """A small MLP or CNN whose layers have very different weight scales (so a global and a per-layer ranking
    disagree)."""
    import torch
    from torch import nn

    torch.manual_seed(_randint(g, 0, 2**31 - 1))
    if conv:
        c1, c2 = _randint(g, 2, 6), _randint(g, 2, 6)
        model = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
                              nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(c2, 3))
        example = torch.randn(4, 1, 6, 6, generator=g)
    else:
        a, b, c = _randint(g, 3, 9), _randint(g, 3, 9), _randint(g, 2, 5)
        model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, b), nn.ReLU(), nn.Linear(b, c))
        example = torch.randn(5, a, generator=g)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(10 ** _uniform(g, -1.5, 1.0))
    return model.eval(), example


def _state(model) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before: dict[str, Any]) -> bool:
    import torch

    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


@exercise("00.3", "global_magnitude_masks", points=2, goal="one threshold over all layers: global ranking",
          hint="equation (2) of the lab: rank |w| over every conv and linear weight together (not layer by layer), "
               "prune the k = round(s·N) smallest, N the number of those weights; biases and BatchNorm stay; leave "
               "the model as it was")
def _check_global_masks(student, g) -> int:
    import torch
    from torch import nn

    from . import prune

    n = 0
    for i in range(8):
        model, _ = _random_model(g, conv=bool(i % 2))
        s = _uniform(g, 0.1, 0.9)
        before = _state(model)
        case = f"global_magnitude_masks(model #{i + 1}: {_describe(model)}, sparsity={s:.4g})"
        masks = _call(student, case, model, s)
        n += 1
        assert _unchanged(model, before) and not any(hasattr(m, "weight_orig") for m in model.modules()), \
            f"{case} changed the model; return the masks and leave the weights as they are"
        reference = copy.deepcopy(model)
        prune.global_magnitude(reference, s)
        want = prune.masks(reference)
        assert isinstance(masks, dict), f"{case} returned {type(masks).__name__}, not a dict"
        assert sorted(masks) == sorted(want), f"{case}: keys {sorted(masks)}, expected {sorted(want)}"
        for key in want:
            assert tuple(masks[key].shape) == tuple(want[key].shape), \
                f"{case}: masks[{key!r}] has shape {tuple(masks[key].shape)}, not {tuple(want[key].shape)}"
            m = masks[key].detach().float()
            assert bool(((m == 0) | (m == 1)).all()), f"{case}: masks[{key!r}] holds values other than 0 and 1"
        total = sum(m.numel() for m in want.values())
        zeros = sum(int((masks[k].detach() == 0).sum()) for k in want)
        k = round(s * total)
        assert zeros == k, f"{case}: {zeros} zeros in all, but round({s:.4g}·{total}) = {k} are wanted"
        weights = {f"{name}.weight": mod.weight.detach().abs() for name, mod in model.named_modules()
                   if isinstance(mod, (nn.Conv2d, nn.Linear))}
        pruned = torch.cat([weights[key][masks[key].detach() == 0] for key in want])
        kept = torch.cat([weights[key][masks[key].detach() != 0] for key in want])
        per_layer = {key: f"{float((masks[key].detach() == 0).float().mean()):.2f}" for key in want}
        assert float(pruned.max()) <= float(kept.min()), (
            f"{case}: a pruned |w| = {float(pruned.max()):.4g} is larger than a kept |w| = {float(kept.min()):.4g} "
            f"in another layer; sparsity per layer {per_layer} (a global ranking gives the layers different "
            f"sparsities)")
        for key in want:
            assert torch.equal(masks[key].detach().float(), want[key].float()), f"{case}: masks[{key!r}] differs"
    return n


def _describe(model) -> str:
    from torch import nn

    return " → ".join(f"{type(m).__name__}{tuple(m.weight.shape)}" for m in model.modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear)))


@exercise("00.4", "sensitivity_scan", points=2, goal="prune one layer at a time to see which layers tolerate it",
          hint="section 'Sensitivity scan': for each layer and each sparsity, prune only that layer (magnitude_mask "
               "of its dense weight), evaluate, and put the dense weight back before the next sparsity and the next "
               "layer; keys are the module names of the conv and linear layers")
def _check_sensitivity(student, g) -> int:
    import torch

    from . import prune

    n = 0
    for i in range(6):
        model, example = _random_model(g, conv=bool(i % 2))
        target = model(example).detach()
        evaluate = lambda m, x=example, t=target: float((m(x) - t).pow(2).mean())
        sparsities = sorted(round(_uniform(g, 0.1, 0.95), 3) for _ in range(3))
        before = _state(model)
        case = f"sensitivity_scan(model #{i + 1}: {_describe(model)}, evaluate=output MSE, sparsities={sparsities})"
        with torch.no_grad():
            got = _call(student, case, model, evaluate, sparsities)
        n += 1
        assert _unchanged(model, before), f"{case} left the model changed: restore each layer after its scan"
        want = prune.sensitivity_scan(copy.deepcopy(model), evaluate, sparsities)
        assert isinstance(got, dict), f"{case} returned {type(got).__name__}, not a dict"
        assert list(got) == list(want), f"{case}: layers {list(got)}, expected {list(want)} (in model order)"
        for layer, values in want.items():
            assert len(got[layer]) == len(values), f"{case}: layer {layer!r} has {len(got[layer])} values"
            err = rel_error(got[layer], values)
            assert err < 1e-5, (f"{case}: layer {layer!r}: {[round(float(v), 6) for v in got[layer]]}, the "
                                f"reference gives {[round(v, 6) for v in values]} (relative error {err:.2g})")
    return n


@exercise("00.5", "prune_channels", points=3, goal="channel pruning that really shrinks the model",
          hint="section 'Channel pruning': keep the n − round(r·n) filters with the largest L1 norm "
               "(prune.channels_to_keep), in their original order; slice the conv's weight and bias, the BatchNorm's "
               "weight, bias, running_mean and running_var with the same indices, and the next conv's input channels")
def _check_prune_channels(student, g) -> int:
    import torch
    from torch import nn

    from . import prune

    n = 0
    for i in range(8):
        torch.manual_seed(_randint(g, 0, 2**31 - 1))
        c_in, c, c2 = _randint(g, 1, 4), _randint(g, 4, 16), _randint(g, 2, 6)
        bias = bool(i % 2)
        model = nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=bias), nn.BatchNorm2d(c), nn.ReLU(),
                              nn.Conv2d(c, c2, 3, padding=1))
        bn = model[1]
        bn.weight.data = torch.rand(c, generator=g) + 0.5
        bn.bias.data = torch.rand(c, generator=g) - 0.5
        bn.running_mean = torch.rand(c, generator=g) - 0.5
        bn.running_var = torch.rand(c, generator=g) + 0.5
        model.eval()
        ratio = round(_uniform(g, 0.05, 0.9), 2)
        example = torch.randn(2, c_in, 5, 5, generator=g)
        n_keep = prune.channels_to_keep(c, ratio)
        keep = prune.l1_keep(model[0], n_keep)
        reference = copy.deepcopy(model)
        prune.remove_channels(reference, example, {reference[0]: keep})
        work = copy.deepcopy(model)
        case = (f"prune_channels(Conv2d({c_in}, {c}, 3{', bias=False' if not bias else ''}), BatchNorm2d({c}), "
                f"Conv2d({c}, {c2}, 3), ratio={ratio})")
        out = _call(student, case, work[0], work[1], work[3], ratio)
        n += 1
        assert isinstance(out, (tuple, list)) and len(out) == 3, f"{case}: return (conv, bn, next_conv)"
        conv, norm, nxt = out
        assert conv.out_channels == n_keep and conv.weight.shape[0] == n_keep, (
            f"{case}: the conv keeps {conv.weight.shape[0]} channels; pruning {ratio:.0%} of {c} keeps "
            f"{c} − round({ratio}·{c}) = {n_keep}")
        assert torch.equal(conv.weight.detach(), reference[0].weight.detach()), (
            f"{case}: not the filters with the largest L1 norms; keep indices {keep.tolist()} (in this order)")
        if bias:
            assert conv.bias is not None and torch.equal(conv.bias.detach(), reference[0].bias.detach()), \
                f"{case}: the conv's bias is not sliced with its filters"
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(norm, name)
            assert t is not None and t.shape[0] == n_keep and torch.equal(t.detach(), getattr(reference[1], name)), (
                f"{case}: the BatchNorm's {name} has {t.shape[0] if t is not None else 0} entries or other values; "
                f"BatchNorm must be sliced with its conv (channels {keep.tolist()})")
        assert norm.num_features == n_keep, f"{case}: bn.num_features is {norm.num_features}, not {n_keep}"
        assert nxt.in_channels == n_keep and torch.equal(nxt.weight.detach(), reference[3].weight.detach()), (
            f"{case}: the next conv must lose the same input channels ({keep.tolist()} kept)")
        small = nn.Sequential(conv, norm, nn.ReLU(), nxt).eval()
        with torch.no_grad():
            err = rel_error(small(example), reference(example))
        assert err < 1e-5, f"{case}: the pruned layers' output differs from the reference (relative error {err:.2g})"
    return n


@exercise("00.6", "conv_cost", points=2, goal="count parameters and multiply-accumulates (MACs) of a conv",
          hint="equation (3) of the lab: params = C_out·(C_in/groups)·k_h·k_w (+ C_out for the bias); "
               "MACs = H_out·W_out·C_out·(C_in/groups)·k_h·k_w with H_out = ⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1 "
               "(the bias adds no multiply)")
def _check_conv_cost(student, g) -> int:
    import torch
    from torch import nn

    from . import prune

    n = 0
    for i in range(16):
        groups = (1, 1, 2, 4)[i % 4]
        c_in, c_out = groups * _randint(g, 1, 4), groups * _randint(g, 1, 4)
        kh, kw = _randint(g, 1, 5), _randint(g, 1, 5) if i % 3 else None
        kernel = (kh, kw) if kw else kh
        stride, padding, dilation = _randint(g, 1, 3), _randint(g, 0, 2), (1, 2)[i % 2]
        h, w = _randint(g, 9, 20), _randint(g, 9, 20)
        conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                         bias=bool(i % 2))
        case = (f"conv_cost(Conv2d({c_in}, {c_out}, kernel_size={kernel}, stride={stride}, padding={padding}, "
                f"dilation={dilation}, groups={groups}, bias={bool(i % 2)}), height={h}, width={w})")
        got = _call(student, case, conv, h, w)
        n += 1
        want = (prune.count_parameters(conv), prune.count_macs(conv, torch.zeros(1, c_in, h, w)))
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (params, macs)"
        assert int(got[0]) == want[0], f"{case}: {got[0]} parameters, the layer stores {want[0]}"
        assert int(got[1]) == want[1], f"{case}: {got[1]} MACs, the layer does {want[1]} on one {h}×{w} input"
    return n


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
        for module in sorted(path.parent.glob("*.py")):
            shutil.copyfile(module, folder / module.name)
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
        ex = _lookup(ex_id)
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
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    nbformat.write(nb, str(result))
    return 0


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_lines(nb, skip: set[int]) -> list[str]:
    """One line per cell that raised (except the cells in ``skip``: the check cells, whose failures are graded)."""
    lines = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i in skip:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                why = _one_line(out.get("evalue", ""), 160)
                lines.append(f"cell {i + 1} ({_one_line(first, 40)!r}) raised {out.get('ename')}"
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
        grade.problems.append(f"not a notebook ({_one_line(type(exc).__name__ + ': ' + str(exc), 120)})")
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
        name = _lookup(ex_id).name
        if ex_id in got and not defines(got[ex_id].source, name):
            grade.problems.append(f"exercise {ex_id}'s cell no longer defines {name} (renamed?)")
        elif ex_id in got:
            runnable.append(ex_id)
    for ex_id in text_ids:
        if ex_id in got:
            grade.answers[ex_id] = got[ex_id].source.strip()
    results: dict[str, Any] = {}
    if runnable:
        results = _run_submission(grade, nb, runnable, seed, timeout, profile, cwd_files)
    for ex_id in code_ids:
        ex = _lookup(ex_id)
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
                    cwd_files: Sequence[Path]) -> dict[str, Any]:
    import nbformat

    with tempfile.TemporaryDirectory(prefix="prunebook-grade-") as tmp:
        tmp = Path(tmp)
        work = tmp / "work"
        work.mkdir()
        for f in cwd_files:
            shutil.copyfile(f, work / f.name)
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
            tail = _one_line(log.strip().splitlines()[-1] if log.strip() else f"exit status {proc.returncode}")
            grade.problems.append(f"the notebook could not be run to the end: {tail}")
            return {}
        grade.feedback.append(f"(ran in {took:.0f} s at profile {profile}, checks with the grading seed)")
        return json.loads(result.read_text())


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
    out = Path(out) if out is not None else root / "runs" / "course" / "grades"
    cwd_files = sorted(lab_path.parent.glob("*.py"))

    def one(path: Path) -> Grade:
        try:
            return grade_one(path, lab_name, lab_nb, seed, timeout, profile, cwd_files)
        except Exception as exc:  # never let one submission stop the others
            g = Grade(student_name(path), path, status="grader error")
            g.problems.append(f"the grader failed on it: {type(exc).__name__}: {_one_line(str(exc), 160)}")
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
    return float(sum(_lookup(i).points for i in ids))


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
    import json as _json

    named = {}
    for f in files:
        try:
            named.setdefault(_json.loads(f.read_text())["metadata"]["prunebook"]["lab"], []).append(f)
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

