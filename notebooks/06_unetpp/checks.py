"""The 06_unetpp lab's checks (``exercises.ipynb``): each exercise's function against ``unetpp.py``, the code the
series runs, on fresh random cases from a seed; the integration exercise scores trained UNet++ networks pruned to
each level with the student's function patched into the series' evaluation. ``course.check("06.2", fn)`` imports
this file (with this folder on ``sys.path``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import unetpp
from prunebook import claims, config, course
from prunebook.course import exercise

KINDS = ("unet", "plus", "nested")
ARCH_OF = {"unet": "U-Net", "plus": "UNet+", "nested": "UNet++"}


# ---------------------------------------------------------------- 06.1 · the skip pathways


def reference_inputs(kind: str, depth: int, filters: Sequence[int] | None = None) -> tuple[dict, unetpp.NestedUNet]:
    """The series' wiring: decoder node (i, j) → the nodes it concatenates, same-row skips in order, then the node
    below it (up-sampled); and the network built with it (``filters``: small ones by default)."""
    net = unetpp.NestedUNet(tuple(filters or (2, 3, 4, 5, 6)[: depth + 1]), depth, kind)
    return {(i, j): net.skips(i, j) + [(i + 1, j - 1)] for i, j in net.nodes if j > 0}, net


def _as_node(x: Any) -> tuple[int, int]:
    i, j = x
    return int(i), int(j)


@exercise("06.1", "node_inputs", points=2)
def _check_node_inputs(student, g) -> int:
    """Goal: the nested skip pathway of UNet++ (DLMIA Eq. 1) as the series wires it, beside U-Net's and UNet+'s: which
    nodes feed which

    Hint: notebook 1, section 1 (Eq. 1) and notebook 5, section 1 (the table of the five networks): a decoder node
    x^{i,j} (j ≥ 1) concatenates same-row nodes, then U(x^{i+1,j-1}) last; UNet++ takes every x^{i,k}, k < j, UNet+ only
    x^{i,j-1}, and U-Net^d has only the decoder nodes x^{i,d-i}, each fed by x^{i,0}; UNet+ and UNet++ have every node
    with i + j ≤ d
    """
    n = 0
    for case_no in range(15):
        kind, depth = KINDS[case_no % 3], course.randint(g, 1, 4)
        case = f"node_inputs({kind!r}, depth={depth})"
        got = course.call(student, case, kind, depth)
        n += 1
        want, net = reference_inputs(kind, depth)
        assert isinstance(got, dict), f"{case}: return a dict {{(i, j): [inputs]}}, not a {type(got).__name__}"
        got = {_as_node(k): [_as_node(x) for x in v] for k, v in got.items()}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        assert not missing and not extra, (
            f"{case}: the decoder nodes differ from the series' {ARCH_OF[kind]} of depth {depth}: "
            + (f"missing {missing}" if missing else "") + ("; " if missing and extra else "")
            + (f"not in the network {extra}" if extra else "") + f" (its decoder nodes: {sorted(want)})")
        for node in sorted(want):
            if got[node] != want[node]:
                f = net.filters
                try:
                    c_got = sum(f[i] for i, _ in got[node][:-1]) + f[got[node][-1][0]]
                except IndexError:
                    c_got = None
                c_want = net.blocks[f"{node[0]}{node[1]}"][0].in_channels
                raise AssertionError(
                    f"{case}: x^{{{node[0]},{node[1]}}} concatenates {got[node]}, the series {want[node]} (the node "
                    f"below, up-sampled, last)" + (f"; at filters {list(f)} your inputs would give its block "
                                                   f"{c_got} channels, the series' block takes {c_want}"
                                                   if c_got not in (None, c_want) else ""))
    return n


# ---------------------------------------------------------------- 06.2 · the forward pass, pruned to a level


def _net_case(g) -> tuple[unetpp.NestedUNet, torch.Tensor, int]:
    """A small network of the family (random width, depth, wiring, up-sampling, BatchNorm), in eval mode with
    random BatchNorm statistics, an input whose side is a multiple of 2^depth, and a level that has a head."""
    kind = KINDS[course.randint(g, 0, 2)]
    depth = course.randint(g, 1, 4)
    filters = tuple(course.randint(g, 1, 3) * 2 ** i for i in range(depth + 1))
    ds = kind != "unet" and course.randint(g, 0, 3) > 0
    up = ("bilinear", "transpose")[course.randint(g, 0, 1)]
    bn = bool(course.randint(g, 0, 1))
    torch.manual_seed(course.randint(g, 0, 2**31 - 1))
    net = unetpp.NestedUNet(filters, depth, kind, ds, in_channels=course.randint(g, 1, 2), bn=bn, up=up)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    side = 2 ** depth * course.randint(g, 1, 3)
    x = torch.randn(course.randint(g, 1, 3), net.blocks["00"][0].in_channels, side, side, generator=g)
    level = net.head_levels[course.randint(g, 0, len(net.head_levels) - 1)]
    return net.eval(), x, level


def _describe_net(net: unetpp.NestedUNet) -> str:
    bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    return (f"{ARCH_OF[net.kind]}{' DS' if net.ds else ''}, depth {net.depth}, filters {list(net.filters)}, "
            f"{net.up_mode} up-sampling{', BatchNorm' if bn else ''}")


def _no_forward(*args, **kwargs):
    raise AssertionError("called net(x) or net.forward: compute the nodes with net.blocks yourself")


@exercise("06.2", "forward_at_level", points=3)
def _check_forward_at_level(student, g) -> int:
    """Goal: pruning UNet++ at inference: the network L^d is the nodes with i + j ≤ d, read at the heads up to x^{0,d},
    and nothing else is computed

    Hint: notebook 3, section 1 (the pruned subgraph) with notebook 1's Eq. 1: go through net.nodes (ordered by column
    j) and skip every node with i + j > level; x^{0,0} = H(x), x^{i,0} = H(maxpool2(x^{i-1,0})), a decoder node
    H(cat([its same-row inputs..., U(x^{i+1,j-1})], dim=1)) with your node_inputs; U is net.ups[f'{i}{j}'] when
    net.up_mode == 'transpose', else bilinear ×2 (align_corners=False); return the logits of every head
    net.heads[str(j)] in net.head_levels with j ≤ level, in order
    """
    n = 0
    for _ in range(12):
        net, x, level = _net_case(g)
        case = f"forward_at_level({_describe_net(net)}, x of shape {tuple(x.shape)}, level={level})"
        with torch.no_grad():
            want = net(x, level)
        ran: list[str] = []
        hooks = [b.register_forward_hook(lambda m, i, o, name=name, ran=ran: ran.append(name))
                 for name, b in net.blocks.items()]
        net.forward = _no_forward
        kept = x.clone()
        try:
            with torch.no_grad():
                got = course.call(student, case, net, x, level)
        finally:
            del net.forward
            for h in hooks:
                h.remove()
        n += 1
        assert torch.equal(x, kept), f"{case} changed x"
        should = sorted(f"{i}{j}" for i, j in net.nodes if i + j <= level)
        if sorted(ran) != should:
            extra, missing = sorted(set(ran) - set(should)), sorted(set(should) - set(ran))
            raise AssertionError(f"{case}: the blocks run were {sorted(ran)}; L{level} runs exactly the "
                                 f"{len(should)} nodes with i + j ≤ {level}"
                                 + (f" (not {extra})" if extra else "") + (f" (missing {missing})" if missing else ""))
        assert len(ran) == len(should), f"{case}: {len(ran)} block calls for {len(should)} nodes: run each node once"
        assert isinstance(got, (list, tuple)), f"{case}: return the list of the heads' logits"
        heads = [j for j in net.head_levels if j <= level]
        assert len(got) == len(want), (f"{case}: {len(got)} outputs; the network has heads {net.head_levels}, so "
                                       f"L{level} returns the {len(want)} heads {heads} (x^{{0,{level}}} last)")
        for j, o, w in zip(heads, got, want):
            o = torch.as_tensor(o)
            assert tuple(o.shape) == tuple(w.shape), (f"{case}: head {j} has shape {tuple(o.shape)}, not "
                                                      f"{tuple(w.shape)}")
            err = course.rel_error(o, w)
            assert err < 1e-5, (f"{case}: head {j}'s logits differ from the series' (relative error {err:.2g}); "
                                "check the order of the concatenation and the up-sampling")
    return n


# ---------------------------------------------------------------- 06.3 · the deep-supervision loss


def _loss_case(g) -> tuple[list[torch.Tensor], torch.Tensor]:
    k, b, side = course.randint(g, 1, 4), course.randint(g, 1, 3), course.randint(g, 2, 9)
    share = (0.0, 0.1, 0.3, 0.6)[course.randint(g, 0, 3)]
    target = (torch.rand(b, 1, side, side, generator=g, dtype=torch.float64) < share).double()
    scale = course.uniform(g, 0.5, 6.0)
    heads = [(scale * torch.randn(b, 1, side, side, generator=g, dtype=torch.float64)).requires_grad_()
             for _ in range(k)]
    return heads, target


@exercise("06.3", "ds_loss", points=2)
def _check_ds_loss(student, g) -> int:
    """Goal: the paper's loss, ½·BCE − Dice, and deep supervision: the same loss on every head, equal weights

    Hint: notebook 2, section 1 (DLMIA Eq. 2): per head, 0.5 · binary cross-entropy of the logits (mean over pixels)
    minus the soft Dice (2·Σ p·y + 1) / (Σ p + Σ y + 1), p = sigmoid(logits), the sums over the whole batch; the
    deep-supervision loss is the mean over the heads (not the sum); keep it a differentiable tensor (no .item(), no
    threshold)
    """
    n = 0
    for _ in range(16):
        heads, target = _loss_case(g)
        b, _, side, _ = target.shape
        case = (f"ds_loss({len(heads)} heads of shape {(b, 1, side, side)}, a target with "
                f"{int(target.sum())} of {target.numel()} pixels foreground)")
        got = course.call(student, case, heads, target.clone())
        n += 1
        assert isinstance(got, torch.Tensor) and got.numel() == 1, f"{case}: return a one-element tensor"
        want = unetpp.deep_supervision_loss(heads, target)
        err = course.rel_error(got.detach(), want.detach())
        if err > 1e-6:
            per_head = torch.stack([unetpp.bce_dice_loss(h, target) for h in heads]).detach()
            why = " (that is the sum over the heads: the series takes their mean)" if course.rel_error(
                got.detach(), per_head.sum()) < 1e-6 and len(heads) > 1 else ""
            mine, theirs = float(got.detach()), float(want.detach())
            raise AssertionError(f"{case}: loss {mine:.6f}, the series' {theirs:.6f}{why}; per head the series has "
                                 f"{[round(v, 4) for v in per_head.tolist()]}")
        assert got.requires_grad, f"{case}: the loss carries no gradient (computed outside autograd?)"
        mine = torch.autograd.grad(got.sum(), heads, allow_unused=True)
        theirs = torch.autograd.grad(want, heads)
        for j, (a, w) in enumerate(zip(mine, theirs)):
            assert a is not None and course.rel_error(a, w) < 1e-6, (
                f"{case}: the gradient with respect to head {j + 1} differs from the series' loss's")
    return n


# ---------------------------------------------------------------- 06.4 · IoU and Dice, in the series' evaluation


def _mask_pair(g) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(course.randint(g, 1, 12) for _ in range(course.randint(g, 1, 3)))
    p_share, y_share = course.uniform(g, 0, 1), course.uniform(g, 0, 1)
    pred = torch.rand(shape, generator=g).numpy() < p_share
    target = torch.rand(shape, generator=g).numpy() < y_share
    return pred, target


@contextlib.contextmanager
def patched_scores(fn: Callable | None) -> Iterator[None]:
    """The series' evaluation (``unetpp.evaluate``) with ``unetpp.iou_dice`` replaced by ``fn(pred, target)``;
    nothing replaced when None."""
    if fn is None:
        yield
        return
    original = unetpp.iou_dice
    unetpp.iou_dice = lambda pred, target: tuple(float(v) for v in fn(pred, target))
    try:
        yield
    finally:
        unetpp.iou_dice = original


# The check's training: the series' nuclei task and cached training (unetpp.nuclei_run) at a lab size (a tenth of
# the cpu filters' cost, a third of its steps), scored on the first 256 rows of each test strip.
LAB_RUN = {**unetpp.NUCLEI["smoke"], "filters": [4, 8, 16, 32, 64], "steps": 100, "batch_size": 4, "lr": 5e-3,
           "crop": 256}
LEVELS = (1, 2, 3, 4)


def _test_regions(task: unetpp.Task, crop: int | None) -> list[dict[str, Any]]:
    if not crop:
        return task.test
    return [{**r, "image": r["image"][:crop], "mask": r["mask"][:crop]} for r in task.test]


def lab_models(run: dict, seeds: Sequence[int], device: str = "cpu") -> dict[int, tuple[unetpp.NestedUNet, list]]:
    """Per seed: UNet++ DS trained by the series (``unetpp.nuclei_run``, cached) on the seed's nuclei split, and the
    seed's test strips (cut to ``run['crop']`` rows when set)."""
    out = {}
    kw = unetpp.model_kwargs(run)
    for s in seeds:
        task = unetpp.nuclei_task(run, None, seed=s)
        model = unetpp.load_model(unetpp.nuclei_run("UNet++ DS", task, run, s, device, progress_bar=False), kw)
        out[s] = (model, _test_regions(task, run.get("crop")))
    return out


