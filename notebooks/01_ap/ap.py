"""Activate-while-Pruning (AP; Liu, Ghosh, Tan & Motani, TMLR 2023) and the dead-neuron rate it acts on.

- :class:`DeadNeuronMeter` counts the zero outputs of every ``nn.ReLU`` module with forward hooks: over training
  batches (the *dynamic* dead-neuron rate, DNR) or over a fixed set in eval mode (the *static* DNR), globally and per
  layer, with an *alive-only* variant that leaves out neurons whose incoming weights are all pruned, and the
  fraction of neurons dead for every input of the set. Passed to ``prunebook.train.fit`` as a callback, it adds the
  epoch's DNR to each history row.
- :func:`ap_select` is AP's pruning metric: among the surviving **negative** weights, the ``k`` whose value moved
  least during the round, ``|w_T − w_0|``, under one global ranking (ties by position).
- :func:`ap_step` is one pruning round of a base method X followed by AP: X takes ``rate − p2`` of the survivors and
  AP a further ``p2``, so the round ends at exactly the sparsity X alone would reach. It plugs into
  ``prunebook.prune.iterative_magnitude_pruning(prune_step=...)``.

Which weights AP may prune, how Δw is measured and the split of the budget follow the official code
(Martin1937/Activate-While-Pruning, ``prune_by_percentile_ap``); the exact DNR formula is the paper's and could not
be read, so the one here is our choice (every ReLU output element is a neuron; the global ratio of zeros).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from prunebook import cache, config, data, models, prune, train
from prunebook.train import Callback, TrainState
from torch import nn
from torch.nn.utils import prune as torch_prune

SCORES = ("delta", "magnitude", "random")


# ================================================================================================ dead neurons


def sequential_producers(model: nn.Module) -> dict[str, nn.Module]:
    """For a feed-forward network without skips (an MLP, a plain CNN): each ReLU's name → the conv or linear layer
    whose output it rectifies (the last one before it, in module order). Networks with residual additions have no
    single producer per ReLU; pass no producers for them (the alive-only rate then equals the plain one)."""
    out, last = {}, None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            last = m
        elif isinstance(m, nn.ReLU) and last is not None:
            out[name] = last
    return out


def disconnected_units(layer: nn.Module) -> torch.Tensor:
    """Output units (linear rows, conv filters) of ``layer`` whose every incoming weight is zero."""
    w = layer.weight.detach()
    return (w.reshape(w.shape[0], -1) == 0).all(1)


def _nonzero(out: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Non-zero ReLU outputs (in all, or per unit over ``dims``). ReLU outputs are >= 0, so ``sign`` is 1 where a
    neuron fires and 0 where it is dead; a float32 sum of ones is exact below 2**24 and several times faster on a
    CPU than ``count_nonzero`` (``benchmarks/dnr_hooks.py`` measures the hooks' cost)."""
    if out.numel() >= 2**24:
        return torch.count_nonzero(out) if dims is None else torch.count_nonzero(out, dim=dims)
    signs = out.sign()
    total = signs.sum(dtype=torch.float32) if dims is None else signs.sum(dim=dims, dtype=torch.float32)
    return total.round().long()


