"""Drawing the synthetic pool: DPM-Solver++ (diffusers) with classifier-free guidance.

Two solvers: "dpmsolver++" (deterministic: the image is a function of its initial noise)
and "sde-dpmsolver++" (stochastic: fresh noise at every step, which keeps more diversity
and fine texture at the same number of steps; Lu et al. 2022). The initial noise of every
image comes from one seeded generator, drawn class by class in a fixed order; the SDE's
step noise comes from one seeded stream per image. So the same seed and configuration
always give the same pool, whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, SchedulerMixin

from .config import SOLVERS
from ..progress import tqdm
from .uvit import UViT

# "trailing" spacing starts every sampling run at the last training timestep (T - 1), where
# the model was trained on pure noise; "leading" (the DDPM config's) would start at
# T - T/steps + 1 and leave signal the initial noise does not have (Lin et al. 2024). Set
# here rather than inherited, so no library default decides it.
TIMESTEP_SPACING = "trailing"


def check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    return solver


def dpm_solver(scheduler: SchedulerMixin, solver: str = "dpmsolver++") -> DPMSolverMultistepScheduler:
    """The sampler (DPM-Solver++, ODE or SDE form) for a model trained under `scheduler`'s
    noise schedule: the one constructor the pool, the pipeline and the ablations all use."""
    return DPMSolverMultistepScheduler.from_config(
        scheduler.config, algorithm_type=check_solver(solver), timestep_spacing=TIMESTEP_SPACING
    )


def step_noise_streams(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image for the SDE's step noise, seeded from `seed` and the image's
    index (through numpy's SeedSequence, so streams do not overlap): an image's noise does
    not depend on which batch it falls in."""
    states = np.random.SeedSequence([seed, 0x5DE]).generate_state(n, dtype=np.uint64)
    return [torch.Generator().manual_seed(int(s) >> 1) for s in states]


def noise_levels(scheduler: SchedulerMixin, timesteps: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of each timestep: the noise-to-signal
    ratio in which a guidance interval is written, so one interval means the same noise
    level under any schedule (Karras et al. 2022's sigma)."""
    alpha_bar = scheduler.alphas_cumprod[timesteps.long()].double()
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def guidance_scales(scheduler: SchedulerMixin, timesteps: torch.Tensor, scale: float,
                    interval: tuple[float, float] | None) -> list[float]:
    """The guidance scale at each sampling step: `scale` where the step's sigma lies in
    (lo, hi] of `interval`, 1.0 (the conditional prediction alone) elsewhere; `scale`
    everywhere when `interval` is None. Guidance at the highest noise levels pulls every
    sample of a class towards one mode and costs diversity, at the lowest it does next to
    nothing (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval")."""
    if interval is None:
        return [float(scale)] * len(timesteps)
    lo, hi = interval
    sigmas = noise_levels(scheduler, timesteps)
    return [float(scale) if lo < s <= hi else 1.0 for s in sigmas.tolist()]


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
    solver: str = "dpmsolver++",
    seed: int = 0,
    guidance_interval: tuple[float, float] | None = None,
    span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Latents for `labels` by DPM-Solver++ (`solver`: ODE or SDE form) under `scheduler`'s
    noise schedule, guided at `guidance_scale` over `guidance_interval` (sigma bounds; None:
    every step). All the initial noise is drawn first from `generator`, in label order,
    and the SDE's step noise comes from per-image streams seeded by `seed`, so batching does
    not change the result. `span` (start, stop) denoises only those images, each with the
    noise it has in the whole run (how a pool is sampled in chunks and across processes)."""
    model.eval()
    check_solver(solver)
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    noise = torch.randn((len(labels), *shape), generator=generator)
    streams = step_noise_streams(seed, len(labels)) if solver.startswith("sde") else None
    first, stop = span if span is not None else (0, len(labels))
    out = []
    for start in tqdm(range(first, stop, batch_size), desc="sampling", disable=not progress):
        end = min(start + batch_size, stop)
        x = noise[start:end].to(model.device)
        y = torch.as_tensor(labels[start:end], dtype=torch.long, device=model.device)
        # A fresh solver per batch: its multistep history must not leak between batches.
        sampler = dpm_solver(scheduler, solver)
        sampler.set_timesteps(steps)
        scales = guidance_scales(sampler, sampler.timesteps, guidance_scale, guidance_interval)
        for t, scale in zip(sampler.timesteps, scales):
            eps = guided_noise(model, x, t.expand(len(x)), y, scale)
            step_noise = None
            if streams is not None:
                step_noise = torch.stack([torch.randn(shape, generator=g) for g in streams[start : start + len(x)]])
            x = sampler.step(eps, t, x, variance_noise=step_noise).prev_sample
        out.append(x.cpu())
    return torch.cat(out) if out else torch.zeros((0, *shape))
