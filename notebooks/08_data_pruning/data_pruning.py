"""Sorscher, Geirhos, Shekhar, Ganguli & Morcos, "Beyond neural scaling laws: beating power law scaling via data
pruning" (NeurIPS 2022): the method code of the 08_data_pruning series.

Two halves.

**The perceptron (notebook 01).** A teacher ``T`` labels Gaussian inputs ``x ~ N(0, I_N)`` by ``y = sign(T·x)``;
``P = alpha N`` examples are drawn, a pruning metric keeps a fraction ``f`` of them (``alpha_prune = f alpha``), and a
student perceptron is trained on what is left to maximum margin. Test error is ``arccos(R) / pi`` with ``R`` the
cosine between student and teacher.

- :func:`teacher_student_data` — the plain generator (a random teacher, labels ``sign(T·x)``).
- :func:`keep_indices` — keep the easiest, hardest or a random fraction of a score vector (exact counts).
- :func:`sample_pruned_perceptron` — the same experiment, vectorised over trials: by rotation invariance the teacher
  is ``e_1`` and the probe ``cos(theta) e_1 + sin(theta) e_2``, so only the two margins of every example are drawn
  for all ``P`` examples, and the other ``N - 2`` coordinates only for the ones kept.
- :func:`max_margin` — a batched hard-margin SVM through the origin (finite Newton on the squared hinge).
- :func:`theory_perceptron` — the replica-symmetric theory: the order parameters of the max-margin student trained
  on pruned data, from the saddle-point conditions solved with scipy.

**Scores and pruning on images (notebooks 02–04).**

- :func:`el2n`, :func:`grand` (Paul et al. 2021), :func:`forgetting_events` (Toneva et al. 2019),
  :func:`nearest_prototype` (scikit-learn's k-means in a self-supervised embedding; this paper, §5);
- :func:`supervised_scores` trains a few short CNN runs and records EL2N, GraNd and forgetting from them (02);
- :func:`simclr_train` and :func:`embed` train a tiny SimCLR-style contrastive encoder (no labels) and embed
  the images (02; 04 embeds every training image with it, :func:`embed_with`);
- the linear-probe regime of notebooks 03–04: :func:`whitened_pcs` (fixed features), :func:`fit_probe` (a softmax
  probe fitted to convergence), :func:`early_probe_scores` (EL2N, GraNd and forgetting for that probe),
  :func:`pruned_indices` (draw an original dataset, keep a fraction per class or per cluster) and
  :func:`probe_runs` (prune, fit and test for every seed, through the cache).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize, special
from torch import nn

KEEPS = ("hard", "easy", "random")

# ================================================================================================ perceptron


def teacher_student_data(n: int, dim: int, generator: torch.Generator | None = None,
                         teacher: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` Gaussian inputs in ``dim`` dimensions, labelled ``sign(T·x)`` by a random unit teacher ``T``.

    Returns ``(x, y, T)``: ``x`` is ``n×dim``, ``y`` is ±1 (float), ``T`` has unit norm."""
    if teacher is None:
        teacher = torch.randn(dim, generator=generator, dtype=torch.float64)
        teacher = teacher / teacher.norm()
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = torch.sign(x @ teacher)
    y[y == 0] = 1.0
    return x, y, teacher


def n_keep(n: int, frac: float) -> int:
    """How many of ``n`` examples a keep fraction ``frac`` keeps (rounded, at least one)."""
    if not 0 < frac <= 1:
        raise ValueError(f"keep fraction {frac!r} must be in (0, 1]")
    return max(1, min(n, round(frac * n)))