class DeadNeuronMeter(Callback):
    """Counts zeros at the output of every ``nn.ReLU`` module, while hooked (``with meter:`` or as a ``fit`` callback).

    A neuron is one output element of a ReLU (a hidden unit of a linear layer, one (channel, y, x) position of a
    conv feature map); the rate is zeros / outputs over all hooked ReLUs and all inputs seen. The *channel-level*
    rate (:meth:`rate` with ``level="channel"``) counts instead, for each input, the conv channels whose whole
    feature map is zero (a linear layer's unit is its own channel, so for a network of linear layers the two
    readings coincide); which of the two the paper uses could not be read. ``train_only``: count
    only forward passes in train mode (the batches the optimiser sees); else only eval-mode ones.
    ``producers`` (see :func:`sequential_producers`) enables the alive-only rate, which leaves out units whose
    incoming weights are all pruned (they output ReLU(bias) for every input). ``track_units`` also records, per unit,
    whether it was ever non-zero, for :meth:`never_active`."""

    def __init__(self, model: nn.Module, *, train_only: bool = True, producers: dict[str, nn.Module] | None = None,
                 track_units: bool = False):
        self.model, self.train_only, self.producers, self.track_units = model, train_only, producers or {}, track_units
        self.relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
        self._handles: list = []
        self.epochs: list[float] = []
        self.epochs_channel: list[float] = []
        self.reset()

    # ---------------------------------------------------------------- counting
    def reset(self) -> None:
        self.zeros = dict.fromkeys(self.relus, 0)
        self.outputs = dict.fromkeys(self.relus, 0)
        self.zeros_alive = dict.fromkeys(self.relus, 0)
        self.outputs_alive = dict.fromkeys(self.relus, 0)
        self.zeros_channel = dict.fromkeys(self.relus, 0)
        self.outputs_channel = dict.fromkeys(self.relus, 0)
        self.ever_active: dict[str, torch.Tensor] = {}
        # only layers with a cut-off unit need the per-unit count; the others take one flat count per call
        cut = {name: disconnected_units(layer) for name, layer in self.producers.items()}
        self._connected = {name: ~c for name, c in cut.items() if c.any()}

    def _hook(self, name: str) -> Callable:
        def count(module: nn.Module, inputs, out: torch.Tensor) -> None:
            if module.training != self.train_only:
                return
            out = out.detach()
            keep = self._connected.get(name)
            if keep is None:  # every unit has an input: one flat count
                dead = out.numel() - int(_nonzero(out))
                self.zeros_alive[name] += dead
                self.outputs_alive[name] += out.numel()
            else:  # zeros per unit (a linear unit, or a conv channel over its positions), then the connected ones
                positions = out.numel() // out.shape[1]
                per_unit = positions - _nonzero(out, dims=(0, *range(2, out.ndim)))
                dead = int(per_unit.sum())
                self.zeros_alive[name] += int(per_unit[keep.to(per_unit.device)].sum())
                self.outputs_alive[name] += int(keep.sum()) * positions
            self.zeros[name] += dead
            self.outputs[name] += out.numel()
            if out.ndim > 2:  # a conv feature map: a channel is dead on an input when its whole map is zero
                fired = _nonzero(out.flatten(2), dims=(2,))  # (inputs, channels)
                self.zeros_channel[name] += int((fired == 0).sum())
                self.outputs_channel[name] += fired.numel()
            else:  # a linear layer: each unit is a channel
                self.zeros_channel[name] += dead
                self.outputs_channel[name] += out.numel()
            if self.track_units:
                active = (out != 0).any(0)
                self.ever_active[name] = active | self.ever_active[name] if name in self.ever_active else active
        return count

    def __enter__(self) -> DeadNeuronMeter:
        self.reset()
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.relus.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---------------------------------------------------------------- results
    def rate(self, alive_only: bool = False, level: str = "element") -> float:
        """Dead outputs / outputs over every ReLU (NaN before anything was counted). ``level="channel"``: dead
        (input, channel) pairs / all such pairs, a channel being dead on an input when its whole map is zero."""
        if level not in ("element", "channel") or (alive_only and level == "channel"):
            raise ValueError(f"level={level!r}, alive_only={alive_only}: level is 'element' or 'channel', and the "
                             "alive-only rate is per element")
        zeros, outputs = (self.zeros_alive, self.outputs_alive) if alive_only else (self.zeros, self.outputs)
        if level == "channel":
            zeros, outputs = self.zeros_channel, self.outputs_channel
        total = sum(outputs.values())
        return sum(zeros.values()) / total if total else float("nan")

    def layer_rates(self) -> dict[str, float]:
        return {name: self.zeros[name] / n for name, n in self.outputs.items() if n}

    def never_active(self) -> float:
        """The fraction of neurons that were zero for every input seen (needs ``track_units=True``)."""
        if not self.ever_active:
            raise ValueError("no units tracked: make the meter with track_units=True and run some inputs through it")
        dead = sum(int((~a).sum()) for a in self.ever_active.values())
        return dead / sum(a.numel() for a in self.ever_active.values())

    # ---------------------------------------------------------------- as a fit() callback: the dynamic DNR per epoch
    def on_train_start(self, state: TrainState) -> None:
        if not self._handles:
            self.__enter__()
        self.epochs, self.epochs_channel = [], []

    def on_epoch_start(self, state: TrainState) -> None:
        self.reset()

    def on_epoch_end(self, state: TrainState) -> None:
        self.epochs.append(self.rate())
        self.epochs_channel.append(self.rate(level="channel"))
        state.history[-1]["dnr"] = self.epochs[-1]
        state.history[-1]["dnr_alive"] = self.rate(alive_only=True)
        state.history[-1]["dnr_channel"] = self.epochs_channel[-1]


