"""The program every process runs under ``accelerate launch`` (`scale_out.launch` starts
it): ``python -m histodistill.generate.scale_out_worker <task> <spec.json>`` forms the
process group and runs its share of the task, "sample" (the pool's chunks) or
"train-diffusion" (data-parallel denoiser training), as `scale_out` describes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from .config import DiffusionConfig, SamplingConfig
from ..machine import configure_torch
from .diffusion import Trainer
from .scale_out import Shard, sample_chunks
from .stages import load_pipeline_from


def _sample_worker(spec: dict, accelerator) -> None:
    pipe = load_pipeline_from(Path(spec["pipeline"])).to(accelerator.device)
    cfg = SamplingConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["cfg"].items()})
    sample_chunks(pipe, np.asarray(spec["labels"]), cfg, Path(spec["work"]),
                  Shard(accelerator.process_index, accelerator.num_processes), progress=accelerator.is_main_process)


def _train_worker(spec: dict, accelerator) -> None:
    work = Path(spec["work"])
    data = load_file(work / "training_latents.safetensors")
    cfg = DiffusionConfig(**spec["cfg"])
    trainer = Trainer(data["latents"], data["labels"].numpy(), spec["n_classes"], cfg, work, spec["key"],
                      accelerator.device, accelerator=accelerator)
    trainer.run(progress=accelerator.is_main_process, max_steps=spec.get("max_steps"))
    accelerator.wait_for_everyone()


TASKS = {"sample": _sample_worker, "train-diffusion": _train_worker}


def main(argv: list[str] | None = None) -> None:
    task, spec_path = (argv or sys.argv[1:])[:2]
    configure_torch()
    # Without a GPU, accelerate forms the process group only when told to use the CPU.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    TASKS[task](json.loads(Path(spec_path).read_text()), accelerator)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