def lab_scores(scores: Callable | None, models: dict[int, tuple[unetpp.NestedUNet, list]]) -> dict[str, Any]:
    """Notebook 3's evaluation with ``scores`` patched in as ``iou_dice`` (the series' when None): per seed the IoU
    and Dice of L1-L4 (the heads of one full pass), accurate mode, and L2 scored again by the pruned forward."""
    out: dict[str, Any] = {}
    with patched_scores(scores):
        for s, (model, test) in models.items():
            full = unetpp.evaluate(model, test)
            out[s] = {f"L{d}": tuple(full["heads"][d - 1]) for d in LEVELS}
            out[s]["accurate"] = tuple(full["mean"])
            out[s]["L2 pruned"] = tuple(unetpp.evaluate(model, test, level=2)["heads"][-1])
    return out


def lab_claims(scores: dict[int, dict[str, tuple[float, float]]], name: str = "lab-06.4"):
    """The claims table of a lab-sized run, in the shape of notebook 3's: L2 and L3 about as accurate as L4, L1's
    cost (the paper's, at a size that cannot test them), no collapsed level (a control), and the pruned forward
    scoring exactly as the full network's head (a check)."""
    seeds = sorted(scores)
    iou = {k: [scores[s][k][0] for s in seeds] for k in scores[seeds[0]]}
    margin = unetpp.EQUIV_MARGIN
    book = claims.Claims(name, cfg=config.Config(profile="lab", seed=seeds[0]))
    small = (f"a lab-sized run ({len(seeds)} seeds on three nuclei images, small networks, short training) cannot "
             "test the paper's DSB2018 claim")
    book.add("l2-l3-close-to-l4", f"L2 and L3 are about as accurate as L4 (within ±{100 * margin:.2f} IoU points)",
             "DLMIA Fig. 3", "-0.2 / -0.3 points",
             decision=claims.all_of(*[claims.equivalent(iou[f"L{d}"], iou["L4"], margin=margin, scale=100,
                                                        unit=" points") for d in (2, 3)]),
             kind="paper", faithful=False, unfaithful_because=small)
    book.add("l1-cost", f"L1 loses about 1.0 IoU point against L4 (within ±{100 * margin:.2f})", "DLMIA Fig. 3",
             "-1.0 points", decision=claims.equivalent(np.subtract(iou["L1"], iou["L4"]), np.full(len(seeds), -0.01),
                                                        margin=margin, scale=100, unit=" points"),
             kind="paper", faithful=False, unfaithful_because=small)
    worst = min(min(iou[f"L{d}"]) for d in LEVELS)
    book.add("no-collapse", "no pruned level of any seed collapses (IoU above 0.50)", "ours", "—",
             decision=claims.exact(worst, threshold=0.5, scale=100, unit=" %"), kind="control")
    same = iou["L2 pruned"] == iou["L2"]
    book.add("pruned-is-the-head", "L2 run alone scores exactly as the full network's head 2", "DLMIA Sec. 2",
             "identical", "identical on every seed" if same else "differs", holds=same, kind="check")
    return book.table()