@torch.no_grad()
def static_dnr(model: nn.Module, x: torch.Tensor, *, producers: dict[str, nn.Module] | None = None,
               batch_size: int = 1000) -> dict[str, float]:
    """The dead-neuron rate of ``model`` in eval mode over the inputs ``x``: the plain (per element), alive-only and
    channel-level rates, and the fraction of neurons dead for every input."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with DeadNeuronMeter(model, train_only=False, producers=producers, track_units=True) as meter:
        for i in range(0, len(x), batch_size):
            model(x[i: i + batch_size].to(device))
    model.train(was_training)
    return {"dnr": meter.rate(), "dnr_alive": meter.rate(alive_only=True), "dnr_channel": meter.rate(level="channel"),
            "never_active": meter.never_active()}


# ================================================================================================ AP's pruning metric


def _weights(params: prune.Params) -> list[torch.Tensor]:
    return [getattr(m, n).detach() for m, n in params]


def ap_select(params: prune.Params, start: Sequence[torch.Tensor], k: int, *, score: str = "delta",
              negative_only: bool = True, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """AP's choice: for each tensor of ``params``, a bool tensor marking the weights to prune.

    Candidates are the surviving (non-zero) weights, and with ``negative_only`` only the negative ones. They are
    ranked under one global order by ``score``: ``delta``, |w − w_start| (AP's metric: the weights that moved least
    since ``start``, the weights at the start of the round's training); ``magnitude``, |w|; ``random``, a random
    order drawn from ``generator``. The ``k`` lowest are chosen, ties broken by position (parameter order, then
    flat index). The last two scores and ``negative_only=False`` are the ablations."""
    if score not in SCORES:
        raise ValueError(f"score={score!r}; choose one of {', '.join(SCORES)}")
    weights = _weights(params)
    if len(start) != len(weights) or any(s.shape != w.shape for s, w in zip(start, weights)):
        raise ValueError("start must hold one tensor per parameter, of the same shapes")
    w = torch.cat([t.flatten() for t in weights])
    candidate = (w != 0) & (w < 0) if negative_only else (w != 0)
    n = int(candidate.sum())
    if not 0 <= k <= n:
        raise ValueError(f"k={k}: only {n} weights are candidates (alive{' and negative' if negative_only else ''})")
    if score == "delta":
        s = (w - torch.cat([t.detach().flatten().to(w.device) for t in start])).abs()
    elif score == "magnitude":
        s = w.abs()
    else:
        s = torch.rand(w.numel(), generator=generator).to(w.device)
    s = torch.where(candidate, s, torch.full_like(s, float("inf")))
    chosen = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
    chosen[torch.argsort(s, stable=True)[:k]] = True
    return [c.view_as(t) for c, t in zip(chosen.split([t.numel() for t in weights]), weights)]


def prune_chosen(params: prune.Params, chosen: Sequence[torch.Tensor]) -> None:
    """Add the chosen weights to the pruning masks (``torch.nn.utils.prune`` multiplies into an existing mask)."""
    for (m, n), c in zip(params, chosen):
        torch_prune.custom_from_mask(m, n, ~c)


def count_zeros(params: prune.Params) -> tuple[int, int]:
    """(zero weights, all weights) over ``params``."""
    weights = _weights(params)
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def ap_step(start: dict[str, torch.Tensor], model: nn.Module, *, p2: float = 0.02, rate: float = 0.2,
            base: Callable[[nn.Module, float, prune.Params], None] = prune.global_magnitude, score: str = "delta",
            negative_only: bool = True, seed: int = 0) -> Callable[[nn.Module, float, prune.Params], None]:
    """One round's pruning with AP on top of ``base``, as a ``prune_step`` for ``iterative_magnitude_pruning``.

    Of the ``n`` weights alive before the round, AP prunes ``k = round(p2 · n)``; ``base`` first brings the network
    to the round's target sparsity minus those ``k``. The round therefore ends at exactly the target, the sparsity
    ``base`` alone would reach. ``start`` is the snapshot the round's training started from (with rewinding, the
    rewind point), keyed as ``prune.snapshot`` keys it."""
    if not 0 <= p2 < rate <= 1:
        raise ValueError(f"p2={p2}, rate={rate}: need 0 <= p2 < rate <= 1 (AP takes a share of the round's rate)")
    generator = torch.Generator().manual_seed(seed)

    def step(net: nn.Module, target: float, params: prune.Params) -> None:
        zeros, total = count_zeros(params)
        k = round(p2 * (total - zeros))
        goal = round(target * total)
        base(net, (goal - k) / total, params)
        before = [start_weight(start, net, m, n) for m, n in params]
        prune_chosen(params, ap_select(params, before, k, score=score, negative_only=negative_only,
                                       generator=generator))
        assert count_zeros(params)[0] == goal, "AP and the base method must together reach the round's target"

    return step


def start_weight(snapshot: dict[str, torch.Tensor], model: nn.Module, module: nn.Module, name: str) -> torch.Tensor:
    """The value of ``module.name`` in a ``prune.snapshot`` of ``model`` (stored as ``…weight_orig`` once pruned)."""
    prefix = next(k for k, m in model.named_modules() if m is module)
    key = f"{prefix}.{name}" if prefix else name
    for candidate in (key, f"{key}_orig"):
        if candidate in snapshot:
            return snapshot[candidate]
    raise KeyError(f"the snapshot has no value for {key!r}")


# ================================================================================================ experiments

NAMESPACE = "01_ap"  # the cache's: this series' code is part of every key (prunebook.cache.path_for)

# The arms compared at equal sparsity. "X" is the base method alone; the others add AP's share p2 of each round.
ARMS = {
    "X": None,
    "X+AP": {"p2": 0.02, "score": "delta", "negative_only": True},
    # ablations of AP's components (our choice of ablations; the paper's ablation table could not be read)
    "AP, either sign": {"p2": 0.02, "score": "delta", "negative_only": False},
    "AP by |w|": {"p2": 0.02, "score": "magnitude", "negative_only": True},
    "AP at random": {"p2": 0.02, "score": "random", "negative_only": True},
    "X+AP, p2 = 1 %": {"p2": 0.01, "score": "delta", "negative_only": True},
    "X+AP, p2 = 4 %": {"p2": 0.04, "score": "delta", "negative_only": True},
}
MODELS = ("lenet", "cnn", "resnet20")
METHODS = ("lth", "finetune")

# Every notebook of the series reads its runs from this one table, so that a later notebook finds an earlier one's
# runs in the cache. All of it is our choice except where a comment cites the official code: the paper's own
# schedules could not be read. "seeds" is how many consecutive seeds each arm runs (never chosen by result).
_COMMON = {"dataset": "fashion-mnist", "rate": 0.2, "lr": 0.05, "batch_size": 128, "dnr_images": 2_000}
SETTINGS = {
    "smoke": {
        "lenet": {**_COMMON, "n_train": 600, "n_test": 500, "epochs": 1, "rounds": 2, "dnr_images": 200, "seeds": 2},
        "cnn": {**_COMMON, "n_train": 200, "n_test": 200, "epochs": 1, "rounds": 1, "dnr_images": 100, "seeds": 2},
        "resnet20": {**_COMMON, "n_train": 64, "n_test": 100, "epochs": 1, "rounds": 1, "batch_size": 32,
                     "dnr_images": 50, "seeds": 2},
    },
    "cpu": {
        # "rounds": notebook 02's last network (12 rounds of 20 %, 93.1 %); notebooks 01, 03, 04 and 06 take
        # LeNet-300-100 through the official code's 25 rounds (99.6 %), whose first 12 are these
        "lenet": {**_COMMON, "n_train": 10_000, "n_test": 10_000, "epochs": 3, "rounds": 12, "seeds": 4},
        "cnn": {**_COMMON, "n_train": 3_000, "n_test": 2_000, "epochs": 3, "rounds": 8, "seeds": 3},
        "resnet20": {**_COMMON, "n_train": 2_000, "n_test": 1_000, "epochs": 2, "rounds": 3, "batch_size": 64,
                     "dnr_images": 500, "seeds": 3},
    },
    "paper": {
        # LeNet-300-100: the official code's 25 rounds (99.6 %)
        "lenet": {**_COMMON, "n_train": 60_000, "n_test": 10_000, "epochs": 10, "rounds": 25, "seeds": 5},
        "cnn": {**_COMMON, "n_train": 60_000, "n_test": 10_000, "epochs": 10, "rounds": 12, "seeds": 5},
        # the official code: CIFAR-10, SGD (momentum 0.9, weight decay 5e-4), batch 64, 50 epochs a training;
        # 15 of its 25 rounds (96.5 % sparsity), and a cosine schedule from 0.1 instead of its warm-up/step one
        "resnet20": {**_COMMON, "dataset": "cifar10", "n_train": 50_000, "n_test": 10_000, "epochs": 50,
                     "rounds": 15, "lr": 0.1, "batch_size": 64, "dnr_images": 2_000, "seeds": 3},
    },
}


def plan(settings: dict, model: str, *, arm: str = "X", method: str = "lth", seed: int = 0) -> dict:
    """The ``run`` for :func:`imp_run`: one model's settings (a profile's entry of :data:`SETTINGS`), an arm, a
    base method and a seed."""
    run = {**{k: v for k, v in settings[model].items() if k != "seeds"}, "model": model, "arm": arm,
           "method": method, "seed": seed}
    if config.dry_run_requested():  # a dry run: one training step a round, one evaluation batch, the paper's shapes
        batch = run["batch_size"]
        run.update(n_train=config.dry_steps(run["n_train"], batch), n_test=config.dry_steps(run["n_test"], batch),
                   epochs=config.dry_steps(run["epochs"], 1), dnr_images=config.dry_steps(run["dnr_images"], batch))
    return run


def build(name: str, in_channels: int = 1) -> nn.Module:
    """``lenet``: LeNet-300-100; ``cnn``: a small BN CNN (16/32 channels, 64 hidden); ``resnet20``: the official
    code's network (a one-channel stem for Fashion-MNIST padded to 32×32, three channels for CIFAR-10)."""
    if name == "lenet":
        return models.MLP(in_features=in_channels * 28 * 28)
    if name == "cnn":
        return models.SmallCNN(in_channels, widths=(16, 32), hidden=64)
    if name == "resnet20":
        return models.resnet_cifar(20, in_channels=in_channels)
    raise ValueError(f"model={name!r}; choose one of {', '.join(MODELS)}")


