"""The replica-symmetric theory of the max-margin student trained on pruned data (notebook 01): the kept margins'
quadrature (:func:`kept_margins`, :func:`keep_threshold`), the saddle-point conditions solved with scipy
(:func:`theory_perceptron`, over a grid :func:`theory_grid`), and the fits that compare learning curves
(:func:`power_law_fit`, :func:`exponential_fit`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special


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
    done = {}  # (rule, f) -> (i, j) already solved: f = 1 is the same unpruned problem for every keep rule
    for i, keep, j, f in (progress(pairs, desc=f"theory theta={math.degrees(theta):.0f}°") if progress else pairs):
        rule = keep if f < 1 else "random"
        if (rule, f) in done:
            error[i, j], kappa[i, j] = error[done[rule, f]], kappa[done[rule, f]]
            continue
        done[rule, f] = (i, j)
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