def keep_indices(score: torch.Tensor, frac: float, keep: str = "hard",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the examples kept when a fraction ``frac`` of them survives pruning.

    ``score`` is a difficulty score along the last axis: *high = hard* (EL2N, forgetting, distance to a prototype;
    for a margin, pass ``-|margin|``). ``keep='hard'`` keeps the highest scores, ``'easy'`` the lowest, ``'random'``
    a uniformly random subset. Exactly ``n_keep(n, frac)`` indices per row, in increasing order of index."""
    if keep not in KEEPS:
        raise ValueError(f"keep={keep!r}; choose one of {KEEPS}")
    score = torch.as_tensor(score)
    k = n_keep(score.shape[-1], frac)
    if keep == "random":
        noise = torch.rand(score.shape, generator=generator, dtype=torch.float64)
        idx = noise.topk(k, dim=-1).indices
    else:
        # a stable sort, so ties go to the lower index and the result is deterministic
        order = torch.sort(score, dim=-1, descending=keep == "hard", stable=True).indices
        idx = order[..., :k]
    return idx.sort(dim=-1).values


def keep_indices_grouped(score: torch.Tensor, groups: torch.Tensor, frac: float, keep: str = "hard",
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`keep_indices` applied within each group (each class, or each k-means cluster), so every group keeps
    the same fraction ``frac`` of its members (rounded per group). Returns sorted indices into ``score``."""
    groups = torch.as_tensor(groups)
    kept = []
    for g in torch.unique(groups):
        members = torch.nonzero(groups == g).flatten()
        kept.append(members[keep_indices(torch.as_tensor(score)[members], frac, keep, generator)])
    return torch.cat(kept).sort().values


def probe_direction(theta: float, dim: int) -> torch.Tensor:
    """The unit probe at angle ``theta`` (radians) to the teacher ``e_1``: ``cos(theta) e_1 + sin(theta) e_2``."""
    p = torch.zeros(dim, dtype=torch.float64)
    p[0] = math.cos(theta)
    p[1] = math.sin(theta)
    return p


def sample_pruned_perceptron(trials: int, n_total: int, dim: int, frac: float, keep: str = "hard",
                             theta: float = 0.0, generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``trials`` independent pruned training sets, as ``(x, y)`` of shapes ``trials×k×dim`` and ``trials×k``.

    Each trial draws ``n_total`` examples, scores them by their margin along a probe at angle ``theta`` to the
    teacher (``theta = 0``: the teacher itself, the perfect metric) and keeps ``k = n_keep(n_total, frac)``:
    the smallest ``|margin|`` (``hard``), the largest (``easy``) or a random subset. The teacher is ``e_1``; only
    the kept examples get their ``dim - 2`` coordinates orthogonal to the teacher–probe plane."""
    k = n_keep(n_total, frac)
    plane = torch.randn(trials, n_total, 2, generator=generator, dtype=torch.float64)
    z_teacher = plane[..., 0]
    z_probe = math.cos(theta) * plane[..., 0] + math.sin(theta) * plane[..., 1]
    idx = keep_indices(-z_probe.abs(), frac, keep, generator)  # difficulty = -|probe margin|
    kept = torch.gather(plane, 1, idx[..., None].expand(-1, -1, 2))
    rest = torch.randn(trials, k, dim - 2, generator=generator, dtype=torch.float64)
    x = torch.cat([kept, rest], dim=-1)
    y = torch.sign(torch.gather(z_teacher, 1, idx))
    y[y == 0] = 1.0
    return x, y


def max_margin(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-8, iters: int = 100, tol: float = 1e-12
               ) -> torch.Tensor:
    """The hard-margin SVM through the origin for a batch of separable problems: ``B×n×d`` inputs, ``B×n`` labels.

    Minimises ``lam/2 |w|^2 + 1/2 sum_i max(0, 1 - y_i w·x_i)^2`` by Newton's method with an exact line search
    (the loss is piecewise quadratic, so each ``lam`` needs only a few steps once the set of examples inside the
    margin stops changing; Keerthi & DeCoste 2005). ``lam`` is lowered from 1 to its final value by factors of
    10, each stage starting from the last; as ``lam -> 0`` the minimiser tends to the maximum-margin direction.
    Returns unit vectors, ``B×d``."""
    yx = y.double()[..., None] * x.double()  # each row is y_i x_i
    b, n, d = yx.shape
    w = torch.zeros(b, d, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64)
    stages = [10.0 ** -k for k in range(int(round(-math.log10(lam))) + 1)] if lam < 1 else [lam]
    for stage_lam in stages:
        for _ in range(iters):
            m = torch.einsum("bnd,bd->bn", yx, w)
            active = (m < 1).double()
            grad = stage_lam * w - torch.einsum("bn,bnd->bd", active * (1 - m), yx)
            hess = stage_lam * eye + torch.bmm((yx * active[..., None]).transpose(1, 2), yx)
            step = torch.linalg.solve(hess, grad)  # the Newton point is w - step
            t = _line_search(w, step, m, torch.einsum("bnd,bd->bn", yx, step), stage_lam)
            w_new = w - t[:, None] * step
            moved = ((w_new - w).norm(dim=-1) / w_new.norm(dim=-1).clamp_min(1e-300)).max()
            w = w_new
            if moved < tol:
                break
    return w / w.norm(dim=-1, keepdim=True)


def _line_search(w: torch.Tensor, step: torch.Tensor, m: torch.Tensor, dm: torch.Tensor, lam: float) -> torch.Tensor:
    """The exact minimiser ``t >= 0`` of the objective along ``w - t step`` (a convex piecewise quadratic in ``t``),
    by bisection on its derivative, for every problem of the batch at once."""
    ws, ss = (w * step).sum(-1), (step * step).sum(-1)

    def slope(t: torch.Tensor) -> torch.Tensor:
        return lam * (t * ss - ws) + ((1 - m + t[:, None] * dm).clamp_min(0) * dm).sum(-1)

    lo, hi = torch.zeros_like(ws), torch.ones_like(ws)
    for _ in range(60):  # grow the bracket until the slope turns positive
        low = slope(hi) < 0
        if not low.any():
            break
        hi = torch.where(low, 2 * hi, hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        low = slope(mid) < 0
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    return (lo + hi) / 2


def perceptron_error(student: torch.Tensor, theta_teacher: torch.Tensor | None = None) -> torch.Tensor:
    """Test error ``arccos(R)/pi`` of unit students (``B×d``) against the teacher (``e_1`` unless given)."""
    r = student[..., 0] if theta_teacher is None else student @ theta_teacher
    return torch.arccos(r.clamp(-1, 1)) / math.pi


def simulate_perceptron(alpha_prune: Sequence[float], fracs: Sequence[float], dim: int, trials: int,
                        keeps: Sequence[str] = ("hard", "easy"), theta: float = 0.0, seed: int = 0,
                        progress=None) -> dict[str, np.ndarray]:
    """Test error of the max-margin student for every ``(keep, f, alpha_prune)``, ``trials`` runs each.

    The kept set has ``round(alpha_prune * dim)`` examples for every ``f``, so one batch holds every keep rule,
    fraction and trial of an ``alpha_prune``. Returns ``error[keep, f, alpha, trial]`` and ``margin`` (the
    student's minimum margin ``kappa``) of the same shape."""
    g = torch.Generator().manual_seed(seed)
    shape = (len(keeps), len(fracs), len(alpha_prune), trials)
    error, margin = np.zeros(shape), np.zeros(shape)
    items = list(enumerate(alpha_prune))
    for a_i, a in (progress(items, desc="simulate") if progress else items):
        k = max(1, round(a * dim))
        xs, ys = [], []
        for keep in keeps:
            for f in fracs:
                n_total = max(k, round(k / f))
                x, y = sample_pruned_perceptron(trials, n_total, dim, k / n_total, keep, theta, g)
                xs.append(x)
                ys.append(y)
        x, y = torch.cat(xs), torch.cat(ys)
        w = max_margin(x, y)
        err = perceptron_error(w).reshape(len(keeps), len(fracs), trials)
        kap = (y[..., None] * x @ w[..., None]).squeeze(-1).min(-1).values.reshape(len(keeps), len(fracs), trials)
        error[:, :, a_i] = err.numpy()
        margin[:, :, a_i] = kap.numpy()
    return {"error": error, "margin": margin}


# ------------------------------------------------------------------------------------------- replica theory

def _gauss_sq(w: np.ndarray) -> np.ndarray:
    """``F(w) = E_t[(w - t)_+^2]`` for ``t ~ N(0, 1)``: ``(1 + w^2) Phi(w) + w phi(w)``."""
    return (1 + w * w) * special.ndtr(w) + w * np.exp(-0.5 * w * w) / math.sqrt(2 * math.pi)


def _gauss_sq_prime(w: np.ndarray) -> np.ndarray:
    """``F'(w) = 2 (w Phi(w) + phi(w))``."""
    return 2 * (w * special.ndtr(w) + np.exp(-0.5 * w * w) / math.sqrt(2 * math.pi))


def keep_threshold(frac: float, keep: str) -> float:
    """The margin threshold ``gamma`` that keeps a fraction ``frac`` of ``N(0, 1)`` margins: ``|z| < gamma`` for
    ``hard``, ``|z| > gamma`` for ``easy``."""
    if keep == "hard":
        return float(special.ndtri((1 + frac) / 2))
    if keep == "easy":
        return float(special.ndtri(1 - frac / 2))
    raise ValueError(f"keep={keep!r} has no threshold; choose 'hard' or 'easy'")


@dataclass
class KeptMargins:
    """Quadrature nodes for the kept examples' margins: teacher margin ``z_t``, probe margin ``z_p``, label ``y``
    and weights summing to one (the pruned, renormalised distribution, folded onto ``z_p >= 0``)."""

    z_t: np.ndarray
    z_p: np.ndarray
    y: np.ndarray
    weight: np.ndarray


def kept_margins(frac: float, keep: str, theta: float = 0.0, n_probe: int = 160, n_teacher: int = 48,
                 span: float = 9.0) -> KeptMargins:
    """Gauss–Legendre quadrature of the margin distribution that survives pruning by the probe at angle ``theta``.

    The probe margin ``z_p`` is restricted to the kept region (``|z_p| < gamma`` hard, ``> gamma`` easy, all for
    random or ``f = 1``); given it, the teacher margin is ``z_t = cos(theta) z_p + sin(theta) t`` with ``t ~ N(0, 1)``;
    the label is ``sign(z_t)``. The joint law is symmetric under ``(z_p, z_t) -> -(z_p, z_t)``, which leaves every
    quantity we need unchanged, so only ``z_p >= 0`` is integrated."""
    if keep == "random" or frac >= 1:
        lo, hi = 0.0, span
    elif keep == "hard":
        lo, hi = 0.0, keep_threshold(frac, "hard")
    else:
        lo = keep_threshold(frac, "easy")
        hi = lo + span
    u, wu = np.polynomial.legendre.leggauss(n_probe)
    zp = lo + (hi - lo) * (u + 1) / 2
    wp = (hi - lo) / 2 * wu * np.exp(-0.5 * zp ** 2)
    wp = wp / wp.sum()
    c, s = math.cos(theta), math.sin(theta)
    if s < 1e-12:
        return KeptMargins(zp, zp, np.ones_like(zp), wp)
    # t splits at t0 = -c z_p / s, where the label changes sign: integrate each side separately.
    v, wv = np.polynomial.legendre.leggauss(n_teacher)
    t0 = np.clip(-c * zp / s, -span, span)
    parts = []
    for a, b in ((np.full_like(t0, -span), t0), (t0, np.full_like(t0, span))):
        t = a[:, None] + (b - a)[:, None] * (v[None] + 1) / 2
        wt = (b - a)[:, None] / 2 * wv[None] * np.exp(-0.5 * t ** 2)
        parts.append((t, wt))
    t = np.concatenate([p[0] for p in parts], 1)
    wt = np.concatenate([p[1] for p in parts], 1)
    wt = wt / wt.sum(1, keepdims=True)
    z_t = c * zp[:, None] + s * t
    y = np.where(z_t >= 0, 1.0, -1.0)
    weight = wp[:, None] * wt
    zp2 = np.broadcast_to(zp[:, None], z_t.shape)
    return KeptMargins(z_t.ravel(), zp2.ravel(), y.ravel(), weight.ravel())


@dataclass
class TheoryPoint:
    alpha_prune: float
    frac: float
    keep: str
    theta: float
    R: float  # cosine between the student and the teacher
    rho: float  # cosine between the student and the probe
    kappa: float  # the maximal margin
    error: float  # arccos(R) / pi


def _solve_u(alpha: float, w: np.ndarray, weight: np.ndarray) -> float:
    """The ``u`` with ``alpha E[F(u - w)] = 1`` (``F`` increases, so the root is unique)."""
    g = lambda u: alpha * float(weight @ _gauss_sq(u - w)) - 1
    lo, hi = -1.0, 1.0
    while g(lo) > 0:
        lo *= 2
    while g(hi) < 0:
        hi *= 2
    return optimize.brentq(g, lo, hi, xtol=1e-13, rtol=1e-13)


def theory_perceptron(alpha_prune: float, frac: float, keep: str = "hard", theta: float = 0.0,
                      margins: KeptMargins | None = None, start: Sequence[float] | None = None) -> TheoryPoint:
    """Replica-symmetric prediction for the max-margin student on ``alpha_prune N`` kept examples.

    With ``beta`` the student's field written as ``beta_t z_t + beta_p z_p`` plus independent Gaussian noise of
    variance ``s^2``, rescale ``b = beta / s``. At the maximal margin the Gardner volume shrinks to a point, which
    gives (see notebook 01 for the derivation)

        alpha_prune E[ F(u - y b·z) ] = 1,          kappa = u / sqrt(1 + b^T C b),

    maximised over ``b``; ``C`` is the covariance of ``(z_t, z_p)`` (``[[1, cos theta], [cos theta, 1]]``) and
    ``F(w) = E_t[(w - t)_+^2]``. Then ``R = (C b)_t / sqrt(1 + b^T C b)`` and ``rho = (C b)_p / sqrt(...)``.
    For ``theta = 0`` the two margins coincide and ``b`` is one number."""
    m = margins or kept_margins(frac, keep, theta)
    c = math.cos(theta)
    if math.sin(theta) < 1e-12:
        zy = m.y * m.z_t  # = |z|

        def neg_kappa(r: float) -> float:
            return -_solve_u(alpha_prune, r * zy, m.weight) / math.sqrt(1 + r * r)

        # kappa(r) is unimodal: bracket its maximum on a log grid, then refine
        grid = np.geomspace(1e-3, 1e6, 91)
        vals = [neg_kappa(r) for r in grid]
        i = int(np.argmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = optimize.minimize_scalar(neg_kappa, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-10 * hi})
        r = float(res.x)
        kappa = -float(res.fun)
        R = r / math.sqrt(1 + r * r)
        return TheoryPoint(alpha_prune, frac, keep, theta, R, R, kappa, math.acos(min(R, 1.0)) / math.pi)

    cov = np.array([[1.0, c], [c, 1.0]])

    def neg_kappa_grad(b: np.ndarray) -> tuple[float, np.ndarray]:
        w = m.y * (b[0] * m.z_t + b[1] * m.z_p)
        u = _solve_u(alpha_prune, w, m.weight)
        fp = m.weight * _gauss_sq_prime(u - w)
        du = np.array([fp @ (m.y * m.z_t), fp @ (m.y * m.z_p)]) / fp.sum()  # implicit derivative of u
        q = 1 + b @ cov @ b
        kappa = u / math.sqrt(q)
        grad = du / math.sqrt(q) - u * (cov @ b) / q ** 1.5
        return -kappa, -grad

    x0 = np.asarray(start if start is not None else [1.0, 0.0], dtype=float)
    res = optimize.minimize(neg_kappa_grad, x0, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 500})
    b = res.x
    q = 1 + b @ cov @ b
    R, rho = (cov @ b) / math.sqrt(q)
    return TheoryPoint(alpha_prune, frac, keep, theta, float(R), float(rho), -float(res.fun),
                       math.acos(float(np.clip(R, -1, 1))) / math.pi)


def theory_grid(alpha_prune: Sequence[float], fracs: Sequence[float], keeps: Sequence[str] = ("hard", "easy"),
                theta: float = 0.0, progress=None) -> dict[str, np.ndarray]:
    """:func:`theory_perceptron` over a grid: ``error[keep, f, alpha]`` and ``kappa`` of the same shape.

    ``f = 1`` means no pruning (every keep rule gives the same). The quadrature of each ``(keep, f)`` is built
    once; the 2-D solver (``theta > 0``) is warm-started from the previous ``alpha``."""
    shape = (len(keeps), len(fracs), len(alpha_prune))
    error, kappa = np.zeros(shape), np.zeros(shape)
    pairs = [(i, keep, j, f) for i, keep in enumerate(keeps) for j, f in enumerate(fracs)]
    for i, keep, j, f in (progress(pairs, desc=f"theory theta={math.degrees(theta):.0f}°") if progress else pairs):
        rule = keep if f < 1 else "random"
        small = theta > 0  # the 2-D quadrature is costlier: fewer nodes are plenty there
        m = kept_margins(f, rule, theta, n_probe=80 if small else 160, n_teacher=32)
        start = None
        for k, a in enumerate(alpha_prune):
            p = theory_perceptron(a, f, rule, theta, margins=m, start=start)
            error[i, j, k], kappa[i, j, k] = p.error, p.kappa
            if theta > 0:
                q = math.sqrt(max(1e-12, 1 - (p.R ** 2 + p.rho ** 2 - 2 * math.cos(theta) * p.R * p.rho)
                                  / math.sin(theta) ** 2))
                cov = np.array([[1.0, math.cos(theta)], [math.cos(theta), 1.0]])
                start = np.linalg.solve(cov, [p.R, p.rho]) / q
    return {"error": error, "kappa": kappa}


def power_law_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``y = c x^(-nu)`` in log-log space; returns ``(nu, c)``."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(-slope), float(np.exp(intercept))


def exponential_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``y = c exp(-b x)`` in log-linear space; returns ``(b, c)``."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.log(y), 1)
    return float(-slope), float(np.exp(intercept))


# ================================================================================================ deep nets
# Per-example difficulty scores. Convention everywhere: a HIGH score means a HARD example (keep it when keeping
# the hardest). ``keep_indices(score, f, "hard")`` keeps the highest scores, ``"easy"`` the lowest.


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """EL2N (Paul et al. 2021): the L2 norm of the error vector ``softmax(logits) - onehot(label)``, per example."""
    p = logits.float().softmax(-1)
    return (p - F.one_hot(labels, p.shape[-1]).float()).norm(dim=-1)


def grand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """GraNd (Paul et al. 2021): the norm of each example's own gradient of the cross-entropy with respect to every
    parameter, ``|| d loss(x_i, y_i) / d theta ||``, with the network in eval mode (BatchNorm uses its running
    statistics, so examples do not interact). Computed with ``torch.func.vmap`` over a batch."""
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, b, xi, yi):
        out = functional_call(model, (p, b), (xi[None],))
        return F.cross_entropy(out.float(), yi[None])

    per_example = vmap(grad(loss_one), in_dims=(None, None, 0, 0))
    norms = []
    for i in range(0, len(x), batch_size):
        g = per_example(params, buffers, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
        norms.append(torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in g.values())).cpu())
    model.train(was_training)
    return torch.cat(norms)