def initial_network(run: dict) -> nn.Module:
    """The network of ``run`` as its seed initialises it (the same for every arm: the rewind point)."""
    torch.manual_seed(run["seed"])
    return build(run["model"], in_channels=3 if run["dataset"] == "cifar10" else 1)


def datasets(run: dict, data_root: str | None = None) -> tuple[data.ImageSet, data.ImageSet]:
    """The training and test sets of ``run``, standardised: a class-balanced training subset of ``n_train`` images
    drawn by the run's seed (all of them when ``n_train`` reaches the set's size) and a fixed class-balanced
    ``n_test`` of the test images. ``fashion-mnist`` (offline) is padded to 32×32 for ResNet-20; ``cifar10`` (the
    paper's) must be on disk or downloadable, else the data error says where it looked."""
    if run["dataset"] == "fashion-mnist":
        full, test = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
    elif run["dataset"] == "cifar10":
        full, test = data.cifar("cifar10", "train", data_root), data.cifar("cifar10", "test", data_root)
    else:
        raise ValueError(f"dataset={run['dataset']!r}; choose 'fashion-mnist' or 'cifar10'")
    train_set = full if run["n_train"] >= len(full) else data.stratified_subset(full, run["n_train"], seed=run["seed"])
    test = test if run["n_test"] >= len(test) else data.stratified_subset(test, run["n_test"], seed=0)
    train_set, test = data.standardize(train_set, test)
    if run["model"] == "resnet20" and train_set.x.shape[-1] < 32:
        train_set, test = data.pad_to(train_set, 32), data.pad_to(test, 32)
    return train_set, test


