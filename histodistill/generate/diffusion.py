"""Training the class-conditional latent diffusion model, resumable at any moment.

diffusers supplies the noise schedule and training targets (`DDPMScheduler`), the
learning-rate schedule and the weight EMA (`EMAModel`); the denoiser is our `UViT`.
Classifier-free guidance is learnt by replacing a share of the labels with the null class.

Checkpoints (`checkpoints.py`): every `checkpoint_every` steps the whole training state
(weights; optimiser, learning-rate schedule, EMA and random-generator state; step; loss
history; the configuration's hash). A run killed at any moment resumes from the last
complete checkpoint with the right step, schedule and random stream (from the one before,
with a message, when the newest cannot be read); a checkpoint written under another
configuration is refused.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr

from ..checkpoints import CheckpointFolder
from .config import DiffusionConfig
from ..progress import tqdm
from .scale_out import Shard
from .uvit import UViT

# One row per step; `seconds` is the training wall time up to that step (resumes included).
HISTORY_COLUMNS = ["step", "loss", "lr", "seconds"]


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


def build_denoiser(cfg: DiffusionConfig, latent_shape: tuple[int, int, int], n_classes: int) -> UViT:
    channels, side, _ = latent_shape
    return UViT(
        sample_size=side,
        in_channels=channels,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        num_classes=n_classes,
    )


def build_noise_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
    )


def loss_weights(noise_scheduler: DDPMScheduler, t: torch.Tensor, snr_gamma: float | None) -> torch.Tensor | None:
    """Per-sample weights of the min-SNR-gamma strategy (Hang et al. 2023), or None for none.

    In terms of the clean-image error, min(SNR, gamma) caps what nearly clean timesteps
    count; divided by SNR (epsilon target) or SNR + 1 (v target), since those targets
    already weigh the clean-image error by SNR and SNR + 1."""
    if snr_gamma is None:
        return None
    snr = compute_snr(noise_scheduler, t)
    capped = torch.clamp(snr, max=snr_gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return capped / (snr + 1)
    return capped / snr


class Trainer:
    """Owns the model, optimiser, schedules, EMA and random stream of one training run.

    With an `accelerator` of N processes (`scale_out`), each process trains on its 1/N slice
    of every batch under DDP; the random stream, schedules and checkpoints stay those of the
    one-process run."""

    def __init__(self, latents: torch.Tensor, labels: np.ndarray, n_classes: int, cfg: DiffusionConfig,
                 work_dir: Path, config_hash: str, device: str | torch.device | None = None, accelerator=None):
        self.cfg, self.work_dir, self.config_hash = cfg, Path(work_dir), config_hash
        self.accelerator = accelerator
        self.shard = Shard(accelerator.process_index, accelerator.num_processes) if accelerator else Shard()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.latents = latents.float().cpu()  # batches move to the device one at a time
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.n_classes = n_classes
        torch.manual_seed(cfg.seed)
        self.model = build_denoiser(cfg, tuple(latents.shape[1:]), n_classes).to(self.device)
        self.ema = EMAModel(self.model.parameters(), decay=cfg.ema_decay)
        self.optimiser = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay
        )
        self.lr_schedule = get_cosine_schedule_with_warmup(self.optimiser, cfg.warmup_steps, cfg.steps)
        self.noise = build_noise_scheduler(cfg)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.history: list[dict] = []
        self.seconds = 0.0  # training wall time so far, summed over resumed runs
        self.checkpoints = CheckpointFolder(self.work_dir, config_hash, "diffusion")
        self._resume()
        # DDP all-reduces (averages) the gradients of the processes' slices in backward().
        self.forward_model = accelerator.prepare_model(self.model) if self.shard.world > 1 else self.model

    # --- one step -------------------------------------------------------------------------

    def train_step(self) -> float:
        started = time.perf_counter()
        cfg, g = self.cfg, self.generator
        idx = torch.randint(len(self.latents), (min(cfg.batch_size, len(self.latents)),), generator=g)
        x0, y = self.latents[idx], self.labels[idx].clone()
        drop = torch.rand(len(y), generator=g) < cfg.label_dropout
        y[drop] = self.n_classes  # the null class
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(cfg.num_train_timesteps, (len(y),), generator=g)
        # Every random draw comes from the CPU generator above, so a run repeats on any device
        # and under any number of processes (each keeps its slice of the whole batch).
        part = self.shard.part(len(y))
        x0, y, noise, t = (v[part].to(self.device) for v in (x0, y, noise, t))
        noisy = self.noise.add_noise(x0, noise, t)
        self.forward_model.train()
        with torch.autocast(noisy.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = self.forward_model(noisy, t, y)
        if cfg.prediction_type == "v_prediction":
            target = self.noise.get_velocity(x0, noise, t)
        else:
            target = noise
        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        weights = loss_weights(self.noise, t, cfg.snr_gamma)
        loss = per_sample.mean() if weights is None else (per_sample * weights).mean()
        # The whole batch's loss, the same number on every process (so all of them stop together).
        whole = self.accelerator.reduce(loss.detach(), "mean") if self.shard.world > 1 else loss
        if not torch.isfinite(whole):
            last = self.latest_checkpoint()
            raise TrainingDiverged(
                f"diffusion loss is {whole.item()} at step {self.step + 1}; stopped. The last good "
                f"checkpoint ({last.name if last else 'none'}) is kept. Lower lr or check the latents."
            )
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimiser.step()
        self.lr_schedule.step()
        self.ema.step(self.model.parameters())
        self.step += 1
        self.seconds += time.perf_counter() - started
        self.history.append({"step": self.step, "loss": whole.item(), "lr": self.lr_schedule.get_last_lr()[0],
                             "seconds": round(self.seconds, 3)})
        return whole.item()

    def run(self, progress: bool = True, max_steps: int | None = None) -> None:
        """Train until cfg.steps (or `max_steps` more steps), checkpointing on the way."""
        end = self.cfg.steps if max_steps is None else min(self.cfg.steps, self.step + max_steps)
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="diffusion", disable=not progress)
        while self.step < end:
            loss = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                self.save_checkpoint()
        bar.close()

    def ema_model(self) -> UViT:
        """A copy of the denoiser carrying the EMA weights (the one to sample from)."""
        model = build_denoiser(self.cfg, tuple(self.latents.shape[1:]), self.n_classes)
        model.load_state_dict(self.model.state_dict())
        self.ema.copy_to(model.parameters())
        return model.to(self.device).eval()

    # --- checkpoints ---------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        return self.checkpoints.latest()

    def save_checkpoint(self) -> Path | None:
        """Process 0 writes (the others hold the same state); all wait until it is written."""
        path = None
        if self.shard.rank == 0:
            training = {
                "optimiser": self.optimiser.state_dict(),
                "lr_schedule": self.lr_schedule.state_dict(),
                "ema": self.ema.state_dict(),
                "generator": self.generator.get_state(),
            }
            path = self.checkpoints.save(self.step, self.model.state_dict(), training, {"history": self.history})
        if self.shard.world > 1:
            self.accelerator.wait_for_everyone()
        return path

    def _resume(self) -> None:
        checkpoint = self.checkpoints.load(self.device)
        if checkpoint is None:
            return
        self.model.load_state_dict(checkpoint.weights)
        self.optimiser.load_state_dict(checkpoint.training["optimiser"])
        self.lr_schedule.load_state_dict(checkpoint.training["lr_schedule"])
        self.ema.load_state_dict(checkpoint.training["ema"])
        self.ema.to(self.device)
        self.generator.set_state(checkpoint.training["generator"].cpu())
        self.step, self.history = checkpoint.step, checkpoint.state["history"]
        self.seconds = float(self.history[-1].get("seconds", 0.0)) if self.history else 0.0
        print(f"[diffusion] resumed from {checkpoint.folder.name} (step {self.step} of {self.cfg.steps})")

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=HISTORY_COLUMNS)
