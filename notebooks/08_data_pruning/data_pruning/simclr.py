"""A tiny SimCLR, for a label-free embedding (notebooks 02 and 04): the :class:`Encoder` (a CNN backbone and a
projection head), the augmentations (:func:`random_resized_crop`, :func:`ssl_augment`), the contrastive loss
:func:`nt_xent`, :func:`simclr_train` and :func:`embed`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from prunebook.config import dry_steps
from torch import nn


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
    Returns the mean loss of each epoch. A dry run of the paper profile trains one epoch. Fewer images than a batch
    make one batch of all of them."""
    epochs = dry_steps(epochs, 1)
    batch_size = min(batch_size, len(x))
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
