"""The KL autoencoder of the latent diffusion model (diffusers' `AutoencoderKL`).

Small images (28 px) get a small autoencoder trained here on the real train split
(L1 reconstruction + a weak KL term); larger ones may instead load a pretrained diffusers
autoencoder (e.g. Stable Diffusion's VAE) from a folder or a hub id. Either way the
latents are scaled by ``config.scaling_factor`` so the diffusion model sees unit variance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup
from ..progress import tqdm

from ..checkpoints import CheckpointFolder
from ..classifiers.augmentation import random_dihedral
from .config import AutoencoderConfig


class ModelLoadError(Exception):
    """A pretrained model could not be loaded; the message says what to do."""


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def build_autoencoder(cfg: AutoencoderConfig, image_size: int) -> AutoencoderKL:
    """A fresh AutoencoderKL; its latent side is image_size / 2**(levels - 1)."""
    levels = len(cfg.block_out_channels)
    if image_size % 2 ** (levels - 1):
        raise ValueError(f"image size {image_size} is not divisible by 2**{levels - 1}")
    groups = min(32, *cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=groups,
        sample_size=image_size,
        mid_block_add_attention=False,  # attention buys little at these sizes and is slow on CPU
        scaling_factor=1.0,
    )


def load_pretrained_autoencoder(name_or_path: str, subfolder: str | None = None) -> AutoencoderKL:
    """Load a diffusers AutoencoderKL from a local folder or a hub id, with one clear error
    when that is impossible (offline, a wrong name, not an autoencoder)."""
    local = Path(name_or_path).expanduser()
    try:
        if local.exists():
            return AutoencoderKL.from_pretrained(local, subfolder=subfolder)
        return AutoencoderKL.from_pretrained(name_or_path, subfolder=subfolder)
    except (OSError, ValueError, EnvironmentError) as err:
        where = "folder" if local.exists() else "hub id"
        raise ModelLoadError(
            f"cannot load an AutoencoderKL from {where} {name_or_path!r}: {str(err).splitlines()[0]}\n"
            f"A hub id needs internet on first use. Offline, download the model elsewhere "
            f"(AutoencoderKL.from_pretrained(...).save_pretrained(folder)), copy the folder "
            f"here and set autoencoder_pretrained to its path; or leave it None to train a "
            f"small autoencoder here."
        ) from None


def checkpoint_interval(cfg: AutoencoderConfig) -> int:
    """Steps between checkpoints: a tenth of the run. A module rule rather than a
    configuration field, because how often a run saves itself does not change what it
    learns, and a new field would change the key of every autoencoder already trained."""
    return max(1, cfg.steps // 10)


def train_autoencoder(
    images: np.ndarray, cfg: AutoencoderConfig, progress: bool = True, device: str | torch.device | None = None,
    work_dir: Path | None = None, config_hash: str = "", max_steps: int | None = None,
) -> tuple[AutoencoderKL | None, pd.DataFrame]:
    """Train on uint8 images (N, S, S, 3); returns the model (eval mode, scaling factor set
    from the latents' standard deviation) and the loss per step. `device` defaults to CUDA
    when present.

    With `work_dir` the run checkpoints itself there every `checkpoint_interval` steps and
    resumes from the newest checkpoint it finds (written under `config_hash`), ending
    bit-identical to an uninterrupted run; `max_steps` stops it early (the model is then
    None)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)  # also drives the posterior's sampling noise
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # augmentation draws
    model = build_autoencoder(cfg, images.shape[1]).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = min(100, cfg.steps // 10)
    schedule = get_cosine_schedule_with_warmup(optimiser, warmup, cfg.steps)
    rows: list[dict] = []
    checkpoints = CheckpointFolder(work_dir, config_hash, "autoencoder") if work_dir is not None else None
    start = 0
    if checkpoints is not None and (checkpoint := checkpoints.load(device)) is not None:
        model.load_state_dict(checkpoint.weights)
        optimiser.load_state_dict(checkpoint.training["optimiser"])
        schedule.load_state_dict(checkpoint.training["schedule"])
        generator.set_state(checkpoint.training["generator"].cpu())
        torch.set_rng_state(checkpoint.training["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in checkpoint.training:
            torch.cuda.set_rng_state(checkpoint.training["cuda_rng"].cpu(), device)
        rng.bit_generator.state = checkpoint.state["numpy_rng"]
        start, rows = checkpoint.step, checkpoint.state["history"]
        print(f"[autoencoder] resumed from {checkpoint.folder.name} (step {start} of {cfg.steps})")
    end = cfg.steps if max_steps is None else min(cfg.steps, start + max_steps)
    every = checkpoint_interval(cfg)
    data = to_model_range(images)
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="autoencoder", disable=not progress)
    for step in range(start, end):
        batch = data[rng.choice(len(data), size=min(cfg.batch_size, len(data)), replace=False)]
        batch = random_dihedral(batch, generator).to(device)  # the same flips and turns as the judge's
        posterior = model.encode(batch).latent_dist
        recon = model.decode(posterior.sample()).sample
        l1 = (recon - batch).abs().mean()
        kl = posterior.kl().mean() / batch[0].numel()
        edge = (laplacian(recon) - laplacian(batch)).abs().mean() if cfg.edge_weight else torch.zeros(())
        loss = l1 + cfg.kl_weight * kl + cfg.edge_weight * edge
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        rows.append({"step": step + 1, "l1": l1.item(), "kl": kl.item(), "edge": edge.item()})
        bar.update(1)
        bar.set_postfix(l1=f"{l1.item():.4f}")
        if checkpoints is not None and ((step + 1) % every == 0 or step + 1 == end):
            training = {"optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                        "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
            if device.type == "cuda":
                training["cuda_rng"] = torch.cuda.get_rng_state(device)
            checkpoints.save(step + 1, model.state_dict(), training,
                             {"history": rows, "numpy_rng": rng.bit_generator.state})
    bar.close()
    if end < cfg.steps:
        return None, pd.DataFrame(rows)
    model.eval()
    latents = encode(model, images[: min(len(images), 2048)], scaled=False)
    model.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return model, pd.DataFrame(rows)


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(images: torch.Tensor) -> torch.Tensor:
    """The 5-point Laplacian of every channel of (N, C, H, W) images, edges reflected: the
    fine detail (nuclei, fibres) an L1 loss alone lets blur away."""
    c = images.shape[1]
    kernel = _LAPLACE.to(images)[None, None].expand(c, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), kernel, groups=c)


@torch.no_grad()
def encode(model: AutoencoderKL, images: np.ndarray, batch_size: int = 256, scaled: bool = True,
           progress: bool = False) -> torch.Tensor:
    """uint8 images -> latents (posterior means), times the scaling factor when `scaled`;
    `progress` shows a bar (encoding a full-size train split takes minutes on a CPU)."""
    model.eval()
    scale = model.config.scaling_factor if scaled else 1.0
    out = [
        model.encode(to_model_range(images[i : i + batch_size]).to(model.device)).latent_dist.mode().cpu() * scale
        for i in tqdm(range(0, len(images), batch_size), desc="encoding", unit="batch", disable=not progress)
    ]
    return torch.cat(out)


@torch.no_grad()
def decode(model: AutoencoderKL, latents: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Scaled latents -> uint8 images (N, S, S, 3)."""
    model.eval()
    scale = model.config.scaling_factor
    out = [
        to_uint8(model.decode(latents[i : i + batch_size].to(model.device) / scale).sample)
        for i in range(0, len(latents), batch_size)
    ]
    return np.concatenate(out)


def reconstruction_error(model: AutoencoderKL, images: np.ndarray) -> dict[str, float]:
    """Mean absolute error (0-255 scale) and PSNR (dB) of encode -> decode on `images`."""
    recon = decode(model, encode(model, images)).astype(np.float64)
    diff = recon - images.astype(np.float64)
    mse = float((diff**2).mean())
    return {"mae": float(np.abs(diff).mean()), "psnr_db": float(10 * np.log10(255.0**2 / max(mse, 1e-12)))}
