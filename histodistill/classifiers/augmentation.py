"""The augmentations of the classifiers (and of the autoencoder): differentiable Siamese
augmentation (DSA; Zhao & Bilen, ICML 2021) and the dihedral symmetries of a square image.

    >>> from histodistill.classifiers.augmentation import DSA, dihedral_views, random_dihedral
    >>> dsa = DSA()                                   # colour, crop, cutout, flip, scale, rotate
    >>> g = torch.Generator().manual_seed(0)
    >>> x_aug, params = dsa.augment(x, g)             # ONE family per batch, drawn from g
    >>> y_aug, _ = dsa.augment(y, params=params)      # the very same transform on y
    >>> x_turned = random_dihedral(x, g)              # a random flip/turn per image (the judge's)
    >>> views = dihedral_views(images)                # all 8 flips and turns of uint8 images

DSA: each call draws one family for the whole batch (InfoDist's single mode, 'S'), then random
parameters for every image (or one set for the batch with `shared=True`). Every operation
is built from differentiable tensor ops (affine_grid/grid_sample, arithmetic, masks,
flips), so gradients reach `x`: that is what lets distillation push gradients through the
augmentation into synthetic images. "Siamese": the sampled parameters come back as a
`DSAParams` and can be re-applied to another batch, as distribution/gradient matching
needs for its real and synthetic batches. Per-image parameters need a batch of the same
size; shared ones (`shared=True`) apply to a batch of any size, like the original code's
seeded ("batch") mode.

Inputs are normalised float (N, C, H, W) tensors; as in the original code, colour changes
act on the normalised values and padding is zero (the mean colour after normalisation).
All random draws happen on the CPU from the given generator, so a seeded run repeats on
any device.

The dihedral symmetries (flips and 90-degree turns) are exact rearrangements of pixels:
tissue has no orientation, so they are free extra data for the judge, the autoencoder and
the denoiser's training latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAParams:
    """One sampled transform: the family and its parameters, each a CPU tensor of length
    N (per image) or 1 (shared by the whole batch)."""

    family: str
    values: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 1


class DSA:
    """Differentiable Siamese augmentation; the defaults are the DSA paper's (and the
    released InfoDist code's): scale 1.2, rotation +-15 degrees, crop shifts up to 1/8 of
    the side, cutout of half the side, flip probability 0.5, brightness 1.0, saturation
    2.0, contrast 0.5."""

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        scale: float = 1.2,
        rotate_degrees: float = 15.0,
        crop_pad: float = 0.125,
        cutout: float = 0.5,
        flip_prob: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        shared: bool = False,
    ):
        families = tuple(f for f in strategy.lower().split("_") if f)
        if not families:
            raise ValueError("empty DSA strategy; name families joined by '_', e.g. 'color_crop'")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown DSA families {unknown}; expected some of {FAMILIES}")
        if scale < 1 or not 0 <= crop_pad < 1 or not 0 < cutout <= 1 or not 0 <= flip_prob <= 1:
            raise ValueError("need scale >= 1, 0 <= crop_pad < 1, 0 < cutout <= 1, 0 <= flip_prob <= 1")
        self.families = families
        self.scale, self.rotate_degrees, self.crop_pad, self.cutout = scale, rotate_degrees, crop_pad, cutout
        self.flip_prob, self.brightness, self.saturation, self.contrast = flip_prob, brightness, saturation, contrast
        self.shared = shared

    # --- public ---------------------------------------------------------------------------

    def augment(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        family: str | None = None,
        params: DSAParams | None = None,
    ) -> tuple[torch.Tensor, DSAParams]:
        """Augment a batch; returns (augmented x, the parameters used).

        Without `params`, draws the family (unless `family` names one) and its parameters
        from `generator`; with `params`, re-applies them exactly and needs no generator."""
        if params is None:
            if generator is None:
                raise ValueError("augment needs a torch.Generator to draw from (or params to re-apply)")
            params = self.sample(x, generator, family)
        elif family is not None and family != params.family:
            raise ValueError(f"family {family!r} contradicts the given params' family {params.family!r}")
        return self.apply(x, params), params

    def sample(self, x: torch.Tensor, generator: torch.Generator, family: str | None = None) -> DSAParams:
        """Draw one family (uniformly among the strategy's, unless given) and its parameters
        for the batch `x` (only its shape is used)."""
        _check_images(x)
        if family is None:
            family = self.families[int(torch.randint(len(self.families), (1,), generator=generator))]
        elif family not in FAMILIES:
            raise ValueError(f"unknown DSA family {family!r}; expected one of {FAMILIES}")
        n = 1 if self.shared else x.shape[0]
        height, width = x.shape[2], x.shape[3]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        if family == "color":  # the three colour jitters are one family, as in DSA
            values = dict(
                brightness=uniform(-0.5, 0.5) * self.brightness,
                saturation=uniform(0.0, 1.0) * self.saturation,
                contrast=uniform(0.0, 1.0) + self.contrast,
            )
        elif family == "crop":  # whole-pixel shifts: pad-and-crop, exactly, no blur
            sy, sx = int(height * self.crop_pad + 0.5), int(width * self.crop_pad + 0.5)
            values = dict(
                shift_y=torch.randint(-sy, sy + 1, (n,), generator=generator),
                shift_x=torch.randint(-sx, sx + 1, (n,), generator=generator),
            )
        elif family == "cutout":  # the square's centre, in pixels
            values = dict(
                centre_y=torch.randint(0, height, (n,), generator=generator),
                centre_x=torch.randint(0, width, (n,), generator=generator),
            )
        elif family == "flip":
            values = dict(flip=torch.rand(n, generator=generator) < self.flip_prob)
        elif family == "scale":
            low = 1.0 / self.scale
            values = dict(scale_x=uniform(low, self.scale), scale_y=uniform(low, self.scale))
        else:  # rotate
            limit = math.radians(self.rotate_degrees)
            values = dict(angle=uniform(-limit, limit))
        return DSAParams(family, values)

    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Apply sampled parameters to `x` (of the batch size they were drawn for, or any
        size when they are shared)."""
        _check_images(x)
        n = x.shape[0]
        if params.batch_size not in (1, n):
            raise ValueError(
                f"params were drawn for {params.batch_size} images, the batch has {n}; "
                "use DSA(shared=True) to re-apply one transform to batches of other sizes"
            )
        v = {k: t.to(x.device).expand(n) for k, t in params.values.items()}
        family = params.family
        if family == "color":
            return _color(x, v["brightness"].to(x.dtype), v["saturation"].to(x.dtype), v["contrast"].to(x.dtype))
        if family == "crop":
            return _translate(x, v["shift_y"], v["shift_x"])
        if family == "cutout":
            return _cutout(x, v["centre_y"], v["centre_x"], self.cutout)
        if family == "flip":
            return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        if family == "scale":
            zero = torch.zeros_like(v["scale_x"])
            theta = torch.stack([torch.stack([v["scale_x"], zero, zero], 1),
                                 torch.stack([zero, v["scale_y"], zero], 1)], 1)
            return _warp(x, theta)
        if family == "rotate":
            cos, sin, zero = v["angle"].cos(), v["angle"].sin(), torch.zeros_like(v["angle"])
            theta = torch.stack([torch.stack([cos, -sin, zero], 1),
                                 torch.stack([sin, cos, zero], 1)], 1)
            return _warp(x, theta)
        raise ValueError(f"unknown DSA family {family!r}; expected one of {FAMILIES}")


# --- the dihedral symmetries ------------------------------------------------------------------


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and 90-degree rotations of square (N, C, S, S)
    images, drawn per image.

    Tissue has no orientation, so these eight symmetries are free extra data. The draws
    come from `generator` (on the CPU) so a seeded run repeats exactly."""
    n = len(x)
    draws = torch.randint(0, 2, (n, 2), generator=generator).bool().to(x.device)
    turns = torch.randint(0, 4, (n,), generator=generator).to(x.device)
    x = torch.where(draws[:, 0].view(-1, 1, 1, 1), x.flip(3), x)
    x = torch.where(draws[:, 1].view(-1, 1, 1, 1), x.flip(2), x)
    out = x.clone()
    for k in (1, 2, 3):  # images are square, so a rotated image keeps its shape
        pick = turns == k
        if pick.any():
            out[pick] = torch.rot90(x[pick], k, dims=(2, 3))
    return out


def dihedral_views(images: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and 90-degree turns of uint8 (N, S, S, C) images, the identity first."""
    turns = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    return [np.ascontiguousarray(v) for v in turns + [t[:, :, ::-1] for t in turns]]


# --- the operations ---------------------------------------------------------------------------


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"DSA needs float (N, C, H, W) images, not {x.dtype} {tuple(x.shape)}")


