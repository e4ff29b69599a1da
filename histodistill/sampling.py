"""Drawing the synthetic pool: DPM-Solver++ (diffusers) with classifier-free guidance.

The initial noise of every image comes from one seeded generator, drawn class by class
in a fixed order, so the same seed and configuration always give the same pool.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, SchedulerMixin
from tqdm.auto import tqdm

from .config import SamplingConfig
from .uvit import UViT


# "trailing" spacing starts every sampling run at the last training timestep (T - 1), where
# the model was trained on pure noise; "leading" (the DDPM config's) would start at
# T - T/steps + 1 and leave signal the initial noise does not have (Lin et al. 2024). Set
# here rather than inherited, so no library default decides it.
TIMESTEP_SPACING = "trailing"


def dpm_solver(scheduler: SchedulerMixin) -> DPMSolverMultistepScheduler:
    """The sampler (DPM-Solver++) for a model trained under `scheduler`'s noise schedule:
    the one constructor the pool, the pipeline and the ablations all use."""
    return DPMSolverMultistepScheduler.from_config(
        scheduler.config, algorithm_type="dpmsolver++", timestep_spacing=TIMESTEP_SPACING
    )


def guided_noise(model: UViT, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + scale * (eps_cond - eps_uncond), both from one batched forward pass."""
    if scale == 1.0:
        return model(x, t, labels)
    null = torch.full_like(labels, model.null_class)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def denoise(
    model: UViT,
    scheduler: SchedulerMixin,
    labels: np.ndarray,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator,
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Latents for `labels` by DPM-Solver++ under `scheduler`'s noise schedule. All the
    initial noise is drawn first, in label order, so batching does not change the result."""
    model.eval()
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    noise = torch.randn((len(labels), *shape), generator=generator)
    out = []
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
        x = noise[start : start + batch_size].to(model.device)
        y = torch.as_tensor(labels[start : start + batch_size], dtype=torch.long, device=model.device)
        # A fresh solver per batch: its multistep history must not leak between batches.
        solver = dpm_solver(scheduler)
        solver.set_timesteps(steps)
        for t in solver.timesteps:
            eps = guided_noise(model, x, t.expand(len(x)), y, guidance_scale)
            x = solver.step(eps, t, x).prev_sample
        out.append(x.cpu())
    return torch.cat(out) if out else torch.zeros((0, *shape))


def sample_latents(
    model: UViT,
    noise_scheduler: SchedulerMixin,
    n_classes: int,
    cfg: SamplingConfig,
    progress: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    """`cfg.per_class` latents for every class; returns (latents, labels), class-ordered."""
    labels = np.repeat(np.arange(n_classes), cfg.per_class)
    generator = torch.Generator().manual_seed(cfg.seed)
    latents = denoise(model, noise_scheduler, labels, cfg.steps, cfg.guidance_scale, generator,
                      cfg.batch_size, progress)
    return latents, labels
