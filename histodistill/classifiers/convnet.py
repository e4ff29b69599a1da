"""The ConvNet of dataset distillation (InfoDist's embedding network and its judge), what
every classifier here shares, and how images go in and come out.

    >>> from histodistill.classifiers import convnet, training
    >>> from histodistill.classifiers.config import ClassifierConfig
    >>> model, history = training.train_judge(xtr, ytr, xval, yval, 9, ClassifierConfig())
    >>> feats = convnet.embed(model, xtr)         # (N, D) float32: the paper's embedding
    >>> probs = convnet.predict(model, xtest)     # (N, C) class probabilities
    >>> convnet.save_classifier(model, folder); model = convnet.load_classifier(folder)

Images go in as uint8 (N, H, W, C) arrays, the way the data stage stores them. The model
carries the train split's per-channel mean and std as buffers, so every split it embeds
or classifies later is normalised with the statistics it was trained on. Training, of the
judge as of every other classifier, is `training`'s one loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

WEIGHTS_FILE = "classifier.safetensors"
ARGS_FILE = "classifier.json"
MAX_AUTO_DEPTH = 5  # deepest automatic network (ConvNetD5, as used at 128 px)
MIN_STD = 1e-3  # floor on a channel's std: a constant channel must not divide by zero


def depth_for(image_size: int) -> int:
    """Blocks that shrink `image_size` to a final map of about 3-4 px.

    Each block halves the side (floor); blocks are added while the side stays >= 3, at
    most 5: 28 px -> 3 (3x3 map), 32 -> 3 (4x4), 64 -> 4 (4x4), 128 -> 5 (4x4), 224 -> 5
    (7x7). The cap is ConvNetD5, the deepest of the dataset-distillation literature."""
    depth, side = 0, image_size
    while side // 2 >= 3 and depth < MAX_AUTO_DEPTH:
        side, depth = side // 2, depth + 1
    if depth == 0:
        raise ValueError(f"image size {image_size} px is too small for even one 2x2 pooling block")
    return depth


class ImageClassifier(nn.Module):
    """What every network here shares: normalisation buffers, `features(x)` (the embedding)
    and a linear classifier on it. Subclasses build their body, then call `_add_head`."""

    def _add_head(self, in_channels: int, feature_dim: int, n_classes: int) -> None:
        self.classifier = nn.Linear(feature_dim, n_classes)
        # Normalisation statistics (0..1 units); the trainer sets them to its train split's.
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """Raw class scores; with `with_features`, (scores, features) from one pass."""
        features = self.features(x)
        logits = self.classifier(features)
        return (logits, features) if with_features else logits


class _HalvingMean(torch.autograd.Function):
    """2x2 average pooling at stride 2 (floor mode), as slices: the mean of each 2x2 cell.

    Torch's CPU `avg_pool2d` kernel is slow on contiguous (N, C, H, W) maps: in a profile of
    a demo downstream ConvNet its forward and backward were over a quarter of the training
    time. Strided slices do the same sums 2.4-2.9x faster on the 28 and 14 px maps (a little
    slower on 7 px ones; bench/trials/pooling.py); the values agree with `avg_pool2d` up to float
    rounding and the gradients exactly (tests/classifiers/test_convnet.py)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        x = x[..., : 2 * h, : 2 * w]  # floor mode: an odd last row or column is dropped
        rows = x[..., 0::2, :] + x[..., 1::2, :]
        return (rows[..., 0::2] + rows[..., 1::2]) * 0.25

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.in_shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h, w = grad.shape[-2:]
        quarter = grad * 0.25
        exact = (2 * h, 2 * w) == tuple(ctx.in_shape[-2:])  # else the dropped row/column gets 0
        out = grad.new_empty(ctx.in_shape) if exact else grad.new_zeros(ctx.in_shape)
        for i in (0, 1):
            for j in (0, 1):
                out[..., i : 2 * h : 2, j : 2 * w : 2] = quarter
        return out


