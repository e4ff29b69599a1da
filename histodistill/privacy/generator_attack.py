"""Membership inference against the generator, the audit's test 5: does the run's denoiser fit
the real train images it learnt from better than real images it never saw (its denoising
loss at low noise levels)? With its controls: a small denoiser of the same kind overtrained on
a few train images (must be caught) and the same attack with unseen images on both sides
(must find nothing).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import DDPMScheduler

from .. import workers
from ..generate import stages
from ..generate.config import DiffusionConfig
from ..generate.diffusion import Trainer
from ..generate.uvit import UViT
from ..progress import tqdm
from . import membership
from .config import PrivacyConfig
from .controls import (AUDITED, CONTROL, GENERATOR, NEGATIVE, UNSEEN_GENERATOR, expected_outcome, half_within_class,
                       member_sample, test_row)


def denoising_losses(transformer, noise: DDPMScheduler, latents: torch.Tensor, labels: np.ndarray,
                     timesteps: tuple[int, ...], draws: int, seed: int, desc: str | None = None) -> np.ndarray:
    """Each image's denoising loss (the training objective, unweighted) at each timestep,
    averaged over `draws` noise draws (seeded): (len(timesteps), N). Images the model trained
    on tend to have lower loss (Carlini et al. 2023; Matsumoto et al. 2023).

    The noise is drawn on the CPU (the same draws on any device); the denoiser runs where its
    weights are, 256 latents at a time. With `desc`, a progress bar counts the batches: at
    the paper's sizes the generator's attack is the audit's longest step."""
    device = next(transformer.parameters()).device
    batches = range(0, len(latents), 256)
    bar = tqdm(total=draws * len(timesteps) * len(batches), desc=desc, unit="batch", disable=desc is None)
    generator = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(labels, dtype=torch.long)
    out = np.zeros((len(timesteps), len(latents)))
    transformer.eval()
    with torch.no_grad():
        for _ in range(draws):
            eps = torch.randn(latents.shape, generator=generator)
            for i, step in enumerate(timesteps):
                t = torch.full((len(latents),), int(step), dtype=torch.long)
                noisy = noise.add_noise(latents, eps, t)
                target = noise.get_velocity(latents, eps, t) if noise.config.prediction_type == "v_prediction" else eps
                for start in batches:
                    part = slice(start, start + 256)
                    pred = transformer(noisy[part].to(device), t[part].to(device), y[part].to(device)).float().cpu()
                    out[i, part] += ((pred - target[part]) ** 2).mean(dim=(1, 2, 3)).numpy() / draws
                    bar.update()
    bar.close()
    return out


@dataclass(frozen=True)
class Encoded:
    """What the generator's attacks score, encoded once: the run's pipeline and noise
    schedule, the member sample of train and the control's few train images (indices into
    train), their latents, and val's."""

    pipe: object
    noise: DDPMScheduler
    sample: np.ndarray
    few: np.ndarray
    member_latents: torch.Tensor
    few_latents: torch.Tensor
    holdout_latents: torch.Tensor


def encode(up, cfg: PrivacyConfig) -> Encoded:
    """Load the run's generator and encode the images its attacks score."""
    train, holdout = up.bundle.splits["train"], up.bundle.splits["val"]
    # On a GPU box the encoder and the denoiser run there: at the paper's counts the attack's
    # 360,000 denoiser passes take hours on a CPU (bench/paper_time_model.py).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = stages.load_pipeline(up.diffusion).to(device)
    rng = np.random.default_rng(cfg.seed + 3)
    few = np.concatenate([rng.choice(np.flatnonzero(train.labels == c), size=min(cfg.control_per_class,
                                     int((train.labels == c).sum())), replace=False) for c in range(up.bundle.n_classes)])
    sample = member_sample(len(train.labels), cfg)
    encoded = np.union1d(sample, few)  # the train images either attack scores, encoded once
    latents = pipe.to_model_space(train.images[encoded])
    return Encoded(pipe, DDPMScheduler.from_config(pipe.scheduler.config), sample, few,
                   latents[np.searchsorted(encoded, sample)], latents[np.searchsorted(encoded, few)],
                   pipe.to_model_space(holdout.images))