def forgetting_events(correct: torch.Tensor | np.ndarray, never_learned: float | None = None) -> torch.Tensor:
    """Forgetting events (Toneva et al. 2019) from a ``T×n`` history of whether each example was classified
    correctly at ``T`` successive checks: the number of times it went from correct to wrong.

    Examples never classified correctly get ``never_learned`` (default ``T``, more than any example can have), as
    Toneva et al. rank them as the most forgettable."""
    c = torch.as_tensor(correct).bool()
    events = (c[:-1] & ~c[1:]).sum(0).float()
    if never_learned is None:
        never_learned = float(c.shape[0])
    return torch.where(c.any(0), events, torch.full_like(events, never_learned))


def kmeans(x: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means by scikit-learn (k-means++ seeding, ``random_state=seed``): ``KMeans`` up to 200,000 points,
    ``MiniBatchKMeans`` above (ImageNet). Returns ``(centroids k×d, assignment n)``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    z = torch.as_tensor(x).double().numpy()
    if len(z) > 200_000:
        km = MiniBatchKMeans(k, random_state=seed, batch_size=8192, n_init=1).fit(z)
    else:
        km = KMeans(k, random_state=seed, n_init=1).fit(z)
    return torch.from_numpy(km.cluster_centers_).float(), torch.from_numpy(km.labels_).long()


def nearest_prototype(embedding: torch.Tensor, k: int, seed: int = 0, cosine: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The self-supervised prototype metric (this paper, §5): cluster the embeddings with k-means (:func:`kmeans`)
    and score each example by its distance to the nearest centroid. Far from every prototype = hard; close = easy
    (redundant). Returns ``(distance, cluster)`` per example; the clusters allow a label-free balance when pruning.

    With ``cosine`` the embeddings are L2-normalised first and the distance is ``1 - cos`` to the (normalised)
    centroid, as in the paper's ImageNet scores; otherwise it is the Euclidean distance."""
    z = F.normalize(embedding.double(), dim=1) if cosine else embedding.double()
    centroids = kmeans(z, k, seed=seed)[0].double()
    if cosine:  # in chunks: ImageNet's 1.28 M × 1,000 similarities would not fit in memory at once
        unit = F.normalize(centroids, dim=1)
        best = [(z[i:i + 65536] @ unit.T).max(1) for i in range(0, len(z), 65536)]
        dist, cluster = 1 - torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])
    else:
        dist, cluster = torch.cdist(z, centroids).min(1)
    return dist.float(), cluster


