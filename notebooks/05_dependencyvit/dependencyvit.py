"""Visual Dependency Transformers: Dependency Tree Emerges from Reversed Attention (Ding, Shen, Fan, Chen, Chen, Luo,
Tenenbaum & Gan, CVPR 2023, arXiv 2304.03282): this series' method code.

In ordinary self-attention token i *gathers* from the tokens j it attends to. In reversed attention the same
row-normalised weights are read as child i's distribution over candidate parents j, and the child *sends* its value
to them, gated by a head selector P (which heads a child speaks through) and a message controller M (how much it
still sends, a product over layers). Summed over heads, the gated and transposed weights form the soft dependency
mask, from which a tree of patches is read; tokens that have stopped sending (low M) can be dropped
(DependencyViT-Lite).

- The operator: :func:`attention_weights`, :func:`reversed_attention` (matrix form), :func:`send_loop` (the same,
  child by child, for tests and teaching).
- Models: :class:`Attention`, :class:`ReversedAttention`, :class:`Block` (one class for the plain and the reversed
  block), :class:`ViT` and :func:`build` (a plain ViT or a DependencyViT of the same size for Fashion-MNIST or
  PartShapes, with the ablations' switches); :meth:`ViT.trace` returns the per-layer masks, M and surviving token
  positions; :func:`macs`; :func:`train_run` and :func:`shapes_run` (cached trainings the notebooks share).
- Trees: :func:`parents`, :func:`extract_tree` (argmax parents, cycle repair, roots), :meth:`Tree.subtrees`,
  :func:`part_labels`, :func:`read_trees`; against chance: :func:`random_tree_mask`, :func:`permutation_ari`,
  :func:`chance_levels`; scores: :func:`agreement` (ARI, NMI), :func:`auroc`, :func:`centre_prior`; the figure:
  :func:`draw_tree`.
- Lite: :func:`keep_tokens`, :func:`lite_keep_ratios` (:func:`drop_leaves_tokens`), :data:`CRITERIA`, the
  ``prune_at``/``keep``/``criterion`` arguments of :class:`ViT` and :meth:`ViT.set_pruning` (the same, on trained
  weights).
- Data: :func:`part_shapes` and :func:`two_objects` (the synthetic PartShapes images with exact part and object
  labels), :func:`shapes_split` (one generator seed per split), :func:`patch_labels`.

The official repository holds no code and the full text of the paper could not be read here (only its abstract
and the Fig. 2 caption); everything else below is a reconstruction. Every choice the paper does not settle for
us is marked "our choice".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from prunebook import config, data, prune, train
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from torch import nn

NAMESPACE = "05_dependencyvit"

# ---------------------------------------------------------------- the operator


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A = softmax(Q Kᵀ / √d) over the last axis: row i (a query, in reversed attention a child) is a
    distribution over the tokens j (keys; in reversed attention its candidate parents). ``q``, ``k``: B×H×N×d."""
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def reversed_attention(a: torch.Tensor, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Children send: out_j = Σ_i A_ij P_hi M_i v_i, i.e. out = (A ⊙ P ⊙ M)ᵀ V.

    ``a``: B×H×N×N (row = child), ``p``: B×H×N (each child's weight on each head, summing to 1 over heads),
    ``m``: B×N (each child's message controller), ``v``: B×H×N×d. Returns the output B×H×N×d and the soft
    dependency mask Σ_h (A ⊙ P ⊙ M)ᵀ, B×N×N with rows = parents and columns = children; child i's column sums
    to M_i."""
    gated = a * p.unsqueeze(-1) * m[:, None, :, None]  # scales child i's row
    reversed_a = gated.transpose(-2, -1)
    return reversed_a @ v, reversed_a.sum(1)


def send_loop(a: torch.Tensor, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`reversed_attention`'s output written as message passing: every child i sends to every parent j the
    share A_ij of its value, weighted by its head selector and message controller. Slow; for tests."""
    out = torch.zeros_like(v)
    batch, heads, n, _ = a.shape
    for b in range(batch):
        for h in range(heads):
            for child in range(n):
                for parent in range(n):
                    out[b, h, parent] += a[b, h, child, parent] * p[b, h, child] * m[b, child] * v[b, h, child]
    return out


# ---------------------------------------------------------------- blocks and models


class Attention(nn.Module):
    """Ordinary multi-head self-attention (qkv without bias, as in the reversed block: our choice). With ``fused``
    it runs through ``F.scaled_dot_product_attention``; the explicit path is the one FLOP counters can see."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        b, h, n, d = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor, need_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output and, with ``need_mask``, the head-averaged Aᵀ (rows = attended tokens, columns = queries:
        the plain ViT's counterpart of the dependency mask, a baseline for the trees)."""
        q, k, v = self.split(x)
        if self.fused and not need_mask:
            return self.merge(F.scaled_dot_product_attention(q, k, v)), None
        a = attention_weights(q, k)
        return self.merge(a @ v), (a.mean(1).transpose(-2, -1) if need_mask else None)


class ReversedAttention(Attention):
    """Reversed attention with a head selector and a cumulative message controller.

    - Head selector P = softmax over heads of W_P x / τ: one weight matrix without bias and τ = 0.1, both of which
      the unofficial re-implementation attributes to the paper (its appendix D.1; not read here). Computed in float32
      because 1/τ = 10 scales the logits (our choice).
    - Message controller m = sigmoid(MLP(x)), MLP = Linear(C → C/2) → GELU → Linear(C/2 → 1); the hidden width is
      our choice, and so are the biases: the last one starts at +2.2 so that m ≈ 0.9 at initialisation and the
      product over layers does not start near zero. M_l = M_{l-1} ⊙ m_l, with M_0 = 1.
    - P and m are computed from the block's normalised input x, like q, k, v (our choice).

    Ablations: ``selector=False`` sends through every head alike (P = 1/H); ``controller=False`` keeps M ≡ 1.
    """

    def __init__(self, dim: int, heads: int, tau: float = 0.1, controller_bias: float = 2.2, selector: bool = True,
                 controller: bool = True):
        super().__init__(dim, heads)
        self.tau = tau
        self.selector = nn.Linear(dim, heads, bias=False) if selector else None
        self.controller = None
        if controller:
            self.controller = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, 1))
            nn.init.constant_(self.controller[-1].bias, controller_bias)

    def gates(self, x: torch.Tensor, m_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P (B×H×N, sums to 1 over heads) and the cumulative M (B×N)."""
        b, n, _ = x.shape
        if self.selector is None:
            p = x.new_full((b, self.heads, n), 1 / self.heads)
        else:
            p = torch.softmax(self.selector(x).float() / self.tau, dim=-1).to(x.dtype).transpose(1, 2)
        m = m_prev if self.controller is None else m_prev * torch.sigmoid(self.controller(x)).squeeze(-1)
        return p, m

    def forward(self, x: torch.Tensor, m_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The output, the new cumulative M and the dependency mask (B×N×N, rows = parents)."""
        q, k, v = self.split(x)
        p, m = self.gates(x, m_prev)
        out, mask = reversed_attention(attention_weights(q, k), p, m, v)
        return self.merge(out), m, mask


class Block(nn.Module):
    """A pre-norm transformer block with LayerScale, ordinary or reversed; no dropout or stochastic depth (our
    choice, for small CPU runs). The two halves are separate methods because DependencyViT-Lite drops tokens between
    them: after the attention residual (a dropped token has already sent its message in this layer) and before the
    MLP. That position is our choice, the unofficial re-implementation's; the paper's was not read."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, reversed: bool = False, tau: float = 0.1,
                 layer_scale: float = 1e-4, selector: bool = True, controller: bool = True):
        super().__init__()
        self.reversed = reversed
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = (ReversedAttention(dim, heads, tau, selector=selector, controller=controller) if reversed
                     else Attention(dim, heads))
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # LayerScale: 1e-4 rather than the re-implementation's 1e-6, which learns slowly in a few epochs (our choice)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))

    def attend(self, x: torch.Tensor, m: torch.Tensor, need_mask: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x + γ₁·attention(norm(x)); returns x, the cumulative M (all ones in a plain block) and the mask."""
        if self.reversed:
            out, m, mask = self.attn(self.norm1(x), m)
        else:
            out, mask = self.attn(self.norm1(x), need_mask)
        return x + self.gamma1 * out, m, mask

    def feed(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma2 * self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, m, _ = self.attend(x, m)
        return self.feed(x), m


def keep_tokens(score: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices (B×n_keep) of the ``n_keep`` tokens with the largest ``score`` (B×N; DependencyViT-Lite's is the
    cumulative M: the tokens still sending). The indices come back in their original order (our choice; attention
    does not care about order)."""
    return score.detach().topk(n_keep, dim=1).indices.sort(dim=1).values


# What decides which tokens a pruning layer keeps (the highest scores). "m": the cumulative message controller
# (DependencyViT-Lite); "inverse_m": the lowest M (a sanity check that the criterion matters); "received": the mass
# a token receives in that layer's mask (row sums: a leaf receives little), for the plain ViT its received
# attention (an EViT-like baseline); "random": a fresh uniform draw per image and layer.
CRITERIA = ("m", "inverse_m", "received", "random")


def prune_score(criterion: str, m: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if criterion == "m":
        return m
    if criterion == "inverse_m":
        return -m
    if criterion == "received":
        return mask.sum(-1)
    return torch.rand(m.shape, device=m.device)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B×K) of ``x`` (B×N or B×N×C)."""
    if x.ndim == 2:
        return x.gather(1, index)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def drop_leaves_tokens(drop: float, steps: int) -> bool:
    """Whether ``steps`` pruning layers can each remove ``drop`` of the original tokens: the last one keeps
    1 − steps·drop of them, which must be more than none (at four layers, 30 % or 40 % per step cannot be done)."""
    return 0 <= drop and round(1 - drop * steps, 10) > 0


def lite_keep_ratios(steps: int, drop: float) -> tuple[float, ...]:
    """Kept fractions of the original tokens after each of ``steps`` pruning layers, each removing ``drop`` of the
    original count: the unofficial DependencyViT-Lite-Tiny removes 0.16 at 4 layers (0.84, 0.68, 0.52, 0.36). A
    drop that would leave no token (:func:`drop_leaves_tokens`) raises ``ValueError``."""
    if not drop_leaves_tokens(drop, steps):
        raise ValueError(f"removing {drop:.0%} of the original tokens at each of {steps} pruning layers leaves "
                         f"{1 - drop * steps:.0%} of them: choose a drop below {1 / steps:.0%} per step")
    return tuple(round(1 - drop * (s + 1), 10) for s in range(steps))


@dataclass
class Trace:
    """What a forward pass leaves for the reader: the logits and, for every block l, the dependency mask (B×N_l×N_l,
    rows = parents; for the plain ViT the head-averaged Aᵀ), the cumulative M (B×N_l) and ``positions`` (B×N_l, the
    patch index of each token still present; pruning only removes tokens after the attention of its block) and
    ``tokens``, the tokens after the last block, before the final norm (B×N_last×C: their norms show which tokens
    carry the content that reaches the pooling)."""

    logits: torch.Tensor
    masks: list[torch.Tensor]
    ms: list[torch.Tensor]
    positions: list[torch.Tensor]
    kept: dict[int, torch.Tensor]
    tokens: torch.Tensor | None = None


class ViT(nn.Module):
    """A small ViT (``reversed=False``) or DependencyViT (``reversed=True``) of the same size.

    Patch embedding by a strided conv, learned position embedding, no class token, ``depth`` blocks, a final
    LayerNorm, then global average pooling and a linear classifier (our choice, as in the unofficial
    re-implementation). In the DependencyViT every block is reversed (our choice; which layers the paper reverses was
    not read) and each token is weighted by its final cumulative M after the final norm and before the pooling (our
    choice, the unofficial order). The pooling averages over the tokens still present (our choice).

    Lite: ``prune_at`` are block indices (0-based) after whose attention tokens are dropped, and ``keep`` the
    fraction of the *original* tokens left after each, rounded to the nearest count (our choice). ``criterion`` (one
    of :data:`CRITERIA`) decides which: ``"m"`` drops the lowest-M tokens (the criterion of the unofficial
    re-implementation; the paper's words are "leaf nodes which rarely send messages").

    Ablations: ``reversed_layers`` reverses only the first k blocks (the rest are plain and pass M on unchanged);
    ``selector=False`` and ``controller=False`` remove the head selector or the message controller; ``pool="mean"``
    averages the tokens without weighting them by M (the default ``"m"`` weights them)."""

    def __init__(self, image_size: int = 28, patch: int = 4, in_channels: int = 1, num_classes: int = 10,
                 dim: int = 96, depth: int = 6, heads: int = 6, mlp_ratio: float = 2.0, reversed: bool = False,
                 tau: float = 0.1, layer_scale: float = 1e-4, prune_at: Sequence[int] = (),
                 keep: Sequence[float] = (), criterion: str = "m", reversed_layers: int | None = None,
                 selector: bool = True, controller: bool = True, pool: str = "m"):
        super().__init__()
        if pool not in ("m", "mean"):
            raise ValueError(f"pool={pool!r}; choose 'm' (tokens weighted by M) or 'mean'")
        self.pool = pool
        if image_size % patch:
            raise ValueError(f"image_size={image_size} is not a multiple of patch={patch}")
        n_reversed = (depth if reversed_layers is None else reversed_layers) if reversed else 0
        if not 0 <= n_reversed <= depth:
            raise ValueError(f"reversed_layers={reversed_layers}: between 0 and depth={depth}")
        self.reversed, self.patch, self.depth = reversed, patch, depth
        self.n_tokens = (image_size // patch) ** 2
        self.set_pruning(prune_at, keep, criterion)
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, i < n_reversed, tau, layer_scale, selector, controller)
                                    for i in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def set_pruning(self, prune_at: Sequence[int] = (), keep: Sequence[float] = (), criterion: str = "m") -> ViT:
        """Prune (or, with no ``prune_at``, stop pruning) the same weights from the next forward pass on: the
        ``prune_at``/``keep``/``criterion`` of the constructor."""
        if len(prune_at) != len(keep):
            raise ValueError(f"prune_at={prune_at} and keep={keep} need one ratio per pruning layer")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion={criterion!r}; choose one of {CRITERIA}")
        if prune_at and not self.reversed and criterion in ("m", "inverse_m"):
            raise ValueError(f"token pruning by criterion={criterion!r} needs the reversed blocks (reversed=True); "
                             "a plain ViT can prune by 'received' or 'random'")
        if any(not 0 <= layer < self.depth for layer in prune_at):
            raise ValueError(f"prune_at={prune_at}: blocks are 0 to {self.depth - 1}")
        self.criterion = criterion
        self.keep_counts = {int(layer): max(1, round(self.n_tokens * r)) for layer, r in zip(prune_at, keep)}
        return self

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images).flatten(2).transpose(1, 2) + self.pos

    def classify(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.reversed and self.pool == "m":
            x = x * m.unsqueeze(-1)
        return self.head(x.mean(1))

    def trace(self, images: torch.Tensor, need_masks: bool = True) -> Trace:
        x = self.tokens(images)
        b, n, _ = x.shape
        m = x.new_ones(b, n)
        pos = torch.arange(n, device=x.device).expand(b, n)
        masks, ms, positions, kept = [], [], [], {}
        for i, blk in enumerate(self.blocks):
            prunes = i in self.keep_counts
            x, m, mask = blk.attend(x, m, need_masks or (prunes and self.criterion == "received"))
            masks.append(mask)
            ms.append(m)
            positions.append(pos)
            if prunes:
                kept[i] = keep_tokens(prune_score(self.criterion, m, mask), self.keep_counts[i])
                x, m, pos = (gather_tokens(t, kept[i]) for t in (x, m, pos))
            x = blk.feed(x)
        return Trace(self.classify(x, m), masks, ms, positions, kept, x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trace(images, need_masks=False).logits


# image size, channels, classes (the two-object set is classified by its left object)
DATASETS = {"fashion_mnist": (28, 1, 10), "partshapes": (32, 1, 4), "two_objects": (48, 1, 4)}


def build(kind: str = "dependencyvit", dataset: str = "fashion_mnist", **kwargs) -> ViT:
    """``kind`` ``vit`` or ``dependencyvit``, sized for ``dataset`` (a key of :data:`DATASETS`). The defaults (patch 4,
    dim 96, depth 6, 6 heads of width 16, MLP ratio 2) are our choice for a CPU; the unofficial Tiny has patch 16,
    dim 192, depth 12 and 12 heads at 224×224."""
    if kind not in ("vit", "dependencyvit"):
        raise ValueError(f"kind={kind!r}; choose vit or dependencyvit")
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}; choose one of {sorted(DATASETS)}")
    size, channels, classes = DATASETS[dataset]
    return ViT(size, in_channels=channels, num_classes=classes, reversed=kind == "dependencyvit", **kwargs)


def train_run(make, train_set: data.ImageSet, test_set: data.ImageSet, recipe: dict, key: dict, seed: int,
              device: str = "cpu", desc: str = "train") -> dict:
    """One cached training of ``make()`` (:func:`prunebook.train.cached_run`; ``key`` must hold everything the
    result depends on): the test accuracy and loss, the history, the training speed and the trained state. A dry run
    of the paper profile trains one epoch of its stand-in set (:data:`DRY_IMAGES`: one step, on a partial batch)."""
    recipe = {**recipe, "epochs": config.dry_steps(recipe["epochs"], 1)}

    def fit(model, checkpoint):
        return train.fit(model, train_set, **recipe, device=device, seed=seed, desc=desc, progress_bar=False,
                         checkpoint=checkpoint)

    def measure(model, history) -> dict:
        result = train.evaluate(model, test_set, device=device)
        seconds = sum(e["seconds"] for e in history)
        return {"acc": result["acc"], "loss": result["loss"], "train_seconds": seconds,
                "train_images_per_s": recipe["epochs"] * len(train_set) / seconds}

    return train.cached_run(NAMESPACE, key, make, fit, seed, measure)


def macs(model: ViT, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (``prunebook.prune.count_macs``), with the plain attention on its
    explicit path so that the counter sees Q Kᵀ and A V (it counts nothing inside the fused kernel on CPU)."""
    attns = [blk.attn for blk in model.blocks]
    fused = [a.fused for a in attns]
    for a in attns:
        a.fused = False
    try:
        return prune.count_macs(model, example)
    finally:
        for a, f in zip(attns, fused):
            a.fused = f


# ---------------------------------------------------------------- dependency trees


def parents(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each child's parent: the argmax down its column of the dependency mask (…×N×N, rows = parents). Reading the
    tree this way is our choice; the paper's exact procedure was not read."""
    return np.asarray(torch.as_tensor(mask).argmax(dim=-2))


@dataclass
class Tree:
    """A tree over N tokens: ``parent[i]`` (a root is its own parent), the argmax parents before repair, and how
    many cycles were broken to get here."""

    parent: np.ndarray
    raw_parent: np.ndarray
    cycles: int

    @property
    def roots(self) -> np.ndarray:
        return np.flatnonzero(self.parent == np.arange(len(self.parent)))

    def subtrees(self, tops: Sequence[int] | None = None) -> np.ndarray:
        """A partition of the tokens: each token's label is the first node of ``tops`` on its path to the root,
        itself included, or its root when there is none (with ``tops=None``: one subtree per root). Which nodes head
        the parts (the root's children, the K largest subtrees) is the caller's choice, and ours."""
        stop = np.zeros(len(self.parent), bool)
        stop[self.roots] = True
        if tops is not None:
            stop[list(tops)] = True
        label = np.arange(len(self.parent))
        for i in range(len(self.parent)):
            j = i
            while not stop[j]:
                j = self.parent[j]
            label[i] = j
        return label

    def depth(self) -> np.ndarray:
        """Each token's number of edges to its root."""
        out = np.zeros(len(self.parent), int)
        for i in range(len(self.parent)):
            j = i
            while self.parent[j] != j:
                j, out[i] = self.parent[j], out[i] + 1
        return out


def extract_tree(mask: torch.Tensor | np.ndarray) -> Tree:
    """The tree read off one dependency mask (N×N, rows = parents, columns = children).

    Each token takes as parent the argmax of its column; a token that picks itself is a root. Argmax parents may
    close cycles; in each one the member that receives the most mass (row sum of the mask) becomes a root (our
    choice of repair; a maximum spanning arborescence would be the principled alternative)."""
    mask = np.asarray(torch.as_tensor(mask).detach().float())
    raw = mask.argmax(axis=0)
    received = mask.sum(axis=1)
    parent = raw.copy()
    state = np.zeros(len(raw), int)  # 0 unseen, 1 on the current walk, 2 settled
    cycles = 0
    for start in range(len(raw)):
        walk, i = [], start
        while state[i] == 0:
            state[i] = 1
            walk.append(i)
            i = parent[i]
        if state[i] == 1:  # the walk came back to itself
            loop = walk[walk.index(i):]
            if len(loop) > 1:
                new_root = max(loop, key=lambda j: received[j])
                parent[new_root] = new_root
                cycles += 1
        state[walk] = 2
    return Tree(parent, raw, cycles)


def part_labels(mask: torch.Tensor | np.ndarray, k: int = 3) -> tuple[Tree, np.ndarray]:
    """The tree of one mask and a partition of its tokens into subtrees headed by the ``k`` tokens that receive the
    most mass (row sums; our choice of heads, fixed before any run: the hubs of the tree), or by a root that none of
    them reaches."""
    tree = extract_tree(mask)
    received = np.asarray(torch.as_tensor(mask).detach().float()).sum(axis=1)
    return tree, tree.subtrees(np.argsort(-received, kind="stable")[:k])


def random_tree_mask(n: int, rng: np.random.Generator) -> np.ndarray:
    """The mask (rows = parents) of a random tree reading: every token picks a uniformly random parent, itself
    included. :func:`part_labels` on it is the random-tree baseline (its heads: the tokens with the most children)."""
    mask = np.zeros((n, n))
    mask[rng.integers(n, size=n), np.arange(n)] = 1.0
    return mask


def agreement(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> tuple[float, float]:
    """ARI and NMI (arithmetic normalisation) of two labellings of the tokens, on the tokens where ``keep`` (the
    foreground): scikit-learn's ``adjusted_rand_score`` and ``normalized_mutual_info_score``, computed from one
    contingency table, because the notebooks call it tens of thousands of times and one scikit-learn call costs
    milliseconds (the unit tests check the two agree)."""
    p = np.unique(pred[keep], return_inverse=True)[1].ravel()
    t = np.unique(truth[keep], return_inverse=True)[1].ravel()
    ari = float(adjusted_rand_rows(p[None], t)[0])
    kp, kt = p.max() + 1, t.max() + 1
    if kp == kt == 1:
        return ari, 1.0
    joint = np.bincount(p * kt + t, minlength=kp * kt).reshape(kp, kt) / len(p)
    rows, cols = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = max(float((joint[nz] * np.log(joint[nz] / np.outer(rows, cols)[nz])).sum()), 0.0)
    if mi == 0:
        return ari, 0.0
    entropy = [-(x[x > 0] * np.log(x[x > 0])).sum() for x in (rows, cols)]
    return ari, mi / (sum(entropy) / 2)


def permutation_ari(pred: np.ndarray, truth: np.ndarray, keep: np.ndarray, rng: np.random.Generator,
                    n: int = 100) -> np.ndarray:
    """The random-partition null: ARI of ``n`` shuffles of the predicted labels among the kept tokens (the same
    subtree sizes, placed at random)."""
    p = np.unique(pred[keep], return_inverse=True)[1].ravel()
    t = np.unique(truth[keep], return_inverse=True)[1].ravel()
    shuffled = rng.permuted(np.tile(p, (n, 1)), axis=1)
    return adjusted_rand_rows(shuffled, t)


def adjusted_rand_rows(rows: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``adjusted_rand_score(truth, row)`` for every row of ``rows`` (R×n, labels 0…k−1) at once: the null of
    :func:`permutation_ari` needs 100 of them per image, which one scikit-learn call each makes slow."""
    n_rows, n = rows.shape
    kp, kt = rows.max() + 1, truth.max() + 1
    cells = (np.arange(n_rows)[:, None] * kp * kt + rows * kt + truth).ravel()
    table = np.bincount(cells, minlength=n_rows * kp * kt).reshape(n_rows, kp, kt).astype(float)

    def pairs(x):
        return (x * (x - 1) / 2).sum(-1)

    together = pairs(table.reshape(n_rows, -1))
    a, b = pairs(table.sum(2)), pairs(table.sum(1))
    expected = a * b / max(n * (n - 1) / 2, 1)
    top = (a + b) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ari = (together - expected) / (top - expected)
    return np.where(np.isclose(top, expected), 1.0, ari)  # scikit-learn's value when both are one cluster or trivial


def masks_of(model: ViT, images: torch.Tensor, device: str = "cpu") -> tuple[list[np.ndarray], np.ndarray]:
    """Every block's mask (B×N×N, rows = parents; for a plain ViT its head-averaged Aᵀ) and the final cumulative
    M (B×N) of ``model`` on ``images``, as numpy arrays."""
    model.eval()
    with torch.no_grad():
        tr = model.trace(images.to(device))
    return [m.float().cpu().numpy() for m in tr.masks], tr.ms[-1].float().cpu().numpy()


def read_trees(masks: list[np.ndarray], truth: np.ndarray, k: int) -> dict[str, list[float]]:
    """Per block, averaged over the images: the ARI and NMI of the :func:`part_labels` subtrees (``k`` heads)
    against the patch labels ``truth`` (B×N, 0 = background) on the foreground, the cycles broken per image, the
    share of images with one, the roots and the depth of the tree."""
    out = {"ari": [], "nmi": [], "cycles": [], "with_cycle": [], "roots": [], "depth": []}
    for layer in masks:
        stats = []
        for mask, t in zip(layer, truth):
            tree, labels = part_labels(mask, k)
            stats.append((*agreement(labels, t, t > 0), tree.cycles, len(tree.roots), tree.depth().max()))
        ari, nmi, cycles, roots, depth = np.array(stats, dtype=float).T
        for name, value in (("ari", ari.mean()), ("nmi", nmi.mean()), ("cycles", cycles.mean()),
                            ("with_cycle", (cycles > 0).mean()), ("roots", roots.mean()), ("depth", depth.mean())):
            out[name].append(float(value))
    return out


def chance_levels(layer: np.ndarray, truth: np.ndarray, k: int, rng: np.random.Generator, n_null: int = 100
                  ) -> dict[str, float]:
    """What chance reaches against ``truth`` (B×N) for the subtrees of one block's masks (B×N×N): the 97.5th
    percentile over ``n_null`` rounds of the mean ARI of :func:`permutation_ari` shuffles (the upper edge of the
    random-partition 95 % band), and the mean ARI of a random tree per image (:func:`random_tree_mask`)."""
    null = np.zeros(n_null)
    random_tree = []
    for mask, t in zip(layer, truth):
        _, labels = part_labels(mask, k)
        null += permutation_ari(labels, t, t > 0, rng, n_null) / len(truth)
        _, random_labels = part_labels(random_tree_mask(len(t), rng), k)
        random_tree.append(agreement(random_labels, t, t > 0)[0])
    return {"null_q975": float(np.quantile(null, 0.975)), "random_tree": float(np.mean(random_tree))}


BASELINE_FEATURES = ("position", "pixels", "position + pixels")


def patch_features(images: torch.Tensor | np.ndarray, patch: int, feature: str) -> np.ndarray:
    """Per image and patch (B×N×F), what a model-free grouping may use: the patch's grid ``position`` (row,
    column), its raw ``pixels`` (patch² values) or both side by side (:func:`kmeans_ari` weighs the two groups)."""
    if feature not in BASELINE_FEATURES:
        raise ValueError(f"feature={feature!r}; choose one of {BASELINE_FEATURES}")
    x = np.asarray(torch.as_tensor(images).float())[:, 0]
    b, size = x.shape[0], x.shape[-1]
    side = size // patch
    pixels = x.reshape(b, side, patch, side, patch).transpose(0, 1, 3, 2, 4).reshape(b, side * side, patch * patch)
    rows, cols = np.divmod(np.arange(side * side), side)
    position = np.broadcast_to(np.stack([rows, cols], 1).astype(float), (b, side * side, 2))
    if feature == "position":
        return position.copy()
    if feature == "pixels":
        return pixels
    return np.concatenate([position, pixels], axis=2)


def kmeans_ari(images: torch.Tensor | np.ndarray, truth: np.ndarray, patch: int, k: int, feature: str) -> float:
    """The model-free baseline of the tree claims: per image, k-means (``k`` clusters, scikit-learn, fixed seed) on
    the :func:`patch_features` of the foreground patches (``truth`` > 0), scored by the ARI against ``truth`` like
    the subtrees; the mean over images. ``position + pixels``: every column standardised over the image's
    foreground, each group then divided by the square root of its width, so the two groups weigh alike (our
    choice, fixed before any run)."""
    feats = patch_features(images, patch, feature)
    aris = []
    for f, t in zip(feats, truth):
        fg = t > 0
        z = f[fg].astype(float)
        if feature == "position + pixels":
            z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
            z[:, :2] /= math.sqrt(2)
            z[:, 2:] /= math.sqrt(z.shape[1] - 2)
        labels = np.zeros(len(t), int)
        n_clusters = min(k, len(np.unique(z, axis=0)))
        labels[fg] = KMeans(n_clusters, n_init=2, random_state=0).fit_predict(z) if n_clusters > 1 else 0
        aris.append(agreement(labels, t, fg)[0])
    return float(np.mean(aris))


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the binary ``truth`` (pooled over all tokens given)."""
    return float(roc_auc_score(np.asarray(truth).ravel().astype(int), np.asarray(score).ravel()))


def draw_tree(ax, image: np.ndarray, mask: np.ndarray, k: int, title: str, first_colour: int = 0) -> None:
    """The paper's tree figure on one matplotlib axis: ``image`` under its patches coloured by :func:`part_labels`
    subtree (``k`` heads; tab10 colours from ``first_colour`` on), an arrow from every child to its parent and a
    star on every root."""
    side = int(round(math.sqrt(len(mask))))
    tree, labels = part_labels(mask, k)
    heads = {h: i for i, h in enumerate(dict.fromkeys(labels.tolist()))}
    cmap = plt.get_cmap("tab10")
    colours = np.array([cmap((heads[h] + first_colour) % 10) for h in labels]).reshape(side, side, 4)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=(0, side, side, 0))
    ax.imshow(colours, alpha=0.45, extent=(0, side, side, 0))
    child = np.flatnonzero(tree.parent != np.arange(len(labels)))
    cy, cx = np.divmod(child, side)
    py, px = np.divmod(tree.parent[child], side)
    ax.quiver(cx + 0.5, cy + 0.5, px - cx, py - cy, angles="xy", scale_units="xy", scale=1, width=0.006,
              color="k", alpha=0.6)
    for r in tree.roots:
        ax.plot(r % side + 0.5, r // side + 0.5, "w*", ms=7, mec="k", mew=0.5)
    ax.set_title(title, fontsize=8)


def centre_prior(side: int) -> np.ndarray:
    """The centre-prior saliency of a side×side grid of patches: minus the distance to the grid's centre."""
    ys, xs = np.mgrid[0:side, 0:side] - (side - 1) / 2
    return -np.hypot(ys, xs).ravel()


# ---------------------------------------------------------------- PartShapes

SHAPE_CLASSES = ("person", "house", "tree", "car")
# Each class: three parts, each a list of primitives in unit sizes, offsets (dx, dy) from the object centre with y
# growing downward. ("disk", dx, dy, r), ("rect", dx, dy, w, h), ("tri", dx, dy, base, height) with its apex up.
# Parts are drawn in order, so a later one covers an earlier one (the door on the wall). Our choice of shapes.
SHAPE_PARTS = {
    0: [[("disk", 0, -7, 3)], [("rect", 0, 0, 6, 8)], [("rect", -1.5, 7, 2, 6), ("rect", 1.5, 7, 2, 6)]],
    1: [[("tri", 0, -6, 12, 6)], [("rect", 0, 1, 10, 8)], [("rect", 0, 2.5, 3, 5)]],
    2: [[("disk", 0, -4, 5)], [("rect", 0, 3.5, 3, 7)], [("rect", 0, 8, 14, 2)]],
    3: [[("rect", 0, 0, 14, 5)], [("rect", 0, -4.5, 7, 4)], [("disk", -4, 3.5, 2), ("disk", 4, 3.5, 2)]],
}
VARIANTS = ("easy", "hard", "hard_bg")


@dataclass
class Shapes:
    """Images with exact labels. ``x`` N×1×H×W in [0, 1]; ``y`` the class (of the left object in the two-object
    set); ``classes`` N×(objects) every object's class; ``parts`` N×H×W the part slot (0 background, 1 to 3 in the
    order of :data:`SHAPE_PARTS`); ``objects`` N×H×W the object id (0 background, 1 left/only, 2 right)."""

    x: torch.Tensor
    y: torch.Tensor
    classes: torch.Tensor
    parts: torch.Tensor
    objects: torch.Tensor

    @property
    def foreground(self) -> torch.Tensor:
        return self.objects > 0

    def __len__(self) -> int:
        return len(self.y)

    def imageset(self, name: str = "PartShapes") -> data.ImageSet:
        return data.ImageSet(self.x, self.y, SHAPE_CLASSES, name)


def _primitive(u: np.ndarray, v: np.ndarray, shape: tuple, k: float) -> np.ndarray:
    kind, dx, dy, *size = shape
    u, v = u - dx * k, v - dy * k
    if kind == "disk":
        return u**2 + v**2 <= (size[0] * k) ** 2
    if kind == "rect":
        return (np.abs(u) <= size[0] * k / 2) & (np.abs(v) <= size[1] * k / 2)
    base, height = size[0] * k, size[1] * k
    from_top = v + height / 2  # 0 at the apex, ``height`` at the base
    return (from_top >= 0) & (from_top <= height) & (np.abs(u) <= base / 2 * from_top / height)


def _draw(cls: int, cx: float, cy: float, k: float, angle: float, size: int) -> np.ndarray:
    """The part map (size×size, 0 = none) of one object, by rotating pixel centres into the object's frame."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    c, s = math.cos(angle), math.sin(angle)
    u = c * (xs - cx) + s * (ys - cy)
    v = -s * (xs - cx) + c * (ys - cy)
    out = np.zeros((size, size), np.int64)
    for slot, part in enumerate(SHAPE_PARTS[cls], start=1):
        for shape in part:
            out[_primitive(u, v, shape, k)] = slot
    return out


def patch_labels(labels: torch.Tensor | np.ndarray, patch: int = 4) -> torch.Tensor:
    """Patch-level ground truth of pixel label maps (N×H×W, 0 = background): a patch is foreground when at least
    half of its pixels are labelled, and then takes the label with the most pixels (the lower one on a tie)."""
    labels = torch.as_tensor(labels)
    n, h, w = labels.shape
    counts = F.one_hot(labels, int(labels.max()) + 1 if labels.numel() else 1)
    counts = counts.reshape(n, h // patch, patch, w // patch, patch, -1).sum((2, 4))
    fg = 2 * counts[..., 1:].sum(-1) >= patch * patch
    best = counts[..., 1:].argmax(-1) + 1 if counts.shape[-1] > 1 else torch.zeros_like(fg, dtype=torch.long)
    return torch.where(fg, best, 0)


def _owns_every_part(part_map: np.ndarray, patch: int) -> bool:
    return set(patch_labels(part_map[None], patch).unique().tolist()) >= {1, 2, 3}


def _background(rng: np.random.Generator, size: int, variant: str) -> np.ndarray:
    # our choice of textures: smooth noise up to 0.3 (easy, hard); hard_bg (for saliency) an unfiltered texture up to
    # 1.0, as bright as the objects, so that intensity alone no longer separates foreground from background
    if variant == "hard_bg":
        return rng.random((size, size)) * rng.uniform(0, 1.0)
    noise = np.pad(rng.random((size, size)), 2, mode="reflect")
    smooth = sum(noise[i:i + size, j:j + size] for i in range(5) for j in range(5)) / 25  # 5×5 box blur
    smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-12)
    return smooth * rng.uniform(0, 0.3)


def _scene(rng: np.random.Generator, size: int, objects: list[tuple[int, tuple[float, float, float, float], slice]],
           variant: str, patch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: each object (class, (x0, x1, y0, y1) range of its centre, columns it may occupy) is placed with a
    random centre, scale k in [1.4, 1.8] and rotation in ±15°, drawn again until every part owns a patch (our choice;
    at these scales a redraw is rare)."""
    parts = np.zeros((size, size), np.int64)
    owner = np.zeros((size, size), np.int64)
    for obj, (cls, (x0, x1, y0, y1), columns) in enumerate(objects, start=1):
        while True:
            drawn = _draw(cls, rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(1.4, 1.8),
                          math.radians(rng.uniform(-15, 15)), size)
            drawn[:, :columns.start or 0] = 0
            drawn[:, columns.stop or size:] = 0
            if _owns_every_part(drawn, patch):
                break
        parts[drawn > 0] = drawn[drawn > 0]
        owner[drawn > 0] = obj
    image = _background(rng, size, variant)
    for obj in range(1, len(objects) + 1):
        # easy: each part its own intensity; hard and hard_bg: one per object, so only geometry separates the parts
        shades = rng.uniform(0.5, 1.0, 3) if variant == "easy" else np.full(3, rng.uniform(0.5, 1.0))
        for slot in (1, 2, 3):
            image[(owner == obj) & (parts == slot)] = shades[slot - 1]
    return image, parts, owner


def _shapes(n: int, seed: int, variant: str, size: int, patch: int, layouts) -> Shapes:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; choose one of {VARIANTS}")
    if size % patch:
        raise ValueError(f"size={size} is not a multiple of patch={patch}")
    rng = np.random.default_rng(seed)
    images, parts, owners, classes = [], [], [], []
    for _ in range(n):
        layout = layouts(rng)
        image, part, owner = _scene(rng, size, layout, variant, patch)
        images.append(image)
        parts.append(part)
        owners.append(owner)
        classes.append([cls for cls, _, _ in layout])
    classes = torch.tensor(classes, dtype=torch.long).reshape(n, -1)
    return Shapes(torch.tensor(np.array(images), dtype=torch.float32).reshape(n, 1, size, size), classes[:, 0].clone(),
                  classes, torch.tensor(np.array(parts)).reshape(n, size, size),
                  torch.tensor(np.array(owners)).reshape(n, size, size))


SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


# a dry run's training split: fewer images than one batch of the paper profile's 256, so its one step is a batch of
# 64 (a step of 256 images through the paper's 12 blocks of width 192 takes about 11 s on one CPU thread)
DRY_IMAGES = 64
# a dry run's validation and test splits: the trees are read image by image at every block (about 10 ms each, twelve
# blocks at paper), so an evaluation of two batches would take minutes per model
DRY_EVAL_IMAGES = 32


@functools.lru_cache(maxsize=16)  # the notebooks ask for the same splits again and again; nothing mutates them
def shapes_split(split: str, n: int, variant: str = "easy", patch: int = 4, objects: int = 1) -> Shapes:
    """The ``n`` images of one split of PartShapes (``objects=1``) or of the two-object set (``objects=2``): each
    split has its own generator seed (:data:`SPLIT_SEEDS`), so test images are never training images, and the
    first ``n`` images of a split are the same whatever ``n``. A dry run of the paper profile draws at most
    :data:`DRY_IMAGES` training and :data:`DRY_EVAL_IMAGES` validation or test images."""
    make = {1: part_shapes, 2: two_objects}[objects]
    n = config.dry_steps(n, DRY_IMAGES if split == "train" else DRY_EVAL_IMAGES)
    return make(n, SPLIT_SEEDS[split], variant, patch)


def shapes_run(kind: str, variant: str, seed: int, arch: dict, recipe: dict, n_train: int, device: str = "cpu",
               objects: int = 1, test: Shapes | None = None, **options) -> dict:
    """:func:`train_run` of a ``kind`` model (``arch``: :func:`build`'s size arguments, ``options``: its pruning
    and ablation arguments) on the first ``n_train`` training images of a PartShapes ``variant`` (``objects=2``:
    the two-object set), cached under a key that any notebook of the series rebuilds alike; ``test`` (default: 300
    test images) only sets the accuracy stored with it."""
    dataset = {1: "partshapes", 2: "two_objects"}[objects]
    key = {"kind": kind, "model": {**arch, **options}, "recipe": recipe, "seed": seed,
           "data": {"dataset": dataset, "variant": variant, "n_train": n_train,
                    "generator_seed": SPLIT_SEEDS["train"]}}
    train_set = shapes_split("train", n_train, variant, arch.get("patch", 4), objects)
    test = test if test is not None else shapes_split("test", 300, variant, arch.get("patch", 4), objects)
    return train_run(lambda: build(kind, dataset, **arch, **options), train_set.imageset(), test.imageset(), recipe,
                     key, seed, device, desc=kind)


def part_shapes(n: int, seed: int = 0, variant: str = "easy", patch: int = 4) -> Shapes:
    """``n`` 32×32 images of one object each (4 classes of 3 parts) on a textured background; the same seed gives
    the same images. Every part owns at least one ``patch``×``patch`` patch (:func:`patch_labels`)."""
    def layout(rng):
        return [(int(rng.integers(4)), (14, 18, 14, 18), slice(None))]
    return _shapes(n, seed, variant, 32, patch, layout)


def two_objects(n: int, seed: int = 0, variant: str = "easy", patch: int = 4) -> Shapes:
    """``n`` 48×48 images of two objects of different classes, one in each half (each clipped to its half, so they
    never overlap; our choice), for subtrees against entities. ``y`` is the left object's class."""
    def layout(rng):
        left, right = rng.choice(4, 2, replace=False)
        return [(int(left), (10, 14, 22, 26), slice(0, 24)), (int(right), (34, 38, 22, 26), slice(24, 48))]
    return _shapes(n, seed, variant, 48, patch, layout)
