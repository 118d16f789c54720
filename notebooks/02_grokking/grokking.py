"""Doshi, Das, He & Gromov, "To grok or not to grok" (ICLR 2024): the method code of the 02_grokking series.

The task is modular addition ``(m + n) mod p`` with a fraction ``xi`` of the training labels replaced by random
ones; the model is the two-layer MLP ``f(m, n) = W (U e_m + V e_n)**2`` without biases (Eq. 1), trained with
full-batch AdamW on the MSE to one-hot targets. Everything here works on a *stack* of ``B`` such networks: the
weights carry a leading model axis, so one batched matrix product trains a whole slice of a phase diagram
(a different corruption ``xi``, weight decay, dropout rate or seed per model) at once.

Main pieces
- :func:`modular_task` — the dataset and its corruption (``seed=0`` gives the official split: pairs shuffled with
  seed 420, the first ``int(xi * n_train)`` training examples relabelled by ``torch.randint`` under seed 0).
- :func:`embed`, :func:`activation`, :func:`readout` — Eq. 1 term by term, shared by :func:`forward` (autograd)
  and :func:`fused_step` (gradients by hand).
- :func:`init_params`, :func:`forward`, :func:`adamw_update`, :func:`train` — the stacked model and its training.
- :func:`ipr`, :func:`neuron_ipr` — the inverse participation ratio of weights in Fourier space (Eqs. 3–4).
- :func:`analytic_params` — the hand-built periodic solution (Eq. 2).
- :func:`prune_neurons`, :func:`pruning_curves` — IPR-ranked neuron pruning (Fig. 6).
- :func:`classify_phase`, :func:`phase_slice` — the phase rules of Appendix C and one slice of a phase diagram.

Weights are dicts of tensors in the paper's layout: ``U``, ``V`` (B, N, p) — row k is neuron k's input weights;
``W`` (B, p, N) — column k is its output weights; with BatchNorm also ``gamma``, ``beta`` (B, N).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from prunebook.config import dry_steps

P = 97
WIDTH = 500
PAIR_SEED = 420  # the official code's shuffle seed for the p*p pairs
SUBSETS = ("train", "test", "corrupted", "clean")
PHASES = ("coexistence", "partial inversion", "full inversion", "memorization", "forgetting")
PHASE_COLORS = {"coexistence": "#009E73", "partial inversion": "#56B4E9", "full inversion": "#0072B2",
                "memorization": "#D55E00", "forgetting": "#999999"}


# ----------------------------------------------------------------------------------------------- data


@dataclass
class ModularTask:
    """All ``p*p`` pairs in one fixed shuffled order; the first ``n_train`` are the training set.

    ``labels`` are what the network is trained and scored on: the first ``n_noise`` training labels are random
    draws, everything else (the rest of the training set and the whole test set) is the true sum.
    """

    p: int
    alpha: float
    xi: float
    seed: int
    pairs: torch.Tensor  # (p*p, 2) int64, shuffled
    labels: torch.Tensor  # (p*p,) int64, random on the corrupted examples
    true_labels: torch.Tensor  # (p*p,) int64
    n_train: int
    n_noise: int

    @property
    def n_test(self) -> int:
        return self.p * self.p - self.n_train

    def subset(self, name: str) -> slice:
        """Positions (in the shuffled order) of ``train``, ``test``, ``corrupted`` or ``clean`` (uncorrupted train)."""
        return {"train": slice(0, self.n_train), "test": slice(self.n_train, self.p * self.p),
                "corrupted": slice(0, self.n_noise), "clean": slice(self.n_noise, self.n_train)}[name]

    def by_pair(self) -> dict[str, torch.Tensor]:
        """Labels and subset masks indexed by pair id ``m * p + n`` (the order :func:`evaluate` scores in)."""
        ids = self.pairs[:, 0] * self.p + self.pairs[:, 1]
        out = {"labels": torch.empty_like(self.labels)}
        out["labels"][ids] = self.labels
        for name in SUBSETS:
            mask = torch.zeros(self.p * self.p, dtype=torch.bool)
            mask[ids[self.subset(name)]] = True
            out[name] = mask
        return out


def modular_task(p: int = P, alpha: float = 0.5, xi: float = 0.0, seed: int = 0) -> ModularTask:
    """Modular addition with a fraction ``alpha`` of the pairs for training and a fraction ``xi`` of those relabelled.

    ``seed=0`` reproduces the official split (pair order from Python's ``random`` with seed 420; random labels
    from ``torch.randint`` with seed 0). Another seed shifts both, so it is a new draw of the split *and* of the
    corruption. A random label equals the true one with probability 1/p.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must lie strictly between 0 and 1")
    if not 0 <= xi <= 1:
        raise ValueError(f"xi={xi} must lie in [0, 1]")
    order = list(range(p * p))
    random.Random(PAIR_SEED + seed).shuffle(order)
    order_t = torch.tensor(order)
    pairs = torch.stack([order_t // p, order_t % p], dim=1)
    true_labels = (pairs[:, 0] + pairs[:, 1]) % p
    n_train = int(alpha * p * p)
    n_noise = int(xi * n_train)
    labels = true_labels.clone()
    g = torch.Generator().manual_seed(seed)
    labels[:n_noise] = torch.randint(0, p, (n_noise,), generator=g)
    return ModularTask(p, alpha, xi, seed, pairs, labels, true_labels, n_train, n_noise)


# ----------------------------------------------------------------------------------------------- the model


def init_std(width: int) -> float:
    """The paper's init N(0, (16 N)^(-2/3)); the official code writes the same std as 0.5 / (2N)^(1/3)."""
    return (16 * width) ** (-1 / 3)


def init_params(seeds: Sequence[int], p: int = P, width: int = WIDTH, batchnorm: bool = False,
                device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Weights of ``len(seeds)`` networks stacked on a leading model axis; model b is drawn from ``seeds[b]``."""
    std = init_std(width)
    U, V, W = [], [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        U.append(torch.randn(width, p, generator=g) * std)
        V.append(torch.randn(width, p, generator=g) * std)
        W.append(torch.randn(p, width, generator=g) * std)
    params = {"U": torch.stack(U), "V": torch.stack(V), "W": torch.stack(W)}
    if batchnorm:
        params["gamma"] = torch.ones(len(seeds), width)
        params["beta"] = torch.zeros(len(seeds), width)
    return {k: v.to(device) for k, v in params.items()}


# ----------------------------------------------------------------------------------------------- the model (Eq. 1)
# f(m, n) = W φ(U e_m + V e_n), φ(x) = x², as three small functions that both :func:`forward` (autograd) and
# :func:`fused_step` (gradients by hand) call; ``out`` lets the trainer reuse its buffers.


def embed(u_m: torch.Tensor, v_n: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The pre-activations h = U e_m + V e_n, from the looked-up columns u_m = U e_m and v_n = V e_n."""
    # U e_m: a one-hot e_m picks column m of U, so the product is a lookup (done by the caller)
    # h = U e_m + V e_n
    return torch.add(u_m, v_n, out=out)


def activation(h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The MLP's nonlinearity φ(h) = h², elementwise."""
    # φ(h) = h²
    return torch.mul(h, h, out=out)


def readout(a: torch.Tensor, w_t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The outputs f = W a for every example: (B, batch, N) @ (B, N, p) -> (B, batch, p), ``w_t`` = Wᵀ."""
    # f_q = Σ_k W_qk a_k: the rows of a times Wᵀ
    return torch.matmul(a, w_t, out=out)


def forward(params: dict[str, torch.Tensor], m: torch.Tensor, n: torch.Tensor, *,
            bn_state: dict[str, torch.Tensor] | None = None, training: bool = False,
            dropout_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``f(m, n) = W phi(U e_m + V e_n)`` with ``phi(x) = x**2`` for every model: (B, batch, p).

    ``m``, ``n``: (batch,) shared by all models or (B, batch). Multiplying by a one-hot vector picks a column, so
    ``U e_m`` is just ``U[:, :, m]``. ``dropout_scale`` (B, batch, N) multiplies the pre-activations before the
    square (dropout, as the official code places it). ``bn_state`` (running ``mean``/``var``) adds BatchNorm after
    the square (Eq. 5): batch statistics when ``training``, running statistics otherwise.
    """
    U, V, W = params["U"], params["V"], params["W"]
    if m.dim() == 1:
        h = embed(U[:, :, m], V[:, :, n]).transpose(1, 2)  # (B, batch, N)
    else:
        b = torch.arange(U.shape[0], device=U.device)[:, None]
        h = embed(U.transpose(1, 2)[b, m], V.transpose(1, 2)[b, n])
    if dropout_scale is not None:
        h = h * dropout_scale
    a = activation(h)
    if bn_state is not None:
        a = batchnorm(a, params["gamma"], params["beta"], bn_state, training)
    return readout(a, W.transpose(1, 2))


def batchnorm(a: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, state: dict[str, torch.Tensor],
              training: bool, momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``nn.BatchNorm1d`` over the batch axis of (B, batch, N), per model and neuron, with PyTorch's conventions."""
    if training:
        mean, var = a.mean(1), a.var(1, unbiased=False)
        with torch.no_grad():
            nb = a.shape[1]
            state["mean"].mul_(1 - momentum).add_(momentum * mean.detach())
            state["var"].mul_(1 - momentum).add_(momentum * var.detach() * nb / max(nb - 1, 1))
    else:
        mean, var = state["mean"], state["var"]
    return (a - mean[:, None]) / torch.sqrt(var[:, None] + eps) * gamma[:, None] + beta[:, None]


def mse_per_model(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``nn.MSELoss()`` to one-hot targets for each model — the mean over examples *and* the p outputs: (B,)."""
    target = torch.zeros_like(out).scatter_(2, labels[..., None], 1.0)
    return ((out - target) ** 2).mean(dim=(1, 2))


@torch.no_grad()
def adamw_update(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], state: dict, lr: float,
                 weight_decay: torch.Tensor, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8) -> None:
    """One AdamW step for every model at once, with one weight decay per model (B,).

    Decoupled decay, as ``torch.optim.AdamW``: every weight first shrinks by the factor ``1 - lr * wd``, then takes
    the Adam step ``lr * m_hat / (sqrt(v_hat) + eps)``. Adam acts elementwise, so stacking models changes nothing.
    """
    b1, b2 = betas
    state["t"] = t = state.get("t", 0) + 1
    c1, c2 = 1 - b1 ** t, 1 - b2 ** t
    for k, w in params.items():
        g = grads[k]
        m = state.setdefault(("m", k), torch.zeros_like(w))
        v = state.setdefault(("v", k), torch.zeros_like(w))
        w.mul_(1 - lr * weight_decay.to(w.dtype).view((-1,) + (1,) * (w.dim() - 1)))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        w.addcdiv_(m, (v.sqrt() / math.sqrt(c2)).add_(eps), value=-lr / c1)


# The trainer keeps the weights transposed ("embedding" layout: U^T, V^T of shape (B, p, N), W^T of shape (B, N, p))
# so that looking up U e_m copies one contiguous row, and reuses its work buffers between steps.


def _flip(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paper layout <-> embedding layout (the same transpose both ways)."""
    return {k: (v.transpose(1, 2).contiguous() if k in ("U", "V", "W") else v) for k, v in params.items()}


def fused_step(E: dict[str, torch.Tensor], m: torch.Tensor, n: torch.Tensor, onehot: torch.Tensor,
               work: dict[str, torch.Tensor], dropout_scale: torch.Tensor | None = None):
    """Loss (B,) and gradients of the summed per-model MSE, by hand, in preallocated buffers (no autograd).

    With ``h = U e_m + V e_n``, ``a = h**2`` and ``f = W a`` (in embedding layout ``f = a W^T``):
    ``dL/df = 2 (f - y) / (batch p)``, ``dL/dW^T = a^T dL/df``, ``dL/da = dL/df W``, ``dL/dh = 2 h dL/da``, and
    ``dL/dU^T`` adds row ``dL/dh`` of each example into row ``m`` (``index_add``). ``m``, ``n``: (batch,) or (B, batch).
    """
    B, nb, p = onehot.shape
    h, a, out = work["h"][:, :nb], work["a"][:, :nb], work["out"][:, :nb]
    shared = m.dim() == 1
    if shared and h.is_cuda:
        torch.index_select(E["U"], 1, m, out=h)
        torch.index_select(E["V"], 1, n, out=a)
    else:
        for b in range(B):
            torch.index_select(E["U"][b], 0, m if shared else m[b], out=h[b])
            torch.index_select(E["V"][b], 0, n if shared else n[b], out=a[b])
    embed(h, a, out=h)  # h = U e_m + V e_n
    if dropout_scale is not None:
        h.mul_(dropout_scale)
    activation(h, out=a)  # a = φ(h) = h²
    readout(a, E["W"], out=out)  # f = W a
    out.sub_(onehot)
    loss = torch.linalg.vector_norm(out, dim=(1, 2)) ** 2 / (nb * p)
    out.mul_(2.0 / (nb * p))
    grads = {k: work["g" + k] for k in ("U", "V", "W")}
    torch.bmm(a.transpose(1, 2), out, out=grads["W"])
    torch.bmm(out, E["W"].transpose(1, 2), out=a)  # a now holds dL/da
    a.mul_(h).mul_(2.0)  # dL/d(h after dropout)
    if dropout_scale is not None:
        a.mul_(dropout_scale)
    grads["U"].zero_()
    grads["V"].zero_()
    if shared and h.is_cuda:
        grads["U"].index_add_(1, m, a)
        grads["V"].index_add_(1, n, a)
    else:
        for b in range(B):
            grads["U"][b].index_add_(0, m if shared else m[b], a[b])
            grads["V"][b].index_add_(0, n if shared else n[b], a[b])
    return loss, grads


# ----------------------------------------------------------------------------------------------- IPR


def ipr(x: torch.Tensor, dim: int = -1, r: int = 2, full_fft: bool = False) -> torch.Tensor:
    """Inverse participation ratio of ``x``'s discrete Fourier transform along ``dim`` (Eq. 3).

    ``IPR = sum_j |c_j|^(2r) / (sum_j |c_j|^2)^r`` with ``c = rfft(x)``: the one-sided transform of the official
    code (49 coefficients for p = 97, the constant term included). A pure cosine puts all its weight in one rfft
    coefficient, so its IPR is 1; a full FFT splits it evenly between frequencies +k and -k, giving 1/2.
    """
    x = x if x.dtype == torch.float64 else x.float()
    # x̃ = rfft(x) (or the full DFT), and |x̃_j|²
    c = torch.fft.fft(x, dim=dim) if full_fft else torch.fft.rfft(x, dim=dim)
    c2 = c.abs() ** 2
    # IPR = Σ_j |x̃_j|^(2r) / (Σ_j |x̃_j|²)^r (the clamp keeps an all-zero vector at 0, not NaN)
    return (c2 ** r).sum(dim) / (c2.sum(dim) ** r).clamp_min(torch.finfo(c2.dtype).tiny)


def neuron_ipr(params: dict[str, torch.Tensor], parts: bool = False):
    """Per-neuron IPR (Eq. 4): the mean of the IPRs of U's row k, V's row k and W's column k, shape (B, N).

    With ``parts=True`` also returns the three separately.
    """
    # IPR(U_k·), IPR(V_k·), IPR(W_·k): rows of U and V, columns of W
    u, v, w = ipr(params["U"], dim=-1), ipr(params["V"], dim=-1), ipr(params["W"], dim=-2)
    # IPR_k = ⅓ (IPR(U_k·) + IPR(V_k·) + IPR(W_·k))
    k = (u + v + w) / 3
    return (k, {"U": u, "V": v, "W": w}) if parts else k


# ----------------------------------------------------------------------------------------------- analytic solution


def analytic_params(p: int = P, width: int = WIDTH, seed: int = 0) -> dict[str, torch.Tensor]:
    """The periodic solution of Eq. 2, built by hand (one model, stacked as B = 1).

    Neuron k gets a frequency sigma(k) and phases phi_u, phi_v:
    ``U_ki = A cos(2 pi sigma(k) i / p + phi_u)``, ``V_kj = A cos(2 pi sigma(k) j / p + phi_v)``,
    ``W_qk = A cos(-2 pi sigma(k) q / p - phi_u - phi_v)``. The cross term ``2 U_km V_kn`` of the square, times
    ``W_qk``, sums over neurons to ``(A^3 / 2) sum_k cos(2 pi sigma(k) (m + n - q) / p)`` plus terms whose random
    phases make them cancel; the sum peaks at q = m + n mod p. We take A = (2/N)^(1/3) so that the peak is about 1,
    the one-hot target (the amplitude changes neither the argmax nor the IPR). Frequencies cycle through
    1 … (p-1)/2 so each is used about equally often; the phases are uniform on (-pi, pi].
    """
    g = torch.Generator().manual_seed(seed)
    sigma = (torch.randperm(width, generator=g) % ((p - 1) // 2) + 1).double()
    phi_u = (torch.rand(width, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    phi_v = (torch.rand(width, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    amp = (2 / width) ** (1 / 3)
    theta = 2 * math.pi / p * sigma[:, None] * torch.arange(p, dtype=torch.float64)[None, :]  # (N, p)
    U = amp * torch.cos(theta + phi_u[:, None])
    V = amp * torch.cos(theta + phi_v[:, None])
    W = (amp * torch.cos(-theta - (phi_u + phi_v)[:, None])).T  # (p, N)
    return {"U": U[None].float(), "V": V[None].float(), "W": W[None].float()}


# ----------------------------------------------------------------------------------------------- evaluation


def stack_by_pair(tasks: Sequence[ModularTask]) -> dict[str, torch.Tensor]:
    """Labels and subset masks of several tasks, indexed by pair id: each (B, p*p)."""
    parts = [t.by_pair() for t in tasks]
    return {k: torch.stack([d[k] for d in parts]) for k in parts[0]}


@torch.no_grad()
def _evaluate_e(E: dict[str, torch.Tensor], data: dict[str, torch.Tensor], bn_state=None, wkeep=None,
                max_elems: int = 16_000_000) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Scores of every model on all p*p pairs, in pair-id order: h = U^T[m] + V^T[n] by broadcasting, no lookup.

    ``wkeep`` (L, N) scores L pruned copies of one model (B = 1) at once: masking W's columns removes a neuron's
    output exactly as zeroing its weights does.
    """
    Ut, Vt, Wt = E["U"], E["V"], E["W"]
    B, p, N = Ut.shape
    if wkeep is not None:  # (L, N) masks of one model -> one wide matrix (N, L * p)
        L = wkeep.shape[0]
        Wwide = (wkeep.to(Wt.dtype)[:, :, None] * Wt[0][None]).permute(1, 0, 2).reshape(N, L * p)
    rows = max(1, min(p, max_elems // (B * p * N)))
    lab = data["labels"]
    nm = (wkeep.shape[0] if wkeep is not None else B)
    correct = torch.empty(nm, p * p, dtype=torch.bool, device=Ut.device)
    sq = torch.empty(nm, p * p, device=Ut.device)
    for r0 in range(0, p, rows):
        r1 = min(p, r0 + rows)
        a = (Ut[:, r0:r1, None, :] + Vt[:, None, :, :]).reshape(B, (r1 - r0) * p, N).square_()
        if bn_state is not None:
            a = batchnorm(a, E["gamma"], E["beta"], bn_state, training=False)
        cols = slice(r0 * p, r1 * p)
        if wkeep is None:
            out = torch.bmm(a, Wt)  # (B, rows * p, p)
            lab_c = lab[:, cols]
        else:
            out = (a[0] @ Wwide).view(-1, L, p).transpose(0, 1)  # (L, rows * p, p)
            lab_c = lab[:, cols].expand(L, -1)
        correct[:, cols] = out.argmax(-1) == lab_c
        # sum_q (f_q - y_q)^2 / p = (|f|^2 - 2 f_label + 1) / p
        sq[:, cols] = (out.square().sum(-1) - 2 * out.gather(-1, lab_c[..., None]).squeeze(-1) + 1) / p
    acc, loss = {}, {}
    for k in SUBSETS:
        mask = data[k].expand(nm, -1)
        count = mask.sum(1)
        acc[k] = torch.where(count > 0, (correct & mask).sum(1) / count.clamp_min(1), torch.nan)
        if k in ("train", "test"):
            loss[k] = (sq * mask).sum(1) / count.clamp_min(1)
    return acc, loss


def evaluate(params: dict[str, torch.Tensor], tasks: Sequence[ModularTask], bn_state=None) -> dict[str, np.ndarray]:
    """Accuracy of each model on its task's train (corrupted labels), test, corrupted and clean subsets: (B,) each."""
    device = params["U"].device
    data = {k: v.to(device) for k, v in stack_by_pair(tasks).items()}
    acc, _ = _evaluate_e(_flip(params), data, bn_state)
    return {k: v.cpu().numpy() for k, v in acc.items()}


# ----------------------------------------------------------------------------------------------- training


@dataclass
class Run:
    """What :func:`train` returns: the history of every model and its final weights (on the CPU)."""

    steps: np.ndarray  # (T,) the steps at which we measured (0 = initialisation)
    acc: dict[str, np.ndarray]  # subset -> (T, B) accuracy
    loss: dict[str, np.ndarray]  # "train", "test" -> (T, B) MSE
    mean_ipr: np.ndarray  # (T, B)
    params: dict[str, torch.Tensor]
    bn_state: dict[str, torch.Tensor] | None = None
    neuron_ipr: np.ndarray | None = None  # (T, B, N) when asked for
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> weights
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def model(self, b: int) -> dict[str, torch.Tensor]:
        """The weights of model ``b`` alone, still stacked (B = 1)."""
        return {k: v[b:b + 1] for k, v in self.params.items()}


def _per_model(value, B: int, device) -> torch.Tensor:
    return torch.as_tensor(np.broadcast_to(np.asarray(value, float), (B,)).copy(), dtype=torch.float32, device=device)


@contextmanager
def _one_thread_without_subnormals(device: torch.device):
    """Weight decay drives weights and Adam's moments towards zero, and subnormal floats make CPU arithmetic very
    slow (measured at wd = 20 on 2 threads: from 18 down to 0.4 steps/s within 1,300 steps). Flushing them to zero
    costs no accuracy, but torch sets the flag for the calling thread only, so CPU training runs on one thread: as
    fast as two for these small matmuls (measured: 19 steps/s for 3 networks, and it stays there). torch's
    defaults come back afterwards, also when the training is interrupted."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def train(tasks: Sequence[ModularTask], *, steps: int, seeds: Sequence[int],
          weight_decay: float | Sequence[float] = 0.0, dropout: float | Sequence[float] = 0.0,
          batchnorm: bool = False, batch_size: int | None = None, lr: float = 0.01, width: int = WIDTH,
          log_every: int = 10, snapshot_steps: Sequence[int] = (), record_neuron_ipr: bool = False,
          device: str | torch.device = "cpu", progress: Callable | None = None, desc: str = "training") -> Run:
    """Train ``len(tasks)`` networks together: model b on ``tasks[b]`` from init seed ``seeds[b]``.

    AdamW (betas 0.9/0.98, eps 1e-8) on the MSE to one-hot targets. Full batch unless ``batch_size``: then one
    shuffled order per epoch shared by all models, the last partial batch dropped (as the official code).
    ``weight_decay`` and ``dropout`` take one value for all models or one per model. We score every model on all
    p*p pairs at step 0, step 1, every ``log_every`` steps and the last; ``progress`` is a tqdm-like factory.
    Plain networks use :func:`fused_step`; BatchNorm ones use autograd through :func:`forward`.
    A dry run (:func:`prunebook.config.dry_steps`) trains only the first steps of the schedule; a snapshot asked for
    past them is taken at its last step and still filed under the step asked for.
    """
    planned = steps
    steps = dry_steps(steps)
    snapshot_at = [(min(s, steps) if steps < planned else s, s) for s in snapshot_steps]  # (taken at, filed as)
    device = torch.device(device)
    B = len(tasks)
    if len(seeds) != B:
        raise ValueError(f"{B} tasks but {len(seeds)} seeds")
    if len({t.n_train for t in tasks}) != 1 or len({t.p for t in tasks}) != 1:
        raise ValueError("networks trained together must share p and the training-set size (alpha)")
    p, n_train = tasks[0].p, tasks[0].n_train
    wd, dp = _per_model(weight_decay, B, device), _per_model(dropout, B, device)
    use_dropout = bool((dp > 0).any())
    data = {k: v.to(device) for k, v in stack_by_pair(tasks).items()}
    tm = torch.stack([t.pairs[:n_train, 0] for t in tasks]).to(device)
    tn = torch.stack([t.pairs[:n_train, 1] for t in tasks]).to(device)
    ty = torch.stack([t.labels[:n_train] for t in tasks]).to(device)
    if bool((tm == tm[:1]).all() and (tn == tn[:1]).all()):  # same training pairs: one index vector for all
        tm, tn = tm[0], tn[0]
    E = _flip(init_params(seeds, p, width, batchnorm, device))
    bn_state = ({"mean": torch.zeros(B, width, device=device), "var": torch.ones(B, width, device=device)}
                if batchnorm else None)
    gen = torch.Generator(device=device).manual_seed(1_000_003 * int(seeds[0]) + 7)
    nb = batch_size or n_train
    work = {} if batchnorm else {
        "h": torch.empty(B, nb, width, device=device), "a": torch.empty(B, nb, width, device=device),
        "out": torch.empty(B, nb, p, device=device), "gU": torch.empty(B, p, width, device=device),
        "gV": torch.empty(B, p, width, device=device), "gW": torch.empty(B, width, p, device=device)}
    scale = torch.empty(B, nb, width, device=device) if use_dropout else None
    keep_prob = (1 - dp).clamp_min(1e-6)[:, None, None]
    full_onehot = None if batch_size else torch.zeros(B, n_train, p, device=device).scatter_(2, ty[..., None], 1.0)
    opt_state: dict = {}
    log_at = set(range(0, steps + 1, max(1, log_every))) | {0, 1, steps}
    hist = {"steps": [], "ipr": [], "nipr": [], **{f"acc_{k}": [] for k in SUBSETS}, "loss_train": [],
            "loss_test": []}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def record(step: int) -> None:
        acc, loss = _evaluate_e(E, data, bn_state)
        hist["steps"].append(step)
        for k in SUBSETS:
            hist[f"acc_{k}"].append(acc[k].cpu().numpy())
        for k in ("train", "test"):
            hist[f"loss_{k}"].append(loss[k].cpu().numpy())
        k_ipr = neuron_ipr(_flip(E)).cpu().numpy()
        hist["ipr"].append(k_ipr.mean(-1))
        if record_neuron_ipr:
            hist["nipr"].append(k_ipr.astype(np.float32))
        for at, asked in snapshot_at:
            if step == at:
                snapshots[asked] = {k: v.cpu().clone() for k, v in _flip(E).items()}

    with _one_thread_without_subnormals(device):
        t0 = time.perf_counter()
        record(0)
        bar = progress(total=steps, desc=desc) if progress is not None else None
        per_epoch = n_train // batch_size if batch_size else 1
        perm = None
        for step in range(1, steps + 1):
            if batch_size:
                i = (step - 1) % per_epoch
                if i == 0:
                    perm = torch.randperm(n_train, generator=gen, device=device)[:per_epoch * batch_size]
                idx = perm[i * batch_size:(i + 1) * batch_size]
                bm, bn_ = (tm[idx], tn[idx]) if tm.dim() == 1 else (tm[:, idx], tn[:, idx])
                by = ty[:, idx]
                onehot = torch.zeros(B, batch_size, p, device=device).scatter_(2, by[..., None], 1.0)
            else:
                bm, bn_, by, onehot = tm, tn, ty, full_onehot
            if use_dropout:
                torch.rand(scale.shape, generator=gen, device=device, out=scale)
                scale.ge_(1 - keep_prob).div_(keep_prob)  # 1/(1-rate) where kept, 0 where dropped
            if batchnorm:
                for w in E.values():
                    w.requires_grad_(True)
                out = forward(_flip_view(E), bm, bn_, bn_state=bn_state, training=True, dropout_scale=scale)
                grads = dict(zip(E, torch.autograd.grad(mse_per_model(out, by).sum(), list(E.values()))))
                for w in E.values():
                    w.requires_grad_(False)
            else:
                _, grads = fused_step(E, bm, bn_, onehot, work, scale)
            adamw_update(E, grads, opt_state, lr, wd)
            if step in log_at:
                record(step)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return Run(
        steps=np.array(hist["steps"]), acc={k: np.stack(hist[f"acc_{k}"]) for k in SUBSETS},
        loss={k: np.stack(hist[f"loss_{k}"]) for k in ("train", "test")}, mean_ipr=np.stack(hist["ipr"]),
        params={k: v.detach().cpu() for k, v in _flip(E).items()},
        bn_state=None if bn_state is None else {k: v.cpu() for k, v in bn_state.items()},
        neuron_ipr=np.stack(hist["nipr"]) if record_neuron_ipr else None, snapshots=snapshots,
        seconds=time.perf_counter() - t0,
        config={"steps": steps, "seeds": list(map(int, seeds)), "alpha": tasks[0].alpha, "p": p,
                "xi": [t.xi for t in tasks], "weight_decay": wd.tolist(), "dropout": dp.tolist(),
                "batchnorm": batchnorm, "batch_size": batch_size, "lr": lr, "width": width},
    )


def _flip_view(E: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Paper-layout *views* of embedding-layout weights (gradients flow back to ``E``)."""
    return {k: (v.transpose(1, 2) if k in ("U", "V", "W") else v) for k, v in E.items()}


# ----------------------------------------------------------------------------------------------- pruning


def prune_neurons(params: dict[str, torch.Tensor], neurons: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """A copy of (stacked) weights with the given neurons removed: their rows of U and V and column of W set to 0."""
    out = {k: v.clone() for k, v in params.items()}
    idx = torch.as_tensor(neurons, dtype=torch.long)
    out["U"][:, idx, :] = 0
    out["V"][:, idx, :] = 0
    out["W"][:, :, idx] = 0
    return out


def pruning_curves(params: dict[str, torch.Tensor], task: ModularTask, orders: dict[str, torch.Tensor],
                   fractions: Sequence[float], bn_state=None) -> dict:
    """Accuracy on every subset after cumulatively pruning the first ``round(f * N)`` neurons of each order.

    ``params`` is one model (B = 1); ``orders`` maps a name to a permutation of the N neurons. No retraining.
    All pruning levels of one order are scored in one pass, as copies of the network with W's columns masked.
    """
    width = params["W"].shape[-1]
    data = stack_by_pair([task])
    E = _flip(params)
    counts = [int(round(f * width)) for f in fractions]
    curves = {}
    for name, order in orders.items():
        keep = torch.ones(len(counts), width)
        for i, c in enumerate(counts):
            keep[i, torch.as_tensor(order[:c], dtype=torch.long)] = 0
        acc, _ = _evaluate_e(E, data, bn_state, wkeep=keep)
        curves[name] = {k: v.numpy() for k, v in acc.items()}
    return {"fractions": np.asarray(fractions, float), "counts": np.array(counts), "curves": curves}


# ----------------------------------------------------------------------------------------------- phases


def classify_phase(train_acc: float, test_acc: float, xi: float, threshold: float = 0.9) -> str:
    """The phase of a trained network by the rules of Appendix C (Table 2).

    ``train_acc`` is measured on the (corrupted) training labels, ``test_acc`` on the clean test set.
    coexistence: test >= 90 % and train >= 90 %; partial inversion: test >= 90 % and 100(1.05 - xi) % <= train < 90 %;
    full inversion: test >= 90 % and train < 100(1.05 - xi) %; memorization: test < 90 % and train >= 90 %;
    forgetting (the paper also says confusion): both below 90 %.
    """
    tol = 1e-9  # so that a boundary value such as train = 1.05 - 0.35 = 0.70 counts as written
    if test_acc >= threshold - tol:
        if train_acc >= threshold - tol:
            return "coexistence"
        return "partial inversion" if train_acc >= 1.05 - xi - tol else "full inversion"
    return "memorization" if train_acc >= threshold - tol else "forgetting"


def phase_slice(alpha: float, xis: Sequence[float], regularizer: dict, *, steps: int, seed: int = 0, p: int = P,
                width: int = WIDTH, device="cpu", progress=None) -> dict:
    """One column group of a phase diagram: every ``xi`` at one ``alpha`` under one regulariser, trained together.

    ``regularizer`` holds any of ``weight_decay``, ``dropout``, ``batchnorm``, ``batch_size``, ``lr`` (default
    0.01) and ``steps`` (default ``steps``). Returns final accuracies, mean IPR, phase names and the seconds taken.
    """
    tasks = [modular_task(p, alpha, float(x), seed) for x in xis]
    run = train(tasks, steps=int(regularizer.get("steps", steps)), seeds=[seed] * len(tasks),
                weight_decay=float(regularizer.get("weight_decay", 0.0)),
                dropout=float(regularizer.get("dropout", 0.0)), batchnorm=bool(regularizer.get("batchnorm", False)),
                batch_size=regularizer.get("batch_size"), lr=float(regularizer.get("lr", 0.01)), width=width,
                log_every=10**9, device=device, progress=progress, desc=f"alpha={alpha:.2f}")
    out = {k: run.acc[k][-1] for k in SUBSETS}
    out["mean_ipr"] = run.mean_ipr[-1]
    out["phase"] = [classify_phase(tr, te, x) for tr, te, x in zip(out["train"], out["test"], xis)]
    out["seconds"] = run.seconds
    return out


def spearman(x, y) -> float:
    """Spearman's rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x).ravel(), np.asarray(y).ravel()).statistic)


# ----------------------------------------------------------------------------------------------- notebook helpers


def regimes(p: int, width: int, alpha: float, xi: float, wds: Sequence[float], steps: int, seeds: Sequence[int],
            log_every: int, device="cpu", progress=None) -> Run:
    """The three regimes of Figs. 1, 4 and 6: one corrupted task per seed, each trained at every weight decay.

    Model ``b = i_seed * len(wds) + i_wd`` (notebooks 02 and 03 share this run through the cache).
    """
    tasks, s_list, w_list = [], [], []
    for s in seeds:
        task = modular_task(p, alpha, xi, s)
        for w in wds:
            tasks.append(task)
            s_list.append(s)
            w_list.append(w)
    return train(tasks, steps=steps, seeds=s_list, weight_decay=w_list, width=width, log_every=log_every,
                 record_neuron_ipr=True, device=device, progress=progress,
                 desc=f"{len(tasks)} networks (wd x seed)")


def first_step(steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """The first logged step at which ``values`` reach ``threshold`` (None if never)."""
    hit = np.nonzero(np.asarray(values) >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None


def plot_phase_map(ax, alphas: Sequence[float], xis: Sequence[float], phases: Sequence[Sequence[str]],
                   values: np.ndarray | None = None, title: str = "") -> None:
    """Draw one phase diagram: cells coloured by phase, alpha across and xi up (``phases[i_xi][i_alpha]``).

    ``values`` (optional, (len(xis), len(alphas), 2)) writes train/test accuracy into each cell.
    """
    from matplotlib.colors import ListedColormap

    codes = np.array([[PHASES.index(ph) for ph in row] for row in phases], float)
    da = (alphas[1] - alphas[0]) if len(alphas) > 1 else 0.1
    dx = (xis[1] - xis[0]) if len(xis) > 1 else 0.1
    edges_a = np.concatenate([[alphas[0] - da / 2], np.asarray(alphas, float) + da / 2])
    edges_x = np.concatenate([[xis[0] - dx / 2], np.asarray(xis, float) + dx / 2])
    cmap = ListedColormap([PHASE_COLORS[ph] for ph in PHASES])
    ax.pcolormesh(edges_a, edges_x, codes, cmap=cmap, vmin=-0.5, vmax=len(PHASES) - 0.5, edgecolors="white",
                  linewidth=0.5)
    if values is not None:
        for i, x in enumerate(xis):
            for j, a in enumerate(alphas):
                ax.text(a, x, f"{values[i, j, 0]:.2f}\n{values[i, j, 1]:.2f}", ha="center", va="center",
                        fontsize=7, color="white")
    ax.set_xlabel(r"training fraction $\alpha$")
    ax.set_ylabel(r"corrupted fraction $\xi$")
    ax.set_title(title)
    ax.grid(False)