@exercise("06.4", "iou_dice", points=3)
def _check_iou_dice(student, g) -> int:
    """Goal: the segmentation scores (IoU and Dice of binary masks, pooled over pixels), and that this one function in
    the series' evaluation of the pruned levels gives the same claims table

    Hint: notebook 2, section 4 and notebook 3, section 2: IoU = |P∩Y| / |P∪Y| and Dice = 2|P∩Y| / (|P| + |Y|) over all
    pixels of the two boolean masks; both are 1 when both masks are empty (nothing to find, nothing found); return two
    floats
    """
    n = 0
    cases = [(np.zeros((3, 4), bool), np.zeros((3, 4), bool)), (np.zeros(5, bool), np.ones(5, bool))]
    cases += [_mask_pair(g) for _ in range(16)]
    for pred, target in cases:
        case = (f"iou_dice(pred with {int(pred.sum())} of {pred.size} pixels set, target with {int(target.sum())}, "
                f"{int(np.logical_and(pred, target).sum())} in common; shape {pred.shape})")
        kept = pred.copy(), target.copy()
        got = course.call(student, case, pred, target)
        n += 1
        assert np.array_equal(pred, kept[0]) and np.array_equal(target, kept[1]), f"{case} changed its inputs"
        assert isinstance(got, (tuple, list)) and len(got) == 2, f"{case}: return (iou, dice)"
        want = unetpp.iou_dice(pred, target)
        for label, v, w in (("IoU", got[0], want[0]), ("Dice", got[1], want[1])):
            assert abs(float(v) - float(w)) < 1e-12, f"{case}: {label} = {float(v):.6f}, the series' {float(w):.6f}"
    # the integration: notebook 3's evaluation with the student's scores, against the reference's, same networks
    first = course.randint(g, 0, 10_000)
    seeds = [first, first + 1]
    models = lab_models(LAB_RUN, seeds)
    reference = lab_scores(None, models)
    mine = course.call(lab_scores, f"the series' evaluation of seeds {seeds} with your scores", student, models)
    course.same_runs(mine, reference, lambda s: f"the series' evaluation (UNet++ DS, filters {LAB_RUN['filters']}, "
                                                f"seed {s}) with your scores: (IoU, Dice) of")
    course.same_claims_table(lab_claims(mine), lab_claims(reference), "your scores")
    return n + len(seeds)


