"""The perceptron experiment (notebook 01): a teacher ``T`` labels Gaussian inputs ``x ~ N(0, I_N)`` by
``y = sign(T·x)`` (:func:`teacher_student_data`); a pruning metric keeps a fraction of the ``P = alpha N`` examples,
and a student is trained on what is left to maximum margin (:func:`max_margin`); its test error is
``arccos(R) / pi`` (:func:`perceptron_error`).

:func:`sample_pruned_perceptron` draws the pruned training sets vectorised over trials (by rotation invariance the
teacher is ``e_1`` and the probe ``cos(theta) e_1 + sin(theta) e_2``, :func:`probe_direction`);
:func:`simulate_perceptron` runs the whole grid. :func:`sample_pruned_perceptron` looks :func:`keep_indices` up in
this module's namespace (a course lab patches it here)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .selection import keep_indices, n_keep


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
            inside = m < 1
            active = inside.double()
            grad = stage_lam * w - torch.einsum("bn,bnd->bd", active * (1 - m), yx)
            # only the examples inside the margin enter the Hessian (a few % of them near the solution): gather them
            hess = stage_lam * eye + torch.stack([r.T @ r for r in (yx[i, inside[i]] for i in range(b))])
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