def prototype_distance(embedding: torch.Tensor, k: int, seed: int = 0, cosine: bool = True) -> torch.Tensor:
    """Just the distances of :func:`nearest_prototype`: the prototype difficulty score (high = hard)."""
    return nearest_prototype(embedding, k, seed, cosine)[0]


def load_embedding(path, n: int | None = None) -> dict[str, torch.Tensor]:
    """A user-supplied embedding: a ``.pt`` / ``.npy`` tensor (N×d, rows in pool order) or a ``.pt`` dict / ``.npz``
    with ``embedding`` (N×d) and optionally ``labels`` (N). Checks the row count against ``n`` when given."""
    from pathlib import Path

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding_path={str(path)!r} is not a file. Give a self-supervised embedding of the pool: an .npz or .pt "
            "with 'embedding' (N×d) and, for ImageNet, 'labels' (N) - for the paper's setting, SwAV ResNet-50 "
            "features of ImageNet's training images in the order of your label file.")
    if path.suffix == ".npz":
        with np.load(path) as f:
            obj = {k: torch.from_numpy(f[k]) for k in f.files}
    elif path.suffix == ".npy":
        obj = {"embedding": torch.from_numpy(np.load(path))}
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        obj = obj if isinstance(obj, dict) else {"embedding": obj}
    if "embedding" not in obj:
        raise ValueError(f"{path} holds {sorted(obj)}; it needs an 'embedding' array (N×d)")
    emb = torch.as_tensor(obj["embedding"]).float().flatten(1)
    if n is not None and len(emb) != n:
        raise ValueError(f"{path} has {len(emb)} rows but the pool has {n} examples; one row per pool example")
    out = {"embedding": emb}
    if "labels" in obj:
        out["labels"] = torch.as_tensor(obj["labels"]).long()
    return out


