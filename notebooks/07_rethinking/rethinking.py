"""Rethinking the Value of Network Pruning (Liu, Sun, Zhou, Huang & Darrell, ICLR 2019): this series' method code.

The paper puts one question to every pruning method: once a large network has been pruned, is fine-tuning the
weights it inherited better than training the same small architecture from a fresh random initialisation? The
notebooks answer it with the pieces below.

- Data and architectures: :func:`load_data`, architecture specs (plain dicts, so they can key the cache),
  :func:`build`, :func:`arch_of`, ``prunebook.models.vgg_widths``.
- Budgets: :func:`scratch_b_epochs` (Scratch-B: the small model gets the large model's computation),
  :func:`macs` and :func:`sparse_macs` (multiply-accumulates, with zero weights skipped for unstructured pruning).
- L1-norm filter pruning (Li et al., 2017), a *predefined* target architecture: :func:`resnet_l1_widths`,
  :func:`vgg_l1_widths`, :func:`filters_to_keep`, :func:`l1_prune` (on ``prunebook.prune.l1_keep``).
- Network slimming (Liu et al., 2017), an *automatic* one: :func:`slim_prune` (on
  ``prunebook.prune.slimming_keep``); :func:`vgg_for_params` builds the uniformly thinned and the guided VGGs it
  is compared with at equal parameter count, as the paper does (:func:`vgg_for_macs` at equal FLOPs, a second
  view); :func:`latency_side_by_side` times models in interleaved rounds.
- Both remove channels through ``prunebook.prune.remove_channels`` (torch-pruning: the model really shrinks).
- Unstructured magnitude pruning (Han et al., 2015) and lottery tickets (Frankle & Carbin, 2019):
  :func:`magnitude_masks` (and :func:`magnitude_masks_of`, with its cache key), :func:`apply_masks`,
  :func:`sparse_he_init_`.
- Runs: :func:`train_run` trains one network through the cache; :func:`summarize` and :func:`fmt` give mean ±
  spread over seeds for the tables. Claims are decided by ``prunebook.claims`` (paired over seeds), with
  :data:`NONINFERIORITY_MARGIN` for "at least as accurate as" and "comparable".
"""

from __future__ import annotations

import copy
import math
import statistics
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from prunebook import data, models, prune, train
from prunebook.config import dry_run_requested, dry_steps
from torch import nn
from torch.nn.utils import prune as torch_prune

NAMESPACE = "07_rethinking"

# ---------------------------------------------------------------- data


@dataclass
class Data:
    """A training set, a test set, and a one-image example for tracing and counting."""

    train: data.ImageSet
    test: data.ImageSet
    key: dict[str, Any]

    @property
    def example(self) -> torch.Tensor:
        return self.test.x[:1]

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


DRY_IMAGES = 20  # a dry run's training and test sets: fewer than the paper's batch of 64 (whose VGG-19 step takes 4 s)


def load_data(dataset: str, n_train: int, n_test: int, data_root: str | None = None, seed: int = 0) -> Data:
    """``fashion_mnist`` (1×28×28, kept at its own size) or ``cifar10``/``cifar100`` (3×32×32), standardised with
    the training subset's statistics. ``n_train``/``n_test`` of 0 keep the whole split; subsets are stratified. A
    dry run of the paper profile keeps :data:`DRY_IMAGES` of each (its CIFAR is stand-in data)."""
    if dry_run_requested():
        n_train, n_test = (dry_steps(n or DRY_IMAGES, DRY_IMAGES) for n in (n_train, n_test))
    if dataset == "fashion_mnist":
        full_train, full_test = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
    elif dataset in data.CIFAR:
        full_train, full_test = data.cifar(dataset, "train", data_root), data.cifar(dataset, "test", data_root)
    else:
        raise ValueError(f"dataset={dataset!r}; choose fashion_mnist, cifar10 or cifar100")
    tr = data.stratified_subset(full_train, n_train, seed) if n_train else full_train
    te = data.stratified_subset(full_test, n_test, seed) if n_test else full_test
    tr, te = data.standardize(tr, te)
    return Data(tr, te, {"dataset": dataset, "n_train": len(tr), "n_test": len(te), "subset_seed": seed})


# ---------------------------------------------------------------- architectures as plain dicts