# ---------------------------------------------------------------- 06.5 · predict, then run


def unetpp_experiment() -> dict[str, Any]:
    """The lab's "predict, then run" experiment, on networks and masks set by hand. Deterministic; each entry is one
    prediction.

    Goal: how many tensors a node concatenates and how wide its block is, whether pruning changes what a head computes,
    the scale of the deep-supervision loss, and the scores' edge cases

    Hint: notebook 1 (section 1: Eq. 1 and the Keras layers), notebook 2 (section 1: the loss) and notebook 3 (section
    1: why L^d is the full network's head d) explain them
    """
    out: dict[str, Any] = {}
    inputs = {kind: reference_inputs(kind, 4)[0] for kind in ("nested", "plus")}
    out["inputs_of_x13_in_unetpp"] = len(inputs["nested"][1, 3])
    out["inputs_of_x13_in_unetplus"] = len(inputs["plus"][1, 3])
    keras = unetpp.build("UNet++", filters=unetpp.PAPER_FILTERS, bn=False, up="transpose")
    out["in_channels_of_x03_keras_layers"] = keras.blocks["03"][0].in_channels
    torch.manual_seed(0)
    net = unetpp.build("UNet++ DS", filters=(4, 8, 16, 32, 64)).train()  # BatchNorm on the batch's statistics
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        l2, full = net(x, 2), net(x)
    out["L2_output_equals_head_2_in_train_mode"] = bool(torch.equal(l2[-1], full[1]))
    y = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    one = unetpp.bce_dice_loss(full[0], y)
    out["ds_loss_of_4_identical_heads_over_one_head"] = round(float(unetpp.deep_supervision_loss([full[0]] * 4, y)
                                                                    / one), 6)
    nothing = torch.zeros(1, 1, 8, 8)
    out["loss_when_mask_and_prediction_are_both_empty"] = round(float(unetpp.bce_dice_loss(nothing - 40, nothing)), 4)
    empty = np.zeros((4, 4), bool)
    p, t = empty.copy(), empty.copy()
    p[0, :2], t[0, 1:3] = True, True  # two pixels each, one in common
    out["dice_when_iou_is_one_third"] = round(float(unetpp.iou_dice(p, t)[1]), 6)
    return out


course.predictions_exercise("06.5", unetpp_experiment)