def imp_run(run: dict, *, data_root: str | None = None, device: str = "cpu", progress: bool = True) -> list[dict]:
    """One pruning run, cached. ``run`` (see :func:`plan`) names the model, the dataset and its sizes, the schedule,
    the base method, the arm (a key of :data:`ARMS`) and the seed. Base methods: ``lth``, iterative magnitude
    pruning rewound to the initialisation (Frankle & Carbin); ``finetune``, iterative magnitude pruning that goes on
    training the pruned weights at a tenth of the learning rate (Han et al.). Returns one row per round: sparsity,
    test accuracy, the dynamic DNR of each epoch and the static DNR on test images. Each round is cached as it
    finishes, so an interrupted run resumes."""
    if run["model"] not in MODELS or run["method"] not in METHODS or run["arm"] not in ARMS:
        raise ValueError(f"unknown model, method or arm in {run}; models {MODELS}, methods {METHODS}, "
                         f"arms {tuple(ARMS)}")
    key = _run_key(run)
    return cache.cached(f"{NAMESPACE}/run", key, lambda: _imp_run(key, data_root, device, progress))


def _run_key(run: dict) -> dict:
    return {**run, "ap": ARMS[run["arm"]]}


def _round_key(run: dict, r: int) -> dict:
    # "rounds" is left out: a longer run shares its first rounds with a shorter one
    return {**{k: v for k, v in _run_key(run).items() if k != "rounds"}, "round": r}


