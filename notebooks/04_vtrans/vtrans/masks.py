"""The masks: the VIB mask (z = μ + σ·ε, its closed-form KL, log α, the keep rule μ²/σ² > 1, the smooth "kept"
proxy, the deployed mask hard ⊙ μ) and CoFi's hard-concrete L0 mask with the same interface (notebook 2's
comparison). :data:`KINDS` names the structures a mask can sit on.
"""

from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("hidden", "head", "ffn", "layer")

# μ ~ N(1, 0.01²), log σ² ~ N(-9, 0.01²): every mask starts at ≈ 1 and almost noise-free (TVA-Prune / VIBNet code).
MU_INIT, LOG_SIGMA2_INIT, INIT_STD = 1.0, -9.0, 0.01
BETA = 10.0  # slope of the smooth kept proxy sigmoid(-β log α) (TVA-Prune code)


class Mask(nn.Module):
    """What every mask of a :class:`MaskedBert` shares: its mode (see :class:`VIBMask`)."""

    mode = "auto"

    def current_mode(self) -> str:
        if self.mode == "auto":
            return "sample" if self.training else "weighted"
        return self.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply the last dimension of ``x`` by the mask: a random draw (:meth:`sample`) in "sample" mode, the
        deterministic deployed mask in "weighted" mode, nothing in "off" mode."""
        mode = self.current_mode()
        if mode == "off":
            return x
        if mode == "weighted":
            return x * self.weighted().to(x.dtype)
        return x * self.sample(x)


def log_alpha(mu: torch.Tensor, log_sigma2: torch.Tensor) -> torch.Tensor:
    """log α = log σ² − log μ² of a VIB mask (also of its saved μ, log σ²); the 1e-8 keeps μ = 0 finite."""
    return log_sigma2 - torch.log(mu**2 + 1e-8)


class VIBMask(Mask):
    """A VIB mask on ``n`` units: z = μ + σ·ε with ε ~ N(0, I), multiplied into the last dimension of its input.

    Modes: ``"sample"`` draws fresh noise for every element (hence per token, as TVA-Prune's code does);
    ``"weighted"`` is the deterministic deployed mask hard ⊙ μ; ``"off"`` passes the input through; ``"auto"``
    (the default) samples in training mode and is weighted in eval mode.
    """

    def __init__(self, n: int):
        super().__init__()
        self.mu = nn.Parameter(MU_INIT + INIT_STD * torch.randn(n))
        self.log_sigma2 = nn.Parameter(LOG_SIGMA2_INIT + INIT_STD * torch.randn(n))

    def log_alpha(self) -> torch.Tensor:
        return log_alpha(self.mu, self.log_sigma2)

    def keep(self) -> torch.Tensor:
        """The keep rule: a unit stays iff log α < 0, i.e. μ²/σ² > 1 (strict: log α = 0 is pruned)."""
        return self.log_alpha() < 0

    def soft(self, beta: float = BETA) -> torch.Tensor:
        """The differentiable "kept" proxy sigmoid(−β log α), in (0, 1)."""
        return torch.sigmoid(-beta * self.log_alpha())

    def weighted(self) -> torch.Tensor:
        """The deployed mask: the kept units scaled by their learned mean μ."""
        return self.keep().to(self.mu.dtype) * self.mu

    def kl(self) -> torch.Tensor:
        """Dai et al.'s closed-form bound ½ Σ log(1 + μ²/σ²) (the prior's variance optimised out)."""
        return 0.5 * torch.log1p(self.mu**2 / self.log_sigma2.exp()).sum()

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·ε with fresh noise for every element of ``x`` (hence per token)."""
        eps = torch.randn(*x.shape[:-1], self.mu.numel(), dtype=x.dtype, device=x.device)
        return self.mu + eps * torch.exp(0.5 * self.log_sigma2)

    @torch.no_grad()
    def set_keep(self, keep: torch.Tensor) -> None:
        """Fix the mask to a hard 0/1 choice (μ = keep, σ² = e⁻⁹): how the baselines' choices enter the model."""
        self.mu.copy_(keep.to(self.mu.dtype))
        self.log_sigma2.fill_(LOG_SIGMA2_INIT)


# Louizos et al.'s stretched interval and temperature, and the initial drop rate, as CoFi sets them
HC_LOW, HC_HIGH, HC_TEMPERATURE, HC_DROP_INIT = -0.1, 1.1, 2.0 / 3.0, 0.5


class HardConcreteMask(Mask):
    """CoFi's L0 mask (Louizos et al., 2018): z = clamp(sigmoid((log u − log(1−u) + log α)/τ)·(h−l) + l, 0, 1),
    u ~ U(0, 1), one draw per unit and batch (CoFi). The same interface as :class:`VIBMask`, so that the same
    Lagrangian, data and steps train either (notebook 2's VIB-vs-L0 comparison). There is no KL term: the size
    term is the L0 norm's expectation, steered by the Lagrangian."""

    def __init__(self, n: int):
        super().__init__()
        start = math.log(1 - HC_DROP_INIT) - math.log(HC_DROP_INIT)
        self.log_alpha_ = nn.Parameter(start + INIT_STD * torch.randn(n))

    def soft(self, beta: float = BETA) -> torch.Tensor:
        """P(z ≠ 0), the expected L0 norm per unit (``beta`` is not used)."""
        return torch.sigmoid(self.log_alpha_ - HC_TEMPERATURE * math.log(-HC_LOW / HC_HIGH))

    def keep(self) -> torch.Tensor:
        """Kept iff P(z ≠ 0) > ½ (our choice; CoFi keeps as many units as the expected L0 norm says)."""
        return self.soft() > 0.5

    def weighted(self) -> torch.Tensor:
        scale = (torch.sigmoid(self.log_alpha_) * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0, 1)
        return self.keep().to(scale.dtype) * scale

    def kl(self) -> torch.Tensor:
        return self.log_alpha_.new_zeros(())

    def sample(self, x: torch.Tensor) -> torch.Tensor:
        """One hard-concrete draw per unit (shared by every token of the batch, as in CoFi)."""
        u = torch.rand_like(self.log_alpha_).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha_) / HC_TEMPERATURE)
        return (s * (HC_HIGH - HC_LOW) + HC_LOW).clamp(0, 1).to(x.dtype)

    @torch.no_grad()
    def set_keep(self, keep: torch.Tensor) -> None:
        self.log_alpha_.copy_(torch.where(keep, 10.0, -10.0))