def resnet_arch(depth: int, width: int = 16, mids: Sequence[int] | None = None, in_channels: int = 3,
                num_classes: int = 10) -> dict[str, Any]:
    """A CIFAR ResNet; ``mids`` are the widths of each block's first conv (what filter pruning thins)."""
    n = (depth - 2) // 6
    mids = list(mids) if mids is not None else [s * width for s in (1, 2, 4) for _ in range(n)]
    return {"family": "resnet", "depth": depth, "width": width, "mids": [int(m) for m in mids],
            "in_channels": in_channels, "num_classes": num_classes}


def vgg_arch(depth: int, widths: Sequence[int], classifier: str = "linear", in_channels: int = 3,
             num_classes: int = 10) -> dict[str, Any]:
    """A VGG with BN; ``widths`` gives each conv's width (a pruned VGG is just other widths)."""
    return {"family": "vgg", "depth": depth, "widths": [int(w) for w in widths], "classifier": classifier,
            "in_channels": in_channels, "num_classes": num_classes}


def build(arch: dict[str, Any]) -> nn.Module:
    """A freshly initialised network of the architecture ``arch`` (He init, BN at 1/0)."""
    if arch["family"] == "resnet":
        return models.resnet_cifar(arch["depth"], arch["num_classes"], arch["in_channels"], width=arch["width"],
                                   mids=arch["mids"])
    if arch["family"] == "vgg":
        return models.vgg_cifar(arch["depth"], arch["num_classes"], arch["in_channels"], widths=arch["widths"],
                                classifier=arch["classifier"])
    raise ValueError(f"unknown family {arch['family']!r}")


def arch_of(model: nn.Module, like: dict[str, Any]) -> dict[str, Any]:
    """The architecture spec of a (pruned) ``model`` of the same family as ``like``: its widths read back."""
    if like["family"] == "resnet":
        return {**like, "mids": [b.conv1.out_channels for b in model.blocks]}
    return {**like, "widths": prune.conv_widths(model)}


def vgg_stages(depth: int) -> list[int]:
    """The stage (0 to 4, separated by max-pools) of each conv of VGG-``depth``."""
    stage, out = 0, []
    for v in models.VGG_LAYERS[depth]:
        if v == "M":
            stage += 1
        else:
            out.append(stage)
    return out


def describe(arch: dict[str, Any]) -> str:
    widths = arch["mids"] if arch["family"] == "resnet" else arch["widths"]
    name = "ResNet" if arch["family"] == "resnet" else "VGG"
    return f"{name}-{arch['depth']} [{', '.join(map(str, widths))}]"


# ---------------------------------------------------------------- budgets