# ------------------------------------------------------------------------------------- scores from short runs


def supervised_scores(model_fn, train_set, *, runs: int, epochs: int, score_epoch: int, seed: int = 0,
                      batch_size: int = 128, lr: float = 0.05, crop_padding: int = 2, flip: bool = True,
                      device: str = "cpu", grand_examples: int | None = None, cache_name: str | None = None,
                      cache_config: dict | None = None) -> dict[str, torch.Tensor]:
    """Train ``runs`` networks from different initialisations on ``train_set`` for ``epochs`` epochs and score
    every example from them:

    - ``el2n``: EL2N after ``score_epoch`` epochs, averaged over the runs (Paul et al. score early in training);
    - ``grand``: GraNd at the same epoch, averaged over runs (on the first ``grand_examples`` examples if set —
      per-example gradients are the expensive part; the rest are NaN);
    - ``forgetting``: forgetting events over the end-of-epoch checks of every epoch, averaged over runs;
    - ``correct``: the ``runs×epochs×n`` history of correct predictions (for plots);
    - ``el2n_runs``: each run's own EL2N (``runs×n``), to see how noisy one run is.

    Each run is cached separately under ``cache_name`` when given."""
    from prunebook import cache, train

    def one_run(r: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed * 1000 + r)
        model = model_fn().to(device)
        record: dict[str, torch.Tensor] = {}
        history = []

        class Score(train.Callback):
            def on_epoch_end(self, state):
                logits = train.predict(state.model, train_set.x, device=device)
                history.append(logits.argmax(1) == train_set.y)
                if state.epoch == score_epoch:
                    record["el2n"] = el2n(logits, train_set.y)
                    m = len(train_set) if grand_examples is None else min(grand_examples, len(train_set))
                    g = torch.full((len(train_set),), float("nan"))
                    g[:m] = grand(state.model, train_set.x[:m], train_set.y[:m], device=device)
                    record["grand"] = g

        train.fit(model, train_set, epochs=epochs, batch_size=batch_size, lr=lr, crop_padding=crop_padding,
                  flip=flip, device=device, seed=seed * 1000 + r, callbacks=[Score()], desc=f"scoring run {r + 1}")
        record["correct"] = torch.stack(history)
        return record

    results = []
    for r in range(runs):
        if cache_name:
            run_key = {**(cache_config or {}), "run": r, "seed": seed}
            results.append(cache.cached(cache_name, run_key, lambda r=r: one_run(r)))
        else:
            results.append(one_run(r))
    correct = torch.stack([res["correct"] for res in results])
    return {
        "el2n": torch.stack([res["el2n"] for res in results]).mean(0),
        "el2n_runs": torch.stack([res["el2n"] for res in results]),
        "grand": torch.stack([res["grand"] for res in results]).mean(0),
        "forgetting": torch.stack([forgetting_events(c) for c in correct]).mean(0),
        "correct": correct,
    }


# ---------------------------------------------------------------------------- a tiny SimCLR, for a label-free embedding


