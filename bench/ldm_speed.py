"""Speed of the generative stages for a profile's configuration.

Measures, on this machine, autoencoder training steps/s, U-ViT training steps/s (fp32 and
with bf16 autocast) and sampled images/s (DPM-Solver++ with the profile's steps and guidance, decoding included).
Fixed costs (model construction, the first steps) are excluded: each figure is the time
of `--steps` further steps after a short warm-up. Speed does not depend on the weights, so
fresh, untrained models are timed.

    python bench/ldm_speed.py --profile demo              # prints and writes bench/results/
    python bench/ldm_speed.py --profile paper --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histodistill import machine, presets
from histodistill.data import dataset
from histodistill.generate import autoencoder
from histodistill.generate.diffusion import Trainer, build_denoiser, build_noise_scheduler
from histodistill.generate.pipeline import ClassConditionalLDMPipeline, dpm_solver
from histodistill.generate.config import AutoencoderConfig, DiffusionConfig, SamplingConfig

RESULTS = Path(__file__).resolve().parent / "results"


def autoencoder_steps_per_s(images: np.ndarray, cfg: AutoencoderConfig, steps: int, device: str) -> float:
    warm = 3
    timed = []
    for n in (warm, warm + steps):  # the difference removes construction and warm-up costs
        start = time.perf_counter()
        autoencoder.train_autoencoder(images, _replace(cfg, steps=n), progress=False, device=device)
        timed.append(time.perf_counter() - start)
    return steps / max(timed[1] - timed[0], 1e-9)


def diffusion_steps_per_s(latent_shape, n_classes: int, cfg: DiffusionConfig, steps: int, device: str) -> float:
    latents = torch.randn(max(cfg.batch_size, 256), *latent_shape)
    labels = np.arange(len(latents)) % n_classes
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(latents, labels, n_classes, _replace(cfg, checkpoint_every=10**9), work, "bench", device)
        trainer.run(progress=False, max_steps=3)
        _sync(device)
        start = time.perf_counter()
        trainer.run(progress=False, max_steps=steps)
        _sync(device)
        return steps / (time.perf_counter() - start)


def sampling_images_per_s(image_size: int, ae_cfg, dm_cfg, s_cfg: SamplingConfig, n_classes: int,
                          batches: int, device: str) -> float:
    vae = autoencoder.build_autoencoder(ae_cfg, image_size).to(device).eval()
    side = image_size // 2 ** (len(ae_cfg.block_out_channels) - 1)
    uvit = build_denoiser(dm_cfg, (ae_cfg.latent_channels, side, side), n_classes).to(device).eval()
    pipe = ClassConditionalLDMPipeline(vae=vae, transformer=uvit, scheduler=dpm_solver(build_noise_scheduler(dm_cfg)))
    labels = np.arange(s_cfg.batch_size * batches) % n_classes
    pipe(labels[:8], s_cfg.steps, s_cfg.guidance_scale, progress=False, solver=s_cfg.solver)  # warm-up
    _sync(device)
    start = time.perf_counter()
    pipe(labels, s_cfg.steps, s_cfg.guidance_scale, batch_size=s_cfg.batch_size, progress=False, solver=s_cfg.solver)
    _sync(device)
    return len(labels) / (time.perf_counter() - start)


def _replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", choices=presets.PROFILES)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--batches", type=int, default=2, help="timed sampling batches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    cfg = {stage: presets.stage_config(stage, args.profile) for stage in presets.STAGES}
    data_cfg, n_classes = cfg["data"], 9  # PathMNIST's classes
    if data_cfg.source == "bundled":
        images = dataset.prepare_data(data_cfg).splits["train"].images
    else:  # speed does not depend on the pixels: random images of the profile's size
        images = np.random.default_rng(0).integers(0, 256, (2048, data_cfg.size, data_cfg.size, 3), dtype=np.uint8)
    ae_cfg, dm_cfg, s_cfg = cfg["autoencoder"], cfg["diffusion"], cfg["sampling"]
    side = data_cfg.size // 2 ** (len(ae_cfg.block_out_channels) - 1)
    rows = [
        ("autoencoder training", "steps/s", autoencoder_steps_per_s(images, ae_cfg, args.steps, args.device),
         f"batch {ae_cfg.batch_size}, channels {ae_cfg.block_out_channels}"),
        *[
            (f"U-ViT training{' (bf16 autocast)' if bf16 else ''}", "steps/s",
             diffusion_steps_per_s((ae_cfg.latent_channels, side, side), n_classes, _replace(dm_cfg, bf16=bf16),
                                   args.steps, args.device),
             f"batch {dm_cfg.batch_size}, hidden {dm_cfg.hidden_size}, depth {dm_cfg.depth}, patch {dm_cfg.patch_size}")
            for bf16 in (False, True)  # the profile's setting is in presets.py; both are timed
        ],
        ("sampling", "images/s",
         sampling_images_per_s(data_cfg.size, ae_cfg, dm_cfg, s_cfg, n_classes, args.batches, args.device),
         f"batch {s_cfg.batch_size}, {s_cfg.steps} steps of {s_cfg.solver}, guidance {s_cfg.guidance_scale}"),
    ]
    table = pd.DataFrame(rows, columns=["what", "unit", "rate", "setting"])
    table["rate"] = table["rate"].round(3)
    table.insert(0, "profile", args.profile)
    table["device"] = machine.device_name(args.device)
    print(table.to_string(index=False))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ldm_speed-{args.profile}-{'cuda' if args.device.startswith('cuda') else 'cpu'}.csv"
    table.to_csv(out, index=False)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