def _color(x: torch.Tensor, brightness, saturation, contrast) -> torch.Tensor:
    """Brightness shift, then saturation (scale around the per-pixel channel mean), then
    contrast (scale around the per-image mean): DSA's order."""
    x = x + brightness.view(-1, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * saturation.view(-1, 1, 1, 1) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast.view(-1, 1, 1, 1) + mean


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x through per-image 2x3 affine matrices (zeros outside the image)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _translate(x: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Shift each image by whole pixels, filling with zeros (= pad, then crop).

    With align_corners=False, normalised coordinates span the pixel edges, so k pixels are
    2k/side; whole-pixel shifts land on pixel centres and bilinear sampling is exact."""
    n, _, height, width = x.shape
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    tx, ty = -2.0 * shift_x.float() / width, -2.0 * shift_y.float() / height
    theta = torch.stack([torch.stack([one, zero, tx], 1), torch.stack([zero, one, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, centre_y, centre_x, ratio: float) -> torch.Tensor:
    """Zero a square of side round(ratio * side) around each image's centre (clipped at
    the border). A mask multiplication: the gradient is zero inside the square only."""
    _, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    rows = torch.arange(height, device=x.device).view(1, -1)
    cols = torch.arange(width, device=x.device).view(1, -1)
    top, left = (centre_y - size_y // 2).view(-1, 1), (centre_x - size_x // 2).view(-1, 1)
    in_rows = (rows >= top) & (rows < top + size_y)  # (N, H)
    in_cols = (cols >= left) & (cols < left + size_x)  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
    return x * keep[:, None].to(x.dtype)
