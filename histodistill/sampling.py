"""Drawing the synthetic pool: DPM-Solver++ (diffusers) with classifier-free guidance.

The initial noise of every image comes from one seeded generator, drawn class by class
in a fixed order, so the same seed and configuration always give the same pool.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from .config import SamplingConfig
from .uvit import UViT


def guided_noise(model: UViT, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + scale * (eps_cond - eps_uncond), both from one batched forward pass."""
    if scale == 1.0:
        return model(x, t, labels)
    null = torch.full_like(labels, model.null_class)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def sample_latents(
    model: UViT,
    noise_scheduler: DDPMScheduler,
    n_classes: int,
    cfg: SamplingConfig,
    progress: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    """`cfg.per_class` latents for every class; returns (latents, labels), class-ordered."""
    model.eval()
    solver = DPMSolverMultistepScheduler.from_config(noise_scheduler.config, algorithm_type="dpmsolver++")
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    labels = np.repeat(np.arange(n_classes), cfg.per_class)
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn((len(labels), *shape), generator=generator)
    out = []
    batches = range(0, len(labels), cfg.batch_size)
    for start in tqdm(batches, desc="sampling", disable=not progress):
        x = noise[start : start + cfg.batch_size].clone()
        y = torch.as_tensor(labels[start : start + cfg.batch_size])
        solver.set_timesteps(cfg.steps)  # fresh solver state for every batch
        for t in solver.timesteps:
            eps = guided_noise(model, x, t.expand(len(x)), y, cfg.guidance_scale)
            x = solver.step(eps, t, x).prev_sample
        out.append(x)
    return torch.cat(out), labels
