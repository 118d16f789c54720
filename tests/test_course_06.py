"""The 06_unetpp course lab: its solutions pass their checks against unetpp.py, its stubs raise NotImplementedError,
its handout is clean, each check rejects plausible wrong answers, and the "predict, then run" answers match the run."""

import labs
import numpy as np
import torch
import torch.nn.functional as F
from prunebook import course

LAB = labs.Lab("06_unetpp", ids=["06.1", "06.2", "06.3", "06.4", "06.5"], written_ids=["06.q1"],
               preamble=("import numpy as np\nimport torch\nimport torch.nn.functional as F\nimport unetpp\n"
                         "from prunebook import course\n"),
               seeds={"06.1": [0, 7, 12345], "06.2": [0, 7], "06.3": [0, 7], "06.4": [0], "06.5": [0]},
               experiment="unetpp_experiment")


# ---------------------------------------------------------------- plausible wrong answers


def _inputs(plus_dense=False, short=False, below=(1, -1), up_first=False, unet_col=0):
    def node_inputs(kind, depth):
        if kind == "unet":
            nodes = [(i, depth - i - unet_col) for i in range(depth - 1, -1, -1)]
            out = {(i, j): [(i, 0), (i + 1, j - 1)] for i, j in nodes if j > 0}
        else:
            out = {}
            for j in range(1, depth + 1):
                for i in range(depth + 1 - j):
                    dense = kind == "nested" or plus_dense
                    row = [(i, k) for k in range(j - 1 if short and j > 1 else j)] if dense else [(i, j - 1)]
                    out[i, j] = row + [(i + below[0], j + below[1])]
        if up_first:
            out = {k: v[-1:] + v[:-1] for k, v in out.items()}
        return out
    return node_inputs


def _forward(all_nodes=False, last_only=False, up_first=False, mode="bilinear"):
    def forward_at_level(net, x, level):
        inputs = course.lookup("06.1").run.__globals__["reference_inputs"](net.kind, net.depth)[0]
        out = {}
        for i, j in net.nodes:
            if i + j > level and not all_nodes:
                continue
            if j == 0:
                inp = x if i == 0 else F.max_pool2d(out[i - 1, 0], 2)
            else:
                *row, below = inputs[i, j]
                up = (net.ups[f"{i}{j}"](out[below]) if net.up_mode == "transpose"
                      else F.interpolate(out[below], scale_factor=2, mode=mode,
                                         **({"align_corners": False} if mode == "bilinear" else {})))
                parts = [out[s] for s in row]
                inp = torch.cat([up] + parts if up_first else parts + [up], dim=1)
            out[i, j] = net.blocks[f"{i}{j}"](inp)
        heads = [net.heads[str(j)](out[0, j]) for j in net.head_levels if j <= level]
        return heads[-1:] if last_only else heads
    return forward_at_level


def _loss(reduce="mean", per_image=False, half=0.5, smooth=1.0, detach=False):
    def ds_loss(heads, target):
        def one(logits):
            bce = F.binary_cross_entropy_with_logits(logits, target)
            p = torch.sigmoid(logits)
            if per_image:
                dims = tuple(range(1, p.ndim))
                dice = ((2 * (p * target).sum(dims) + smooth) / (p.sum(dims) + target.sum(dims) + smooth)).mean()
            else:
                dice = (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)
            return half * bce - dice

        losses = torch.stack([one(h) for h in heads])
        loss = losses.mean() if reduce == "mean" else losses.sum()
        return torch.tensor(loss.item()) if detach else loss
    return ds_loss


def _scores(iou_over="union", empty=1.0, dice_over="total"):
    def iou_dice(pred, target):
        p, y = np.asarray(pred, bool), np.asarray(target, bool)
        inter, union, total = (p & y).sum(), (p | y).sum(), p.sum() + y.sum()
        iou = (inter / (union if iou_over == "union" else total)) if union else empty
        dice = (2 * inter / (total if dice_over == "total" else union)) if total else empty
        return float(iou), float(dice)
    return iou_dice


PREDICTED_06 = {"inputs_of_x13_in_unetpp": 4, "inputs_of_x13_in_unetplus": 2, "in_channels_of_x03_keras_layers": 128,
                "L2_output_equals_head_2_in_train_mode": True, "ds_loss_of_4_identical_heads_over_one_head": 1.0,
                "loss_when_mask_and_prediction_are_both_empty": -1.0, "dice_when_iou_is_one_third": 0.5}

WRONG_06 = {
    "06.1": {"UNet+ given the dense skips": _inputs(plus_dense=True),
             "the same-row skips stop one short (k < j - 1)": _inputs(short=True),
             "the node below taken from x^{i+1,j}": _inputs(below=(1, 0)),
             "the up-sampled node first": _inputs(up_first=True),
             "U-Net's decoder nodes at x^{i,d-i-1}": _inputs(unet_col=1)},
    "06.2": {"every node computed, the heads read after": _forward(all_nodes=True),
             "only the last head returned": _forward(last_only=True),
             "the up-sampled tensor concatenated first": _forward(up_first=True),
             "nearest-neighbour up-sampling": _forward(mode="nearest")},
    "06.3": {"the sum over the heads": _loss(reduce="sum"), "the Dice per image, then averaged": _loss(per_image=True),
             "the BCE not halved": _loss(half=1.0), "no smoothing term": _loss(smooth=0.0),
             "computed outside autograd": _loss(detach=True)},
    "06.4": {"IoU over |P| + |Y|": _scores(iou_over="total"), "two empty masks scored 0": _scores(empty=0.0),
             "Dice over the union": _scores(dice_over="union")},
    "06.5": {"x^{1,3} without x^{1,0}": {**PREDICTED_06, "inputs_of_x13_in_unetpp": 3},
             "the Keras x^{0,3} counted with bilinear up-sampling": {**PREDICTED_06,
                                                                     "in_channels_of_x03_keras_layers": 160},
             "batch statistics break the pruned head": {**PREDICTED_06, "L2_output_equals_head_2_in_train_mode": False},
             "the heads' losses summed": {**PREDICTED_06, "ds_loss_of_4_identical_heads_over_one_head": 4.0},
             "1 for True": {**PREDICTED_06, "L2_output_equals_head_2_in_train_mode": 1}},
}


class TestLab(labs.LabTests):
    lab, wrong, predicted = LAB, WRONG_06, PREDICTED_06