def control_config(cfg: PrivacyConfig, enc: Encoded) -> DiffusionConfig:
    """The control denoiser: the run's kind (patch size, noise schedule, prediction), small,
    overtrained on `len(enc.few)` images for `cfg.control_steps` steps."""
    noise = enc.noise.config
    return DiffusionConfig(hidden_size=cfg.control_hidden_size, depth=cfg.control_depth, num_heads=4,
                           patch_size=enc.pipe.transformer.config.patch_size, steps=cfg.control_steps,
                           batch_size=min(32, len(enc.few)), lr=1e-3, warmup_steps=min(100, cfg.control_steps // 10),
                           prediction_type=noise.prediction_type, augment=False, checkpoint_every=cfg.control_steps,
                           beta_schedule=noise.beta_schedule, beta_start=noise.beta_start, beta_end=noise.beta_end)


def train_control(latents: torch.Tensor, labels: np.ndarray, n_classes: int, control_cfg: DiffusionConfig) -> UViT:
    """The control denoiser's EMA weights (on the CPU), trained on one thread wherever it
    trains (here or in a model worker), so its weights do not depend on where."""
    with workers.one_thread_on_cpu(), tempfile.TemporaryDirectory() as work:
        trainer = Trainer(latents, labels, n_classes, control_cfg, Path(work), "control")
        trainer.run(progress=False)
        return trainer.ema_model().cpu()


def start_control(enc: Encoded, cfg: PrivacyConfig, up, progress: bool = True) -> Callable[[], UViT]:
    """Start training the control denoiser in a model worker, beside the audit's other work
    (its classifiers take the other workers); returns what waits for it. Where workers do not
    pay (one CPU, a short control), it trains here when asked for."""
    train_labels = up.bundle.splits["train"].labels[enc.few]
    args = (enc.few_latents, train_labels, up.bundle.n_classes, control_config(cfg, enc))
    n = workers.count(workers.available(), cfg.control_steps)
    if progress:
        where = "a worker process, beside the other tests" if n > 1 else "this process"
        print(f"[audit] control: a denoiser overtrained on {len(enc.few)} train images "
              f"({cfg.control_steps} steps, in {where})")
    if n == 1:
        return lambda: train_control(*args)
    return workers.submit(n, train_control, *args).result


def generator_attacks(up, enc: Encoded, control: Callable[[], UViT], cfg: PrivacyConfig, curves: dict,
                      progress: bool) -> list[dict]:
    """Membership inference against the run's generator (train vs val by denoising loss, one
    row per timestep) and against its control (`start_control`): a small denoiser of the
    same kind overtrained on `cfg.control_per_class` train images per class (members: those
    images)."""
    train, holdout = up.bundle.splits["train"], up.bundle.splits["val"]
    rows = []

    def record(test, name, role, result, n):
        rows.append(test_row(test, name, role, "model", result, n, expected_outcome(role)))
        curves[f"roc__{test}__{name}__fpr"], curves[f"roc__{test}__{name}__tpr"] = result["fpr"], result["tpr"]

    def attack(name, role, transformer, member_latents, member_labels):
        member_loss = denoising_losses(transformer, enc.noise, member_latents, member_labels, cfg.timesteps,
                                       cfg.draws, cfg.seed, desc=f"{name}: train" if progress else None)
        holdout_loss = denoising_losses(transformer, enc.noise, enc.holdout_latents, holdout.labels, cfg.timesteps,
                                        cfg.draws, cfg.seed + 1, desc=f"{name}: val" if progress else None)
        for i, step in enumerate(cfg.timesteps):
            test = f"MIA generator: denoising loss, t={step}"
            record(test, name, role, membership.membership_auc(-member_loss[i], -holdout_loss[i], cfg.n_boot, cfg.seed),
                   len(member_latents))
        return holdout_loss

    if progress:
        print("[audit] the generator: denoising losses of train and val")
    holdout_loss = attack(GENERATOR, AUDITED, enc.pipe.transformer, enc.member_latents, train.labels[enc.sample])
    # The negative control: the same attack with unseen images on both sides (half of val,
    # drawn within class, as "members" against the other half) must find nothing.
    half = half_within_class(holdout.labels, cfg.seed + 6)
    for i, step in enumerate(cfg.timesteps):
        result = membership.membership_auc(-holdout_loss[i][half], -holdout_loss[i][~half], cfg.n_boot, cfg.seed)
        record(f"MIA generator: denoising loss, t={step}", UNSEEN_GENERATOR, NEGATIVE, result, int(half.sum()))

    device = next(enc.pipe.transformer.parameters()).device
    attack("overtrained denoiser (control)", CONTROL, control().to(device), enc.few_latents, train.labels[enc.few])
    return rows