def _imp_run(key: dict, data_root: str | None, device: str, progress: bool) -> list[dict]:
    train_set, test_set = datasets(key, data_root)
    net = initial_network(key).to(device)
    producers = sequential_producers(net) if key["model"] != "resnet20" else None
    init = prune.snapshot(net)
    start = dict(init)  # the weights each round's training starts from: AP measures Δw from here
    finetune = key["method"] == "finetune"
    step = None if key["ap"] is None else ap_step(start, net, rate=key["rate"], seed=key["seed"], **key["ap"])

    def train_round(model: nn.Module, r: int) -> dict:
        if finetune:
            start.clear()
            start.update(prune.snapshot(model))

        def compute() -> dict:
            lr = key["lr"] / 10 if finetune and r > 0 else key["lr"]
            meter = DeadNeuronMeter(model, producers=producers)
            with meter:
                cifar = key["dataset"] == "cifar10"  # the standard CIFAR augmentation, on training batches only
                train.fit(model, train_set, epochs=key["epochs"], batch_size=key["batch_size"], lr=lr,
                          crop_padding=4 if cifar else 0, flip=cifar, seed=key["seed"] * 1000 + r, device=device,
                          callbacks=[meter], progress_bar=progress, desc=f"{key['arm']} seed {key['seed']} round {r}")
            row = {"test_acc": train.evaluate(model, test_set, device=device)["acc"],
                   "dnr_epochs": list(meter.epochs), "dnr": sum(meter.epochs) / len(meter.epochs),
                   "dnr_channel": sum(meter.epochs_channel) / len(meter.epochs_channel)}
            static = static_dnr(model, test_set.x[: key["dnr_images"]], producers=producers)
            row.update({f"static_{k}" if k != "never_active" else k: v for k, v in static.items()})
            return {"state": model.state_dict(), "row": row}

        done = cache.cached(f"{NAMESPACE}/round", _round_key(key, r), compute)
        train.load_model_state(model, done["state"])
        return done["row"]

    return prune.iterative_magnitude_pruning(net, train_round, rounds=key["rounds"], rate=key["rate"],
                                             rewind_to="none" if finetune else init, prune_step=step)


