"""Downstream networks: the ConvNet and a CIFAR-style ResNet-18, behind one builder.

    >>> from histodistill.classifiers.networks import build_network
    >>> model = build_network("resnet18", n_classes=9, image_size=28)
    >>> feats = model.features(x)      # (N, 512) pooled feature, for SupCon
    >>> logits = model(x)              # (N, 9) raw class scores, never softmaxed

Inputs are normalised float (N, C, S, S) tensors (see `convnet.to_tensor`). Both networks
carry `mean`/`std` buffers, `n_classes` and `feature_dim`, so `convnet.predict` and
`convnet.embed` work with either. Plain torch: no torchvision.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import NETWORKS
from .convnet import ConvNet, ImageClassifier

RESNET18_WIDTHS = (64, 128, 256, 512)
CONVNET_WIDTH = 128  # the paper's ConvNet width


def _norm(channels: int) -> nn.Module:
    """Instance norm: per-sample statistics, so tiny distilled batches behave like any
    other, as in the dataset-distillation literature."""
    return nn.InstanceNorm2d(channels, affine=True)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016).

    The shortcut is a 1x1 strided convolution whenever the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(ImageClassifier):
    """ResNet-18 for small images: 3x3 stride-1 stem without max-pool (CIFAR style, so a
    28 px image is not shrunk to 7 px before the first block), BasicBlocks [2, 2, 2, 2] of
    widths 64/128/256/512 (times `width_scale`) with instance norm, global average pooling and
    a linear classifier.

    The three stride-2 stages shrink the side by 8 (rounding up): 28 -> 4, 64 -> 8."""

    def __init__(self, n_classes: int, in_channels: int = 3, width_scale: float = 1.0):
        super().__init__()
        if n_classes < 1 or in_channels < 1:
            raise ValueError(f"need n_classes >= 1 and in_channels >= 1, not {n_classes}, {in_channels}")
        self.n_classes, self.in_channels = n_classes, in_channels
        widths = [scaled(w, width_scale) for w in RESNET18_WIDTHS]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False),
            _norm(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, width, stride),
                                        BasicBlock(width, width, 1)))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._add_head(in_channels, channels, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) normalised images -> (N, 512 x width_scale) globally average-pooled features."""
        return self.pool(self.stages(self.stem(x))).flatten(1)


def scaled(width: int, width_scale: float) -> int:
    """`width` channels times `width_scale`, at least 1."""
    if width_scale <= 0:
        raise ValueError(f"width_scale must be > 0, not {width_scale}")
    return max(1, round(width * width_scale))


def build_network(name: str, n_classes: int, image_size: int, in_channels: int = 3,
                  width_scale: float = 1.0) -> nn.Module:
    """A fresh, randomly initialised downstream network by name.

    "convnet": `convnet.ConvNet` (width 128 x `width_scale`, instance norm, depth chosen
    from the size); "resnet18": `ResNet18` with instance norm (widths 64..512 x
    `width_scale`). `width_scale` 1 gives the paper's networks; a CPU profile narrows them.
    Both expose `.features(x)` and `forward`. Seed torch before calling for a reproducible
    initialisation."""
    key = name.lower()
    if key == "convnet":
        return ConvNet(n_classes, image_size, width=scaled(CONVNET_WIDTH, width_scale), in_channels=in_channels)
    if key == "resnet18":
        # Instance norm needs more than one value per channel: the last map is
        # ceil(S / 8) px wide, so S must be at least 9.
        if image_size < 9:
            raise ValueError(f"image size {image_size} px is too small for ResNet18 (needs >= 9)")
        return ResNet18(n_classes, in_channels=in_channels, width_scale=width_scale)
    raise ValueError(f"unknown network {name!r}; expected one of {NETWORKS}")