class HalvingPool(nn.Module):
    """`nn.AvgPool2d(2, 2)`, computed as `_HalvingMean` on the CPU (torch's kernel elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _HalvingMean.apply(x) if x.device.type == "cpu" else F.avg_pool2d(x, 2, 2)


class ConvNet(ImageClassifier):
    """`depth` blocks of [conv 3x3 -> instance norm -> ReLU -> 2x2 average pool], then a
    linear classifier on the flattened last block (`features`, the embedding).

    Instance norm is GroupNorm with one group per channel: per-sample statistics, so a
    batch of one behaves like any other (distilled sets are tiny)."""

    def __init__(self, n_classes: int, image_size: int, width: int = 128,
                 depth: int | None = None, in_channels: int = 3):
        super().__init__()
        depth = depth_for(image_size) if depth is None else depth
        side = image_size // 2**depth
        if side < 1:
            raise ValueError(
                f"image size {image_size} px is too small for {depth} blocks (each halves it); "
                f"use depth <= {int(math.log2(image_size))}"
            )
        self.n_classes, self.image_size, self.in_channels = n_classes, image_size, in_channels
        self.width, self.depth = width, depth
        blocks: list[nn.Module] = []
        for i in range(depth):
            blocks += [
                nn.Conv2d(in_channels if i == 0 else width, width, kernel_size=3, padding=1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                HalvingPool(),
            ]
        self.blocks = nn.Sequential(*blocks)
        self._add_head(in_channels, width * side * side, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) normalised images -> (N, D) flattened output of the last block."""
        return self.blocks(x).flatten(1)

    def arguments(self) -> dict:
        """The constructor arguments, enough to rebuild this architecture."""
        names = ("n_classes", "image_size", "width", "depth", "in_channels")
        return {name: getattr(self, name) for name in names}


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (population) of uint8 (N, H, W, C) images, in 0..1 units.

    Summed in float64 chunks: a float copy of all of PathMNIST at once would not fit."""
    n_channels = images.shape[-1]
    total, total_sq, count = np.zeros(n_channels), np.zeros(n_channels), 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, n_channels).astype(np.float64) / 255.0
        total += block.sum(0)
        total_sq += (block**2).sum(0)
        count += len(block)
    if count == 0:
        raise ValueError("cannot compute channel statistics of zero images")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def to_tensor(images: np.ndarray | torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), scaled to 0..1 then standardised.

    The result is laid out contiguously (channels first in memory), not as the strided view
    a permute of (N, H, W, C) gives: such a view is channels-last, convolutions keep that
    layout, and on the CPU group norm's channels-last kernel is several times slower than its
    contiguous one (a quarter of every classifier's training time)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std.clamp(min=MIN_STD)


@torch.no_grad()
def _outputs(model: ConvNet, images: np.ndarray, batch_size: int, what: str) -> np.ndarray:
    was_training = model.training
    model.eval()
    device, chunks = next(model.parameters()).device, []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x = to_tensor(batch.to(device), model.mean, model.std)
        out = model.features(x) if what == "features" else model(x).softmax(1)
        chunks.append(out.float().cpu().numpy())
    model.train(was_training)
    width = model.feature_dim if what == "features" else model.n_classes
    return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)


def predict(model: ConvNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities (N, C) of uint8 (N, H, W, C) images."""
    return _outputs(model, images, batch_size, "probs")


def embed(model: ConvNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Features (N, D) float32 of uint8 (N, H, W, C) images: the last block, flattened."""
    return _outputs(model, images, batch_size, "features")


def accuracy(model: ConvNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Share of `images` whose most probable class is their label."""
    return float((predict(model, images, batch_size).argmax(1) == np.asarray(labels)).mean())


def save_classifier(model: ConvNet, folder: str | Path) -> None:
    """Write the weights (safetensors, with the normalisation buffers) and the
    constructor arguments (JSON) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / ARGS_FILE).write_text(json.dumps(model.arguments(), indent=2))


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> ConvNet:
    """The ConvNet `save_classifier` wrote, in eval mode. No pickle is ever read."""
    folder = Path(folder)
    model = ConvNet(**json.loads((folder / ARGS_FILE).read_text()))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(device).eval()