class Encoder(nn.Module):
    """A small CNN encoder (the ``SmallCNN`` feature stack) with a linear projection head for contrastive learning.
    ``embed`` is the representation used for prototypes (before the head), as in SimCLR."""

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int = 64):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                                  nn.Linear(feature_dim, proj_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, min_scale: float = 0.4,
                        max_ratio: float = 4 / 3) -> torch.Tensor:
    """SimCLR's main augmentation as one batched affine resampling: a random window covering a fraction
    ``[min_scale, 1]`` of the image area, with aspect ratio in ``[1/max_ratio, max_ratio]``, stretched back to full
    size (bilinear)."""
    n = len(x)
    area = min_scale + (1 - min_scale) * torch.rand(n, generator=generator)
    ratio = torch.exp((2 * torch.rand(n, generator=generator) - 1) * math.log(max_ratio))
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    tx = (1 - sx) * (2 * torch.rand(n, generator=generator) - 1)
    ty = (1 - sy) * (2 * torch.rand(n, generator=generator) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, sy, tx, ty
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def ssl_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image for contrastive learning, as tensor ops: random resized crop, horizontal
    flip, random contrast and brightness (colour jitter for grey images)."""
    n = len(x)
    x = random_resized_crop(x, generator)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    contrast = (0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)).to(x.device)
    brightness = (0.3 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + brightness


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's contrastive loss (NT-Xent): each view must pick out its partner among the other ``2B - 1`` views
    of the batch by cosine similarity / temperature."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = len(z1)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def simclr_train(encoder: Encoder, x: torch.Tensor, *, epochs: int, batch_size: int = 256, lr: float = 2e-3,
                 temperature: float = 0.2, seed: int = 0, device: str = "cpu", progress=None) -> list[float]:
    """Train ``encoder`` on images ``x`` (no labels) with NT-Xent on two augmented views; Adam, cosine decay.
    Returns the mean loss of each epoch."""
    g = torch.Generator().manual_seed(seed)
    encoder.to(device).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, weight_decay=1e-6)
    steps = epochs * (len(x) // batch_size)
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    losses = []
    bar = progress(range(epochs), desc="SimCLR") if progress else range(epochs)
    for _ in bar:
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x) - batch_size + 1, batch_size):  # drop the last partial batch
            xb = x[order[i:i + batch_size]].to(device)
            loss = nt_xent(encoder(ssl_augment(xb, g)), encoder(ssl_augment(xb, g)), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        losses.append(total / max(1, len(x) // batch_size))
        if progress:
            bar.set_postfix(loss=round(losses[-1], 3))
    return losses


@torch.no_grad()
def embed(encoder: Encoder, x: torch.Tensor, batch_size: int = 1024, device: str = "cpu") -> torch.Tensor:
    """The encoder's representation (before the projection head) of every image, in eval mode."""
    encoder.to(device).eval()
    batches = (x[i:i + batch_size].to(device) for i in range(0, len(x), batch_size))
    return torch.cat([encoder.embed(b).float().cpu() for b in batches])


# ------------------------------------------------------------------------------------- prune, train, test


def class_balance(labels: torch.Tensor, idx: torch.Tensor, num_classes: int) -> dict[str, float]:
    """How evenly a kept subset covers the classes: each class's kept share relative to its share of the full set.
    Returns the smallest and largest of these ratios (1 and 1 for perfect balance)."""
    full = torch.bincount(labels, minlength=num_classes).double()
    kept = torch.bincount(labels[idx], minlength=num_classes).double()
    ratio = (kept / kept.sum()) / (full / full.sum()).clamp_min(1e-12)
    return {"min_ratio": float(ratio.min()), "max_ratio": float(ratio.max())}


# ------------------------------------------------------------------------------------- the pool of notebooks 02 and 04

MODELS = ("smallcnn", "smallcnn_half", "resnet18")

# The pool, its scoring runs and the SimCLR encoder of each profile: one table for notebooks 02 and 04, so that
# they share their cache (a change here re-scores the pool for both).
SETUP = {
    "smoke": dict(dataset="fashion_mnist", pool_size=600, model="smallcnn_half", score_runs=2, score_epochs=2,
                  score_epoch=1, grand_examples=None, lr=0.05, batch_size=128, crop_padding=2, flip=True,
                  ssl_epochs=1, ssl_batch=128, ssl_lr=2e-3, ssl_temperature=0.2, k_protos=10),
    "cpu": dict(dataset="fashion_mnist", pool_size=12000, model="smallcnn_half", score_runs=2, score_epochs=10,
                score_epoch=2, grand_examples=None, lr=0.05, batch_size=128, crop_padding=2, flip=True,
                ssl_epochs=12, ssl_batch=256, ssl_lr=2e-3, ssl_temperature=0.2, k_protos=10),
    "paper": dict(dataset="cifar10", pool_size=50000, model="resnet18", score_runs=10, score_epochs=20,
                  score_epoch=20, grand_examples=None, lr=0.1, batch_size=128, crop_padding=4, flip=True,
                  ssl_epochs=200, ssl_batch=512, ssl_lr=1e-3, ssl_temperature=0.2, k_protos=10),
}


def make_model(kind: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The classifier trained on (pruned) data: prunebook's ``SmallCNN`` (full or half width) for 28×28 images, or
    torchvision's ResNet-18 adapted to 32×32 CIFAR images (3×3 stride-1 first conv, no max-pool)."""
    from prunebook import models

    if kind == "smallcnn":
        return models.SmallCNN(in_channels, num_classes)
    if kind == "smallcnn_half":
        return models.SmallCNN(in_channels, num_classes, widths=(16, 32), hidden=64)
    if kind == "resnet18":
        import torchvision

        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        return net
    raise ValueError(f"model={kind!r}; choose one of {MODELS}")


def make_encoder(kind: str, in_channels: int = 1, proj_dim: int = 64) -> Encoder:
    """A SimCLR encoder with the same backbone as :func:`make_model` and a 2-layer projection head."""
    if kind.startswith("smallcnn"):
        net = make_model(kind, num_classes=10, in_channels=in_channels)
        hidden = net.classifier[1].out_features
        net.classifier = net.classifier[:3]  # flatten, linear, ReLU: the representation
        return Encoder(net, hidden, proj_dim)
    if kind == "resnet18":
        net = make_model(kind, num_classes=10, in_channels=in_channels)
        net.fc = nn.Identity()
        return Encoder(net, 512, proj_dim)
    raise ValueError(f"model={kind!r}; choose one of {MODELS}")


def load_pool(dataset: str, pool_size: int, seed: int = 0, data_root: str | None = None, test_size: int = 0):
    """The pool every series experiment draws from (a stratified subset of the training split, chosen by ``seed``)
    and the test set (all of it, or a stratified ``test_size``). CIFAR images are standardised with the pool's
    channel statistics; Fashion-MNIST stays in [0, 1] (its background is 0, like the crops' padding)."""
    from prunebook import data

    if dataset == "fashion_mnist":
        train_set, test_set = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
    elif dataset in ("cifar10", "cifar100"):
        train_set, test_set = data.cifar(dataset, "train", data_root), data.cifar(dataset, "test", data_root)
    else:
        raise ValueError(f"dataset={dataset!r}; choose 'fashion_mnist', 'cifar10' or 'cifar100'")
    pool = data.stratified_subset(train_set, min(pool_size, len(train_set)), seed)
    if test_size:
        test_set = data.stratified_subset(test_set, test_size, seed)
    if dataset != "fashion_mnist":
        pool, test_set = data.standardize(pool, test_set)
    return pool, test_set


def pool_scores(pool, s: dict, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """EL2N, GraNd and forgetting for every pool example, from ``s['score_runs']`` short runs (cached per run).
    ``s`` holds the scoring settings (the same dict in every notebook of the series, so they share the cache)."""
    key = {k: s[k] for k in ("dataset", "pool_size", "model", "score_runs", "score_epochs", "score_epoch",
                             "grand_examples", "lr", "batch_size", "crop_padding", "flip")}
    in_channels = pool.x.shape[1]
    return supervised_scores(
        lambda: make_model(s["model"], pool.num_classes, in_channels), pool, runs=s["score_runs"],
        epochs=s["score_epochs"], score_epoch=s["score_epoch"], seed=seed, batch_size=s["batch_size"], lr=s["lr"],
        crop_padding=s["crop_padding"], flip=s["flip"], device=device, grand_examples=s["grand_examples"],
        cache_name="08_data_pruning/scores", cache_config=key)


def pool_embedding(pool, s: dict, seed: int, device: str = "cpu") -> dict:
    """Train the tiny SimCLR encoder on the pool's images (labels unused) and embed them; cached, with the
    encoder's weights (``state``) so that other images can be embedded later (:func:`embed_with`)."""
    from prunebook import cache
    from prunebook.display import progress

    key = {k: s[k] for k in ("dataset", "pool_size", "model", "ssl_epochs", "ssl_batch", "ssl_lr",
                             "ssl_temperature")}

    def compute():
        torch.manual_seed(seed)
        enc = make_encoder(s["model"], pool.x.shape[1])
        losses = simclr_train(enc, pool.x, epochs=s["ssl_epochs"], batch_size=s["ssl_batch"], lr=s["ssl_lr"],
                              temperature=s["ssl_temperature"], seed=seed, device=device, progress=progress)
        state = {k: v.cpu() for k, v in enc.state_dict().items()}
        return {"embedding": embed(enc, pool.x, device=device), "losses": losses, "state": state}

    return cache.cached("08_data_pruning/simclr", {**key, "seed": seed, "version": 2}, compute)


def embed_with(state: dict, model: str, x: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """Embed images ``x`` with a SimCLR encoder saved by :func:`pool_embedding` (its ``state``)."""
    enc = make_encoder(model, x.shape[1])
    enc.load_state_dict(state)
    return embed(enc, x, device=device)


# ------------------------------------------------------------------------------------- the linear-probe regime (03–04)
# A softmax linear probe on fixed features, trained to convergence: the regime of the paper's theory (a model with
# few parameters, data plentiful relative to them, every kept set fitted to its optimum).

# The features, the probe and its scores of each profile: one table for notebooks 03 and 04, so that notebook 04
# reuses notebook 03's scores and runs through the cache. l2: a weak ridge, so that a kept set smaller than the
# 650 parameters still has one optimum; the same for every size, fraction and rule (not tuned). tol: L-BFGS stops
# when every gradient entry is below it. Scores: EL2N and GraNd after score_epoch of score_epochs SGD epochs,
# forgetting over all of them, averaged over score_runs probes from independent initialisations.
PROBE = {
    "smoke": dict(dataset="fashion_mnist", probe_pool=3000, n_pcs=16, l2=1e-3, tol=1e-5, max_iter=500,
                  score_runs=2, score_epochs=2, score_epoch=1, score_batch=128, score_lr=0.05, labels="real"),
    "cpu": dict(dataset="fashion_mnist", probe_pool=60000, n_pcs=64, l2=1e-3, tol=1e-5, max_iter=2000,
                score_runs=4, score_epochs=10, score_epoch=1, score_batch=128, score_lr=0.05, labels="real"),
}
PROBE["paper"] = PROBE["cpu"]
# labels: "real" (Fashion-MNIST's) or "teacher" (the realizable task of teacher_task); part of every cache key
PROBE_KEYS = ("dataset", "probe_pool", "n_pcs", "l2", "tol", "max_iter", "score_runs", "score_epochs", "score_epoch",
              "score_batch", "score_lr", "labels")


def whitened_pcs(train_x: torch.Tensor, test_x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The first ``k`` principal components of the training images (pixels, centred), each scaled to unit variance
    on the training set, for the training and the test images. Returns ``(z_train, z_test, explained)``:
    float64 ``n×k`` arrays and the fraction of the pixel variance the ``k`` components hold. Deterministic (each
    component's sign is fixed by its largest coordinate)."""
    x, t = train_x.flatten(1).double(), test_x.flatten(1).double()
    mean = x.mean(0)
    xc = x - mean
    evals, evecs = torch.linalg.eigh(xc.T @ xc / len(x))
    order = evals.argsort(descending=True)[:k]
    v, lam = evecs[:, order], evals[order]
    v = v * torch.sign(v[v.abs().argmax(0), torch.arange(k)])
    proj = v / lam.sqrt()
    return xc @ proj, (t - mean) @ proj, float(lam.sum() / evals.sum())


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype)], -1)


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, l2: float, tol: float = 1e-6,
              max_iter: int = 2000) -> torch.Tensor:
    """Multinomial logistic regression, ``mean cross-entropy + l2/2 |W|^2`` (the bias is not penalised), fitted
    to convergence by L-BFGS (strong Wolfe line search; stops when every gradient entry is below ``tol``).

    ``x`` is ``B×n×d`` and ``y`` ``B×n``: ``B`` independent problems of the same size, fitted together (their
    objectives add up and share no parameter, so the joint minimum is each one's minimum). The objective is
    strictly convex, so the result does not depend on an initialisation. Single precision (twice as fast as double
    here; the test errors agree to a test image or two). Returns ``B×(d+1)×C`` weights."""
    b, n, _ = x.shape
    xb = _with_bias(x.float())
    w = torch.zeros(b, xb.shape[-1], num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = torch.bmm(xb, w).reshape(-1, num_classes)
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="sum") / n + 0.5 * l2 * w[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def probe_error(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Test error of each of the ``B`` probes ``w`` (``B×(d+1)×C``) on ``x`` (``n×d``), ``y`` (``n``)."""
    pred = (_with_bias(x.float()) @ w.float()).argmax(-1)
    return (pred != y).double().mean(-1)


def early_probe_scores(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, runs: int, epochs: int,
                       score_epoch: int, batch_size: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    """EL2N, GraNd and forgetting scores for a linear softmax probe, the paper's (Paul et al.'s) way: ``runs``
    probes from independent small random initialisations, trained by plain minibatch SGD (each its own order);

    - ``el2n``: ``|softmax - onehot|`` after ``score_epoch`` epochs, averaged over runs;
    - ``grand``: the norm of the example's own gradient at the same epoch; for a linear probe it is exactly
      ``|softmax - onehot| * sqrt(|x|^2 + 1)``, averaged over runs;
    - ``forgetting``: correct-to-wrong transitions between the end-of-epoch checks of all ``epochs``, averaged.

    The runs train side by side as one batched model."""
    g = torch.Generator().manual_seed(seed)
    xb = _with_bias(x.double())
    n, d = xb.shape
    w = 0.01 * torch.randn(runs, d, num_classes, generator=g, dtype=torch.float64)
    onehot = F.one_hot(y, num_classes).double()
    history, out = [], {}
    for epoch in range(1, epochs + 1):
        order = torch.stack([torch.randperm(n, generator=g) for _ in range(runs)])
        for i in range(0, n, batch_size):
            idx = order[:, i:i + batch_size]
            xi = xb[idx]
            err = torch.softmax(torch.bmm(xi, w), -1) - onehot[idx]
            w -= lr * torch.bmm(xi.transpose(1, 2), err) / idx.shape[1]
        p = torch.softmax(xb @ w, -1)  # runs×n×C
        history.append(p.argmax(-1) == y)
        if epoch == score_epoch:
            e = (p - onehot).norm(dim=-1)
            out["el2n"] = e.mean(0)
            out["grand"] = (e * (x.double().pow(2).sum(-1) + 1).sqrt()).mean(0)
    correct = torch.stack(history, 1)  # runs×epochs×n
    out["forgetting"] = torch.stack([forgetting_events(c) for c in correct]).mean(0)
    return {k: v.float() for k, v in out.items()}


def probe_features(s: dict, seed: int = 0, data_root: str | None = None) -> dict:
    """The fixed features of notebooks 03–04: ``s['n_pcs']`` whitened principal components of the training
    images (all of them, or a stratified ``s['probe_pool']`` at smoke), and of the test images; cached. ``index``
    holds the rows of the training set used, in order."""
    from prunebook import cache, data

    def compute():
        if s["dataset"] != "fashion_mnist":
            raise ValueError(f"dataset={s['dataset']!r}: the linear-probe experiments use 'fashion_mnist'")
        train, test = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
        index = torch.arange(len(train))
        if s["probe_pool"] < len(train):
            index = data.stratified_indices(train.y, s["probe_pool"], seed)
        z_train, z_test, explained = whitened_pcs(train.x[index], test.x, s["n_pcs"])
        return {"x": z_train, "y": train.y[index], "index": index, "test_x": z_test, "test_y": test.y,
                "explained": explained, "classes": list(train.classes)}

    key = {k: s[k] for k in ("dataset", "probe_pool", "n_pcs")}
    return cache.cached("08_data_pruning/pcs", {**key, "seed": seed}, compute)


def teacher_task(feats: dict, s: dict, seed: int = 0) -> dict:
    """The realizable version of the probe's task, the perceptron theory's setting on real images: a *teacher*
    probe ``W*`` is fitted to convergence on every training image with its real label (``s['l2']``), and each
    training and test image is relabelled ``y* = argmax_c (W*^T [x, 1])_c``. A student probe of the same form can
    then fit the labels exactly, as the theory's student can fit its teacher. Returns ``feats`` with ``y`` and
    ``test_y`` replaced, plus ``agreement`` (the fraction of training images whose teacher label is the real
    one) and ``teacher`` (``W*``); cached."""
    from prunebook import cache

    def compute():
        num_classes = len(feats["classes"])
        w = fit_probe(feats["x"][None], feats["y"][None], num_classes, l2=s["l2"], tol=s["tol"],
                      max_iter=s["max_iter"])[0]
        y = (_with_bias(feats["x"].float()) @ w).argmax(-1)
        test_y = (_with_bias(feats["test_x"].float()) @ w).argmax(-1)
        return {**feats, "y": y, "test_y": test_y, "teacher": w,
                "agreement": float((y == feats["y"]).double().mean())}

    key = {k: s[k] for k in ("dataset", "probe_pool", "n_pcs", "l2", "tol", "max_iter")}
    return cache.cached("08_data_pruning/teacher_task", {**key, "seed": seed}, compute)


def probe_scores(feats: dict, s: dict, seed: int) -> dict[str, torch.Tensor]:
    """:func:`early_probe_scores` of every training example for one seed; cached."""
    from prunebook import cache

    key = {k: s[k] for k in PROBE_KEYS}
    return cache.cached("08_data_pruning/probe_scores", {**key, "seed": seed}, lambda: early_probe_scores(
        feats["x"], feats["y"], len(feats["classes"]), runs=s["score_runs"], epochs=s["score_epochs"],
        score_epoch=s["score_epoch"], batch_size=s["score_batch"], lr=s["score_lr"], seed=seed))


STRATEGIES = ("random", "easy", "hard")


def pruned_indices(labels: torch.Tensor, score: torch.Tensor, n0: int, frac: float, keep: str, seed: int,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """The training set of one pruning experiment, as indices into the pool.

    First the *original dataset*: ``n0`` pool examples drawn stratified by class with ``seed``. Then pruning keeps
    the fraction ``frac`` of it that ``keep`` asks for (``'random'``, ``'easy'`` = lowest ``score``, ``'hard'`` =
    highest), separately within each ``groups`` value (the class labels by default, so every class keeps the same
    fraction; pass k-means clusters for a label-free balance, or ``torch.zeros_like(labels)`` for none)."""
    from prunebook import data

    original = data.stratified_indices(labels, n0, seed)
    groups = labels if groups is None else groups
    g = torch.Generator().manual_seed(seed + 7919)  # the random keep's own stream, apart from the draw above
    local = keep_indices_grouped(torch.as_tensor(score)[original], torch.as_tensor(groups)[original], frac, keep, g)
    return original[local]


def probe_runs(feats: dict, s: dict, *, n0: int, frac: float, keep: str, metric: str,
               scores: Sequence[torch.Tensor], seeds: Sequence[int], groups: Sequence[torch.Tensor] | None = None,
               balance: str = "class") -> dict[str, list]:
    """Prune, fit the probe to convergence, test: one value per seed; cached.

    Seed ``seeds[i]`` draws its original dataset of ``n0`` examples, prunes it by ``scores[i]`` (that seed's
    scores) within ``groups[i]`` (classes when ``None``) and fits a probe on what is kept. ``metric`` and
    ``balance`` name the score and the grouping in the cache key (a random keep ignores both and balances
    classes). Seeds whose kept sets have the same size are fitted together."""
    from prunebook import cache

    key = {**{k: s[k] for k in PROBE_KEYS}, "n0": n0, "frac": frac, "keep": keep, "seeds": list(seeds),
           "metric": "none" if keep == "random" else metric, "balance": "class" if keep == "random" else balance}
    y, num_classes = feats["y"], len(feats["classes"])

    def compute():
        idx = [pruned_indices(y, scores[i], n0, frac, keep, seed,
                              None if keep == "random" or groups is None else groups[i])
               for i, seed in enumerate(seeds)]
        error = [0.0] * len(seeds)
        for size in sorted({len(i) for i in idx}):
            which = [j for j, i in enumerate(idx) if len(i) == size]
            sel = torch.stack([idx[j] for j in which])
            w = fit_probe(feats["x"][sel], y[sel], num_classes, l2=s["l2"], tol=s["tol"], max_iter=s["max_iter"])
            for j, e in zip(which, probe_error(w, feats["test_x"], feats["test_y"]).tolist()):
                error[j] = e
        return {"error": error, "n": [len(i) for i in idx],
                "min_ratio": [class_balance(y, i, num_classes)["min_ratio"] for i in idx]}

    return cache.cached("08_data_pruning/probe_run", key, compute)