def network_after(run: dict, r: int, *, data_root: str | None = None, device: str = "cpu",
                  progress: bool = True) -> nn.Module:
    """The network of ``run`` at the end of round ``r``'s training (its masks included), from the cache; the rounds
    up to ``r`` are run first if they are not there."""
    imp_run({**run, "rounds": r}, data_root=data_root, device=device, progress=progress)
    state = cache.load(cache.path_for(f"{NAMESPACE}/round", _round_key(run, r)))["state"]
    return train.load_model_state(initial_network(run), state)



# ====================================================================================== the official code's momentum


class MomentumCapture(Callback):
    """Keeps the SGD momentum buffers at the end of each epoch of a ``fit``, by parameter name (a pruned layer's
    ``weight_orig`` under its plain name ``weight``): the state the official code carries into its retraining.

    A masked weight's buffer is kept as zero: in the official code a pruned weight is exactly 0, its gradient is
    zeroed and its weight decay is 0, so its momentum stays 0; here ``weight_orig`` keeps its value under the mask
    and weight decay alone would fill the buffer."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.names = {p: n.removesuffix("_orig") for n, p in model.named_parameters()}
        self.buffers: dict[str, torch.Tensor] = {}

    def on_epoch_end(self, state: TrainState) -> None:
        masks = {k.removesuffix("_mask"): v for k, v in self.model.state_dict().items() if k.endswith("_mask")}
        self.buffers = {}
        for p, s in state.optimizer.state.items():
            if p in self.names and "momentum_buffer" in s:
                name = self.names[p]
                buf = s["momentum_buffer"].detach().clone()
                self.buffers[name] = buf * masks[name].to(buf.dtype) if name in masks else buf


def plain_copy(model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """A copy of ``model`` without pruning masks: ``build()`` holding the weights the forward pass uses (w · m)."""
    state = model.state_dict()
    plain = {}
    for k, v in state.items():
        if k.endswith("_orig"):
            plain[k.removesuffix("_orig")] = v * state[k.removesuffix("_orig") + "_mask"]
        elif not k.endswith("_mask"):
            plain[k] = v
    with torch.random.fork_rng():  # building draws an initialisation: keep the caller's random stream as it was
        net = build()
    net.load_state_dict(plain)
    return net


def code_retrain(model: nn.Module, build: Callable[[], nn.Module], buffers: dict[str, torch.Tensor],
                 train_set: data.ImageSet, *, epochs: int, batch_size: int, lr: float, seed: int, device: str = "cpu",
                 momentum: float = 0.9, weight_decay: float = 5e-4) -> nn.Module:
    """The official code's retraining after a pruning, on a copy of ``model`` (pruned and rewound; ``build`` makes
    the same architecture, unpruned): the SGD momentum of the previous training goes on (``buffers``), a gradient
    is zeroed only where its weight is exactly 0, and the mask is never applied again. A just-pruned weight with a
    non-zero buffer moves on the first step, w ← 0 − lr·μ·v, and from then on trains like any other: the network
    ends denser than its mask. The schedule is ours (a cosine from ``lr``), the same as every other training of
    the series."""
    net = plain_copy(model, build).to(device)  # weight = weight_orig · mask, a plain parameter: no mask from here
    named = dict(net.named_parameters())
    opt = torch.optim.SGD(list(named.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for name, p in named.items():
        if name in buffers:
            opt.state[p]["momentum_buffer"] = buffers[name].to(device).clone()
    weights = [m.weight for m, _ in prune.prunable(net)]
    n = len(train_set.x)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            loss = nn.functional.cross_entropy(net(train_set.x[idx].to(device)), train_set.y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                for w in weights:  # the code's gradient freeze: only where the weight is exactly zero now
                    w.grad[w == 0] = 0
            opt.step()
            sched.step()
    return net


def code_momentum_run(run: dict, *, data_root: str | None = None, device: str = "cpu",
                      progress: bool = True) -> list[dict]:
    """One pruning run of ``run`` (the lottery-ticket procedure, an arm of :data:`ARMS`) with the official code's
    retraining added to each round, cached. The pruning chain is the series' own (each round's training starts from
    a fresh optimiser with the mask in force, as the code's first training of a round does); after each pruning
    and rewind, :func:`code_retrain` also trains a copy with the momentum carried over, as the code's logged
    retraining does. Each row: the round's sparsity and accuracy (mask in force), and the retrained copy's accuracy
    and actual sparsity (its zero weights)."""
    if run["method"] != "lth":
        raise ValueError("the momentum control follows the official code's lottery-ticket procedure: method='lth'")
    key = {**_run_key(run), "control": "code-momentum"}
    return cache.cached(f"{NAMESPACE}/momentum", key, lambda: _code_momentum_run(key, data_root, device, progress))


def _code_momentum_run(key: dict, data_root: str | None, device: str, progress: bool) -> list[dict]:
    train_set, test_set = datasets(key, data_root)
    net = initial_network(key).to(device)
    init = prune.snapshot(net)
    step = None if key["ap"] is None else ap_step(init, net, rate=key["rate"], seed=key["seed"], **key["ap"])
    carried: dict[str, torch.Tensor] = {}

    def train_round(model: nn.Module, r: int) -> dict:
        row = {}
        if r > 0:  # the code's retraining of this mask: momentum from the previous round's training
            copy_ = code_retrain(model, lambda: build(key["model"]), carried, train_set, epochs=key["epochs"],
                                 batch_size=key["batch_size"], lr=key["lr"], seed=key["seed"] * 1000 + 500 + r,
                                 device=device)
            zeros, total = count_zeros(prune.prunable(copy_))
            row = {"code_test_acc": train.evaluate(copy_, test_set, device=device)["acc"],
                   "code_sparsity": zeros / total}
        capture = MomentumCapture(model)
        train.fit(model, train_set, epochs=key["epochs"], batch_size=key["batch_size"], lr=key["lr"],
                  seed=key["seed"] * 1000 + r, device=device, callbacks=[capture], progress_bar=progress,
                  desc=f"{key['arm']} seed {key['seed']} round {r}")
        carried.clear()
        carried.update(capture.buffers)
        return {**row, "test_acc": train.evaluate(model, test_set, device=device)["acc"]}

    return prune.iterative_magnitude_pruning(net, train_round, rounds=key["rounds"], rate=key["rate"],
                                             rewind_to=init, prune_step=step)
