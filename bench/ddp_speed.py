"""U-ViT training steps/s for a profile's denoiser on N data-parallel processes (accelerate).

The same trainer the pipeline uses (`diffusion.Trainer` with an accelerator: each process
takes its slice of every batch, DDP averages the gradients), on random latents of the
profile's shape. Run it under accelerate with 1 and with N processes and compare:

    accelerate launch --multi_gpu --num_processes 2 bench/ddp_speed.py --profile paper
    python bench/ddp_speed.py --profile paper        # one process

Prints steps/s and writes bench/results/ddp_speed-<profile>-<device>-<N>.csv (process 0).
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
from accelerate import Accelerator

from histodistill import machine, presets
from histodistill.generate.diffusion import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=presets.PROFILES)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    args = parser.parse_args()
    machine.configure_torch()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    data_cfg, ae_cfg = presets.stage_config("data", args.profile), presets.stage_config("autoencoder", args.profile)
    cfg = dataclasses.replace(presets.stage_config("diffusion", args.profile), checkpoint_every=10**9)
    side = data_cfg.size // 2 ** (len(ae_cfg.block_out_channels) - 1)
    latents = torch.randn(4 * cfg.batch_size, ae_cfg.latent_channels, side, side, generator=torch.Generator().manual_seed(0))
    labels = np.arange(len(latents)) % 9
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(latents, labels, 9, cfg, Path(work), "bench", accelerator.device,
                          accelerator=accelerator if accelerator.num_processes > 1 else None)
        trainer.run(progress=False, max_steps=3)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        accelerator.wait_for_everyone()
        start = time.perf_counter()
        trainer.run(progress=False, max_steps=args.steps)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        accelerator.wait_for_everyone()
        seconds = time.perf_counter() - start
    if accelerator.is_main_process:
        device = machine.device_name("cuda" if torch.cuda.is_available() else "cpu")
        row = {"profile": args.profile, "processes": accelerator.num_processes, "batch_size": cfg.batch_size,
               "hidden_size": cfg.hidden_size, "depth": cfg.depth, "steps_per_s": round(args.steps / seconds, 3),
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan"),
               "device": device}
        print(pd.DataFrame([row]).to_string(index=False))
        RESULTS.mkdir(exist_ok=True)
        kind = "cuda" if torch.cuda.is_available() else "cpu"
        out = RESULTS / f"ddp_speed-{args.profile}-{kind}-{accelerator.num_processes}.csv"
        pd.DataFrame([row]).to_csv(out, index=False)
        print(f"written to {out}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
