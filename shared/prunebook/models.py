"""The small architectures several series share.

- ``resnet_cifar(depth)``: He et al.'s CIFAR ResNets (depth = 6n + 2: 20, 32, 56, 110), 16-32-64 channels.
- ``vgg_cifar(depth)``: VGG-11/13/16/19 with BatchNorm as used on CIFAR by the pruning papers.
- ``SmallCNN`` and ``MLP`` for 28×28 inputs (``MLP()`` is LeNet-300-100).

Every constructor takes ``in_channels`` and ``num_classes``, and the widths of each layer, so a pruned
architecture can be rebuilt from its channel counts and trained from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- CIFAR ResNet


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN; ``mid`` is the first conv's width (the one L1-norm pruning thins)."""

    def __init__(self, in_planes: int, mid: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # ReLU modules rather than F.relu, so forward hooks see every activation (01_ap counts dead neurons),
        # the one after the residual addition included
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.pad = 0
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":  # parameter-free: subsample, then zero-pad the new channels (He et al., CIFAR)
                self.pad = planes - in_planes
            else:  # "B": a 1×1 projection
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            skip = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        else:
            skip = self.shortcut(x)
        return self.relu2(out + skip)


class ResNetCIFAR(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16,
                 mids: Sequence[int] | None = None, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"depth={depth}: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110)")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={shortcut!r}; choose 'A' (zero-padding) or 'B' (1×1 projection)")
        n = (depth - 2) // 6
        stages = [width, 2 * width, 4 * width]
        mids = list(mids) if mids is not None else [s for s in stages for _ in range(n)]
        if len(mids) != 3 * n:
            raise ValueError(f"mids has {len(mids)} widths; ResNet-{depth} has {3 * n} blocks")
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks, in_planes = [], width
        for b, mid in enumerate(mids):
            planes = stages[b // n]
            stride = 2 if b % n == 0 and b > 0 else 1
            blocks.append(BasicBlock(in_planes, mid, planes, stride, shortcut))
            in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_planes, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet_cifar(depth: int = 20, num_classes: int = 10, in_channels: int = 3, **kwargs) -> ResNetCIFAR:
    return ResNetCIFAR(depth, num_classes, in_channels, **kwargs)


# ---------------------------------------------------------------- VGG with BatchNorm

VGG_LAYERS = {  # conv widths; "M" is a 2×2 max-pool. The last pool is replaced by global average pooling.
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """VGG with BN for small images. ``classifier='linear'`` is network slimming's head (one Linear);
    ``'mlp'`` is Li et al.'s (Linear 512-512, BN, ReLU, Linear), whose VGG-16 has the 15.0 M parameters
    of their Table 1."""

    def __init__(self, layers: Sequence[int | str], num_classes: int = 10, in_channels: int = 3,
                 classifier: str = "linear"):
        super().__init__()
        if classifier not in ("linear", "mlp"):
            raise ValueError(f"classifier={classifier!r}; choose 'linear' or 'mlp'")
        self.layers = list(layers)
        modules, c = [], in_channels
        for v in self.layers:
            if v == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                w = int(v)
                modules += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*modules)
        if classifier == "linear":
            self.classifier = nn.Linear(c, num_classes)
        else:
            self.classifier = nn.Sequential(nn.Linear(c, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                            nn.Linear(512, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))

    def conv_widths(self) -> list[int]:
        return [v for v in self.layers if v != "M"]


def vgg_widths(depth: int, width: float = 1.0) -> list[int]:
    """The conv widths of VGG-``depth`` with every layer scaled by ``width`` (at least one channel each)."""
    if depth not in VGG_LAYERS:
        raise ValueError(f"depth={depth}; choose one of {sorted(VGG_LAYERS)}")
    return [max(1, round(v * width)) for v in VGG_LAYERS[depth] if v != "M"]


def vgg_cifar(depth: int = 16, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
              widths: Sequence[int] | None = None, classifier: str = "linear") -> VGG:
    """VGG-``depth`` with BN; ``width`` scales every layer, ``widths`` sets each conv's width (pruned nets)."""
    if depth not in VGG_LAYERS:
        raise ValueError(f"depth={depth}; choose one of {sorted(VGG_LAYERS)}")
    if widths is None:
        widths = vgg_widths(depth, width)
    base = VGG_LAYERS[depth]
    convs = [v for v in base if v != "M"]
    if len(widths) != len(convs):
        raise ValueError(f"widths has {len(widths)} entries; VGG-{depth} has {len(convs)} conv layers")
    it = iter(widths)
    layers = ["M" if v == "M" else next(it) for v in base]
    return VGG(layers, num_classes, in_channels, classifier)


# ---------------------------------------------------------------- 28×28 models


class SmallCNN(nn.Module):
    """A small VGG-like CNN for 28×28 images: two blocks of two 3×3 convs (BN, ReLU) and a max-pool."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64), hidden: int = 128,
                 image_size: int = 28):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """A fully connected ReLU network; the default is LeNet-300-100 (266,610 parameters)."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10):
        super().__init__()
        layers, d = [nn.Flatten()], in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init(model: nn.Module) -> None:
    """He initialisation for convs, BN at (1, 0): the CIFAR pruning papers' setting."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