def macs(model_or_arch: nn.Module | dict[str, Any], example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (what the paper calls FLOPs). An architecture spec is built on
    PyTorch's ``meta`` device: shapes only, no weights, no arithmetic, so counting is quick."""
    if isinstance(model_or_arch, dict):
        with torch.device("meta"):
            model = build(model_or_arch)
        return prune.count_macs(model, example.to("meta"))
    return prune.count_macs(model_or_arch, example)


@torch.no_grad()
def sparse_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates counting only non-zero conv weights (the official code's count for unstructured
    pruning); linear layers count in full. Equals :func:`macs` for a dense conv/linear network."""
    total = 0

    def conv_hook(m, inputs, output):
        nonlocal total
        total += int((m.weight != 0).sum()) * output.shape[-2] * output.shape[-1] * output.shape[0]

    def linear_hook(m, inputs, output):
        nonlocal total
        total += m.weight.numel() * (output.numel() // output.shape[-1])

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def scratch_b_epochs(epochs: int, macs_large: float, macs_small: float, cap: float | None = None) -> int:
    """Scratch-B: train the pruned model for as many epochs as costs the large model's training,
    ``epochs × FLOPs_large / FLOPs_small`` (rounded down, as the official scripts do).

    ``cap`` limits the factor: the paper trains ImageNet Scratch-B models for at most twice the epochs
    (``cap=2``); its CIFAR runs are uncapped (``cap=None``)."""
    if epochs < 0 or macs_small <= 0 or macs_large <= 0:
        raise ValueError("need epochs >= 0 and positive FLOP counts")
    factor = macs_large / macs_small
    if cap is not None and cap > 0:
        factor = min(factor, cap)
    return int(epochs * factor + 1e-9)


# ---------------------------------------------------------------- L1-norm filter pruning (Li et al., 2017)


# Li et al.'s pruned ResNets (their Table 1; the official res56prune.py / res110prune.py): for each stage, the
# fraction of every block's first-conv filters removed, and the blocks left whole (layers Li et al. found
# sensitive to pruning). ResNet-20 is this series' scaled-down analogue: the same stage fractions, skipping the
# same kinds of blocks (first block of stages 2 and 3, the last block; B also the last block of stage 1).
RESNET_L1_PLANS: dict[tuple[int, str], tuple[tuple[float, float, float], tuple[int, ...]]] = {
    (56, "A"): ((0.1, 0.1, 0.1), (7, 9, 18, 26)),
    (56, "B"): ((0.6, 0.3, 0.1), (7, 8, 9, 16, 18, 26)),
    (110, "A"): ((0.5, 0.0, 0.0), (17,)),
    (110, "B"): ((0.5, 0.4, 0.3), (17, 18, 36)),
    (20, "A"): ((0.1, 0.1, 0.1), (3, 6, 8)),
    (20, "B"): ((0.6, 0.3, 0.1), (2, 3, 6, 8)),
}


def resnet_l1_widths(depth: int, variant: str, width: int = 16,
                     fractions: Sequence[float] | None = None) -> list[int]:
    """The first-conv width of every block of ResNet-``depth``-``variant``: ``int(c · (1 − p))`` filters kept (at
    least one), p the stage's fraction from the plan or from ``fractions``; the plan's sensitive blocks stay whole."""
    if (depth, variant) not in RESNET_L1_PLANS:
        raise ValueError(f"no L1-norm plan for ResNet-{depth}-{variant}; known: {sorted(RESNET_L1_PLANS)}")
    plan, skip = RESNET_L1_PLANS[(depth, variant)]
    fractions = plan if fractions is None else fractions
    n = (depth - 2) // 6
    widths = []
    for b in range(3 * n):
        c = width * 2 ** (b // n)
        widths.append(c if b in skip else thinned(c, fractions[b // n]))
    return widths


def thinned(width: int, fraction: float) -> int:
    """The filters a conv of ``width`` keeps when ``fraction`` of them is removed: ``int(width · (1 − p))``, at least
    one (Li et al.'s rounding)."""
    return max(1, int(width * (1 - fraction) + 1e-9))


def vgg_l1_widths(depth: int, widths: Sequence[int]) -> list[int]:
    """Li et al.'s VGG-16-A pattern for any VGG: halve the first conv and every conv of the last two stages."""
    stages = vgg_stages(depth)
    return [w // 2 if i == 0 or stages[i] >= 3 else w for i, w in enumerate(widths)]


def prunable_convs(model: nn.Module, arch: dict[str, Any]) -> list[nn.Conv2d]:
    """The convs whose output width the architecture spec controls (ResNet: each block's first conv)."""
    if arch["family"] == "resnet":
        return [b.conv1 for b in model.blocks]
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def filters_to_keep(model: nn.Module, arch: dict[str, Any], target: dict[str, Any]) -> dict[nn.Conv2d, torch.Tensor]:
    """For each prunable conv of ``model`` (architecture ``arch``), the largest-L1 filters that ``target`` (same
    family, narrower) keeps."""
    new = target["mids"] if arch["family"] == "resnet" else target["widths"]
    return {conv: prune.l1_keep(conv, n) for conv, n in zip(prunable_convs(model, arch), new)}


def l1_prune(model: nn.Module, arch: dict[str, Any], target: dict[str, Any], example: torch.Tensor) -> nn.Module:
    """Prune a trained ``model`` of architecture ``arch`` down to ``target``, keeping the largest-L1 filters of each
    conv. Returns the (really smaller) model with the inherited weights."""
    return prune.remove_channels(model, example, filters_to_keep(model, arch, target))


# ---------------------------------------------------------------- network slimming (Liu et al., 2017)


def slim_prune(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    """Network slimming's pruning step: remove ``ratio`` of all channels, the smallest |γ| first, in place."""
    return prune.remove_channels(model, example, prune.slimming_keep(model, ratio))


def stage_keep_fractions(arch: dict[str, Any], base: dict[str, Any]) -> list[float]:
    """For a pruned VGG, the mean fraction of channels kept in each of its five stages."""
    stages = vgg_stages(arch["depth"])
    out = []
    for s in range(max(stages) + 1):
        pairs = [(w, b) for w, b, st in zip(arch["widths"], base["widths"], stages) if st == s]
        out.append(sum(w / b for w, b in pairs) / len(pairs))
    return out


def vgg_for_macs(depth: int, base: Sequence[int], target_macs: float, example: torch.Tensor,
                 stage_fractions: Sequence[float] | None = None, classifier: str = "linear",
                 num_classes: int = 10) -> dict[str, Any]:
    """The VGG with ``target_macs`` multiply-accumulates (the closest one) whose every conv of stage s keeps
    ``stage_fractions[s]`` of its ``base`` width, all scaled together: *guided pruning* (the paper's Section 5)
    with a per-stage pattern, *uniform pruning* (every layer the same fraction of ``base``) without one."""
    return vgg_matched(depth, base, target_macs, example, stage_fractions, classifier, num_classes, by="macs")


def vgg_for_params(depth: int, base: Sequence[int], target_params: float, example: torch.Tensor,
                   stage_fractions: Sequence[float] | None = None, classifier: str = "linear",
                   num_classes: int = 10) -> dict[str, Any]:
    """As :func:`vgg_for_macs`, but the VGG with ``target_params`` parameters (the closest one): the paper compares
    pruned, guided and uniform architectures at equal parameter count (its Figures 3 and 5)."""
    return vgg_matched(depth, base, target_params, example, stage_fractions, classifier, num_classes, by="params")


def params(arch: dict[str, Any]) -> int:
    """Parameters of an architecture spec (built on the ``meta`` device: shapes only)."""
    with torch.device("meta"):
        return prune.count_parameters(build(arch))


def vgg_matched(depth: int, base: Sequence[int], target: float, example: torch.Tensor,
                stage_fractions: Sequence[float] | None = None, classifier: str = "linear", num_classes: int = 10,
                by: str = "params") -> dict[str, Any]:
    """The VGG whose size ``by`` (``"params"`` or ``"macs"``) is closest to ``target``, every conv of stage s keeping
    ``stage_fractions[s]`` of its ``base`` width (all 1 for a uniform network), the fractions scaled together."""
    if by not in ("params", "macs"):
        raise ValueError(f"by={by!r}; choose 'params' or 'macs'")
    in_ch, stages = int(example.shape[1]), vgg_stages(depth)
    fractions = [1.0] * (max(stages) + 1) if stage_fractions is None else list(stage_fractions)

    def arch(f):
        widths = [max(1, round(w * min(1.0, fractions[s] * f))) for w, s in zip(base, stages)]
        return vgg_arch(depth, widths, classifier, in_ch, num_classes)

    size = (lambda a: macs(a, example)) if by == "macs" else params
    return _closest(arch, size, 1.0 / max(min(fractions), 1e-3), target, steps=40)


def _closest(arch: Callable[[float], dict[str, Any]], size: Callable[[dict[str, Any]], float], hi: float,
             target: float, steps: int) -> dict[str, Any]:
    """Bisect the width factor f in [0, hi] of ``arch(f)`` (``size`` grows with f) and return the architecture at
    either end of the final interval whose size is closest to ``target``. Widths are whole numbers, so late steps
    revisit the same architecture: each one is sized once."""
    sizes: dict[str, float] = {}

    def size_of(a: dict[str, Any]) -> float:
        key = repr(sorted(a.items()))
        if key not in sizes:
            sizes[key] = size(a)
        return sizes[key]

    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if size_of(arch(mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((arch(f) for f in (lo, hi)), key=lambda a: abs(size_of(a) - target))


def latency_side_by_side(models: dict[str, nn.Module], batch: torch.Tensor, rounds: int = 15, repeats: int = 5,
                         warmup: int = 3) -> dict[str, list[float]]:
    """Forward-pass milliseconds of several models (in eval mode) on ``batch``, timed side by side in paired
    rounds by ``prunebook.prune.latency_rounds``: per model, one median per round. A dry run of the paper profile
    times two rounds of one call after one warm-up (a round of full-width VGGs takes seconds on a CPU)."""
    rounds, repeats, warmup = dry_steps(rounds), dry_steps(repeats, 1), dry_steps(warmup, 1)
    for m in models.values():
        m.eval()
    seconds = prune.latency_rounds({name: (lambda m=m: m(batch)) for name, m in models.items()}, rounds, repeats,
                                   warmup)
    return {name: [1000 * t for t in ts] for name, ts in seconds.items()}


# ---------------------------------------------------------------- unstructured pruning and lottery tickets


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Han et al.'s criterion on a copy of ``model``: one global |w| threshold over all conv weights, removing
    ``sparsity`` of them. Returns the masks keyed by parameter name (``features.0.weight``)."""
    clone = copy.deepcopy(model)  # convs only, as the official weight-level code
    prune.global_magnitude(clone, sparsity, params=prune.prunable(clone, types=(nn.Conv2d,)))
    return prune.masks(clone)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``masks`` to ``model`` (``torch.nn.utils.prune``): those weights stay zero through training."""
    modules = dict(model.named_modules())
    for key, mask in masks.items():
        owner, _, name = key.rpartition(".")
        torch_prune.custom_from_mask(modules[owner], name, mask.to(getattr(modules[owner], name).device))
    return model


@torch.no_grad()
def sparse_he_init_(model: nn.Module) -> nn.Module:
    """Re-draw every masked conv's weights from N(0, 2/n), n = (kept weights) / (input channels): He's fan-out
    init counted over the surviving connections, as the official scratch scripts do for sparse models."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and hasattr(m, "weight_mask"):
            n = float(m.weight_mask.sum()) / m.in_channels
            m.weight_orig.normal_(0.0, math.sqrt(2.0 / max(n, 1e-12)))
    train.refresh_masked_weights(model)
    return model


def layer_sparsities(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """The fraction of zeros in each mask."""
    return {k: 1.0 - float(m.float().mean()) for k, m in masks.items()}


def random_masks_like(model: nn.Module, sparsities: Sequence[float], seed: int) -> dict[str, torch.Tensor]:
    """Random masks for the model's convs with the given per-layer sparsities (exact counts), drawn by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    names = {m: n for n, m in model.named_modules()}
    for (m, _), s in zip(prune.prunable(model, types=(nn.Conv2d,)), sparsities):
        out[f"{names[m]}.weight"] = prune.random_mask(m.weight, s, g)
    return out


# ---------------------------------------------------------------- runs through the cache


@dataclass(frozen=True)
class Recipe:
    """How a network is trained: SGD with momentum and the given schedule (``step``: ×0.1 at 50 % and 75 %)."""

    epochs: int
    lr: float = 0.1
    schedule: str = "step"
    weight_decay: float = 1e-4
    batch_size: int = 64
    crop_padding: int = 4
    flip: bool = True
    momentum: float = 0.9

    def key(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def but(self, **changes: Any) -> Recipe:
        return Recipe(**{**self.__dict__, **changes})


def train_run(tag: str, key: dict[str, Any], make_model: Callable[[], nn.Module], dataset: Data, recipe: Recipe,
              seed: int, device: str = "cpu", l1_bn: float = 0.0, progress_bar: bool = True) -> dict[str, Any]:
    """Train one network, or return the stored result of the same run.

    ``key`` must say everything ``make_model`` depends on (architecture, and for inherited weights the parent
    run and the pruning); the cache key adds the recipe, data and seed. ``torch.manual_seed(seed)`` runs just
    before ``make_model``, so a fresh initialisation is fixed by the seed. ``l1_bn`` adds network slimming's
    penalty λ·Σ|γ| on BN scales. Returns the test accuracy and loss, the history, the trained weights (CPU),
    the architecture, parameter and MAC counts, and the seconds spent training. A dry run of the paper profile
    trains one epoch (two steps of its stand-in set)."""
    recipe = recipe.but(epochs=dry_steps(recipe.epochs, 1))
    config = {"tag": tag, **key, "recipe": recipe.key(), "data": dataset.key, "seed": seed, "l1_bn": l1_bn}

    def fit(model: nn.Module, checkpoint) -> list[dict[str, Any]]:
        callbacks = [prune.BNL1Penalty(l1_bn)] if l1_bn else []
        return train.fit(model, dataset.train, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                         momentum=recipe.momentum, weight_decay=recipe.weight_decay, schedule=recipe.schedule,
                         crop_padding=recipe.crop_padding, flip=recipe.flip, device=device, callbacks=callbacks,
                         checkpoint=checkpoint, seed=seed, desc=tag, progress_bar=progress_bar)

    def measure(model: nn.Module, history: list[dict[str, Any]]) -> dict[str, Any]:
        result = train.evaluate(model, dataset.test, device=device)
        model.to("cpu", memory_format=torch.contiguous_format)  # the counts run on the CPU
        example = dataset.example
        return {"acc": result["acc"], "loss": result["loss"], "epochs": recipe.epochs,
                "train_seconds": sum(h["seconds"] for h in history),
                "params": prune.count_parameters(model), "nonzero": prune.count_nonzero(model),
                "macs": prune.count_macs(model, example), "sparse_macs": sparse_macs(model, example)}

    return train.cached_run(NAMESPACE, config, make_model, fit, seed, measure)


def magnitude_masks_of(arch: dict[str, Any], trained: dict[str, Any], recipe: Recipe, seed: int,
                       sparsity: float) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`magnitude_masks` of a trained large model (a :func:`baseline` run) and the cache key that names
    them; notebooks 03 and 04 share their runs through this key. The last few are kept in memory (the key names
    the trained model and the sparsity, so the same key gives the same masks): a notebook asks for the same masks
    once per arm, and a global sort of a full-size VGG's weights takes seconds."""
    key = {"parent": parent_key(arch, recipe, seed), "sparsity": sparsity, "criterion": "global |w|, convs"}
    name = repr(key)
    if name not in _RECENT_MASKS:
        _RECENT_MASKS[name] = magnitude_masks(train.load_model_state(build(arch), trained["state"]), sparsity)
        while len(_RECENT_MASKS) > 8:
            _RECENT_MASKS.popitem(last=False)
    return _RECENT_MASKS[name], key


_RECENT_MASKS: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()


# ---------------------------------------------------------------- seeds: mean, spread, comparisons


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = list(values)
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt(values: Sequence[float], scale: float = 100.0) -> str:
    """``93.41 ± 0.12`` (mean ± sample std over seeds, in percent)."""
    m, s = summarize(values)
    return f"{m * scale:.2f} ± {s * scale:.2f}"


# ---------------------------------------------------------------- the runs the notebooks share
# Every notebook asks for its runs through these four functions, so the same run (a trained baseline, a
# pruned architecture trained from scratch) has the same cache key wherever it is asked for, and later
# notebooks reuse what earlier ones trained.


def parent_key(arch: dict[str, Any], recipe: Recipe, seed: int, l1_bn: float = 0.0) -> dict[str, Any]:
    """What identifies a trained large model: its architecture, recipe, seed and sparsity penalty."""
    return {"arch": arch, "recipe": recipe.key(), "seed": seed, "l1_bn": l1_bn}


def baseline(arch: dict[str, Any], dataset: Data, recipe: Recipe, seed: int, device: str = "cpu",
             l1_bn: float = 0.0, **kw: Any) -> dict[str, Any]:
    """The large model, trained from its seed's initialisation (with slimming's penalty if ``l1_bn``)."""
    return train_run("baseline", {"arch": arch}, lambda: build(arch), dataset, recipe, seed, device, l1_bn, **kw)


def scratch(arch: dict[str, Any], dataset: Data, recipe: Recipe, seed: int, device: str = "cpu",
            masks: dict[str, torch.Tensor] | None = None, masks_key: dict[str, Any] | None = None,
            **kw: Any) -> dict[str, Any]:
    """``arch`` trained from a fresh random initialisation (Scratch-E or -B, by the recipe's epochs). With
    ``masks`` (unstructured pruning) the kept weights are re-drawn by :func:`sparse_he_init_`."""
    def make() -> nn.Module:
        model = build(arch)
        if masks is not None:
            apply_masks(model, masks)
            sparse_he_init_(model)
        return model

    key = {"arch": arch, "masks": masks_key}
    return train_run("scratch", key, make, dataset, recipe, seed, device, **kw)


def finetune(parent: dict[str, Any], parent_state: dict[str, torch.Tensor], how: dict[str, Any],
             prune_fn: Callable[[nn.Module], nn.Module], dataset: Data, recipe: Recipe, seed: int,
             device: str = "cpu", **kw: Any) -> dict[str, Any]:
    """Fine-tune the pruned large model: load ``parent_state`` into the parent architecture, apply ``prune_fn``
    (described by ``how`` for the cache key), train with the (small, constant) fine-tuning recipe."""
    def make() -> nn.Module:
        return prune_fn(train.load_model_state(build(parent["arch"]), parent_state))

    return train_run("finetune", {"parent": parent, "how": how}, make, dataset, recipe, seed, device, **kw)


def winning_ticket(arch: dict[str, Any], masks: dict[str, torch.Tensor], masks_key: dict[str, Any],
                   dataset: Data, recipe: Recipe, seed: int, device: str = "cpu", **kw: Any) -> dict[str, Any]:
    """Frankle & Carbin's winning ticket: the surviving weights reset to the large model's own initial values
    (``torch.manual_seed(seed)`` then :func:`build` re-creates them exactly), trained with the mask."""
    def make() -> nn.Module:
        return apply_masks(build(arch), masks)

    return train_run("ticket", {"arch": arch, "masks": masks_key}, make, dataset, recipe, seed, device, **kw)


# ---------------------------------------------------------------- the paper's numbers

# Table 1 of the paper (L1-norm filter pruning, CIFAR-10, mean ± std of 5 runs, accuracy in %).
# The unpruned, Scratch-E and Scratch-B columns were cross-checked against a second source (the plotting code
# of Renda et al., 2020, which quotes them); the fine-tuned column has no second source (see the series README).
PAPER_L1_CIFAR10 = {
    "VGG-16-A": {"unpruned": (93.63, 0.16), "fine-tuned": (93.41, 0.12), "Scratch-E": (93.62, 0.11),
                 "Scratch-B": (93.78, 0.15)},
    "ResNet-56-A": {"unpruned": (93.14, 0.12), "fine-tuned": (92.97, 0.17), "Scratch-E": (92.96, 0.26),
                    "Scratch-B": (93.09, 0.14)},
    "ResNet-56-B": {"unpruned": (93.14, 0.12), "fine-tuned": (92.67, 0.14), "Scratch-E": (92.54, 0.19),
                    "Scratch-B": (93.05, 0.18)},
    "ResNet-110-A": {"unpruned": (93.14, 0.24), "fine-tuned": (93.14, 0.16), "Scratch-E": (93.25, 0.29),
                     "Scratch-B": (93.22, 0.22)},
    "ResNet-110-B": {"unpruned": (93.14, 0.24), "fine-tuned": (92.69, 0.09), "Scratch-E": (92.89, 0.43),
                     "Scratch-B": (93.60, 0.25)},
}

# Li et al. (2017), Table 1: FLOPs removed by each pruned model (our MAC counts reproduce these; see the tests).
LI_FLOP_REDUCTION = {"VGG-16-A": 0.342, "ResNet-56-A": 0.104, "ResNet-56-B": 0.276, "ResNet-110-A": 0.159,
                     "ResNet-110-B": 0.386}

METHODS = ("fine-tuned", "Scratch-E", "Scratch-B")

# "At least as accurate as" (non-inferiority) and "comparable" (equivalence) need a margin fixed before any run.
# The paper's own yardstick is its run-to-run spread: it reports mean ± std of five runs and reads gaps of that
# size as "comparable". The margin is the largest of those standard deviations in its Table 1: 0.43 points
# (ResNet-110-B, Scratch-E). Accuracies are fractions, so the margin is 0.0043.
NONINFERIORITY_MARGIN = max(s for row in PAPER_L1_CIFAR10.values() for _, s in row.values()) / 100


def comparison_axes(ax, rows: dict[str, dict[str, tuple[float, float]]], title: str, ylabel: str = "test accuracy (%)"):
    """One panel of the paper-vs-ours figure: for each pruned model, fine-tuned / Scratch-E / Scratch-B as
    points with ± std bars, and the unpruned model's accuracy as a grey band."""
    colors = {"fine-tuned": "#D55E00", "Scratch-E": "#56B4E9", "Scratch-B": "#0072B2"}
    for i, row in enumerate(rows.values()):
        if "unpruned" in row:
            m, s = row["unpruned"]
            ax.fill_between([i - 0.35, i + 0.35], m - s, m + s, color="0.85", lw=0)
            ax.plot([i - 0.35, i + 0.35], [m, m], color="0.4", lw=1, label="unpruned" if i == 0 else None)
        for j, method in enumerate(METHODS):
            if method in row:
                m, s = row[method]
                ax.errorbar(i + (j - 1) * 0.2, m, yerr=s, fmt="o", color=colors[method], capsize=3,
                            label=method if i == 0 else None)
    ax.set_xticks(range(len(rows)), list(rows), rotation=20)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return ax
