"""U-ViT: the paper's class-conditional denoiser (Bao et al., "All are Worth Words", CVPR 2023).

A plain ViT over latent patches in which the diffusion time and the class label are two
extra tokens, and the shallow half of the blocks feeds the deep half through long skip
connections (concatenate, then a linear layer), as a U-Net's skips do. Class id
`num_classes` is the null class used for classifier-free guidance.

It is a diffusers `ModelMixin`, so ``save_pretrained``/``from_pretrained`` write and read
safetensors with its configuration, like every other diffusers model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block; `skip` (the matching shallow block's output) is merged
    in first when the block sits in the deep half."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, skip: bool = False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UViT(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sample_size: int = 7,
        in_channels: int = 4,
        patch_size: int = 1,
        hidden_size: int = 256,
        depth: int = 7,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 9,
    ):
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size {sample_size} is not a multiple of patch_size {patch_size}")
        if depth % 2 == 0:
            raise ValueError("depth must be odd: shallow blocks, one middle block, deep blocks")
        self.num_patches = (sample_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.time_embed = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.SiLU(), nn.Linear(4 * hidden_size, hidden_size)
        )
        self.label_embed = nn.Embedding(num_classes + 1, hidden_size)  # + the null class
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + self.num_patches, hidden_size))
        half = depth // 2
        self.in_blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_ratio) for _ in range(half))
        self.mid_block = Block(hidden_size, num_heads, mlp_ratio)
        self.out_blocks = nn.ModuleList(Block(hidden_size, num_heads, mlp_ratio, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder_pred = nn.Linear(hidden_size, patch_size**2 * in_channels)
        self.final_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """Predict the noise (or the target the scheduler trains for) of `sample`."""
        b, c, h, w = sample.shape
        p = self.config.patch_size
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        x = self.patch_embed(sample).flatten(2).transpose(1, 2)  # (B, patches, D)
        t = self.time_embed(timestep_embedding(timestep, self.config.hidden_size))[:, None]
        y = self.label_embed(class_labels)[:, None]
        x = torch.cat([t, y, x], dim=1) + self.pos_embed
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, 2:]  # drop the time and class tokens
        x = x.view(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        return self.final_conv(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
