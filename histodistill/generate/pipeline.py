"""The trained latent diffusion model as one shareable diffusers pipeline.

``save_pretrained(folder)`` writes diffusers' own layout, so the model can be copied to
another machine and used without the rest of this project's cache:

    folder/
      model_index.json          # component classes, and the class names
      vae/                      # AutoencoderKL: config.json + safetensors (none in pixel space)
      transformer/              # UViT: config.json + safetensors
      scheduler/                # DPMSolverMultistepScheduler config (the training schedule)

    >>> from histodistill.generate.pipeline import ClassConditionalLDMPipeline
    >>> pipe = ClassConditionalLDMPipeline.from_pretrained(folder)
    >>> images = pipe(["tumor epithelium"] * 8, guidance_scale=2.0, seed=0)  # uint8 (8, S, S, 3)
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, SchedulerMixin

from .config import DiffusionConfig
from . import autoencoder as ae
from .diffusion import build_noise_scheduler
from .sampling import denoise, dpm_solver
from .uvit import UViT


class ClassConditionalLDMPipeline(DiffusionPipeline):
    """Autoencoder + class-conditional U-ViT + DPM-Solver++ with classifier-free guidance.
    Without an autoencoder (`vae` None) the denoiser works on the images themselves."""

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, vae: AutoencoderKL | None, transformer: UViT, scheduler: SchedulerMixin,
                 class_names: list[str] | None = None):
        super().__init__()
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
        names = list(class_names) if class_names else [f"class {i}" for i in range(transformer.config.num_classes)]
        if len(names) != transformer.config.num_classes:
            raise ValueError(f"{len(names)} class names for a denoiser of {transformer.config.num_classes} classes")
        self.register_to_config(class_names=names)

    @classmethod
    def assemble(cls, vae: AutoencoderKL | None, transformer: UViT, cfg: DiffusionConfig,
                 class_names: list[str]) -> "ClassConditionalLDMPipeline":
        """The pipeline of a denoiser trained under `cfg`: its sampler is DPM-Solver++ on the
        noise schedule it was trained with."""
        return cls(vae=vae, transformer=transformer, scheduler=dpm_solver(build_noise_scheduler(cfg)),
                   class_names=class_names)

    @classmethod
    def from_pretrained(cls, folder: str | Path, **model_kwargs) -> "ClassConditionalLDMPipeline":
        """The pipeline `save_pretrained` wrote into the local `folder`; `model_kwargs` go to
        the two models' ``from_pretrained``. Each component is read by its own class, not by the
        module path model_index.json records: a folder loads wherever the package keeps its
        modules."""
        folder = Path(folder)
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{folder} holds no model_index.json: not a folder that "
                                    "ClassConditionalLDMPipeline.save_pretrained wrote")
        index = json.loads(index_file.read_text())
        scheduler_class = getattr(diffusers, index["scheduler"][1])
        vae = AutoencoderKL.from_pretrained(folder / "vae", **model_kwargs) if (folder / "vae").is_dir() else None
        return cls(vae=vae,
                   transformer=UViT.from_pretrained(folder / "transformer", **model_kwargs),
                   scheduler=scheduler_class.from_pretrained(folder / "scheduler"),
                   class_names=index.get("class_names"))

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    def class_ids(self, classes) -> np.ndarray:
        """Class names or ids -> ids, with a clear error for an unknown name."""
        ids = []
        for c in classes:
            if isinstance(c, str):
                if c not in self.class_names:
                    raise ValueError(f"unknown class {c!r}; this model knows {self.class_names}")
                ids.append(self.class_names.index(c))
            else:
                if not 0 <= int(c) < len(self.class_names):
                    raise ValueError(f"class id {c} outside 0..{len(self.class_names) - 1}")
                ids.append(int(c))
        return np.asarray(ids, dtype=np.int64)

    @torch.no_grad()
    def __call__(self, classes, num_inference_steps: int = 25, guidance_scale: float = 2.0,
                 seed: int = 0, batch_size: int = 256, progress: bool = True,
                 solver: str = "dpmsolver++", guidance_interval: tuple[float, float] | None = None,
                 span: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 images (N, S, S, 3), one per entry of `classes` (names or ids); `solver`
        is "dpmsolver++" (deterministic) or "sde-dpmsolver++" (stochastic);
        `guidance_interval` (lo, hi) guides only the steps whose sigma lies in (lo, hi];
        `span` (start, stop) samples only those entries, each as in the whole call."""
        labels = self.class_ids(classes)
        generator = torch.Generator().manual_seed(seed)
        latents = denoise(self.transformer, self.scheduler, labels, num_inference_steps,
                          guidance_scale, generator, batch_size, progress, solver, seed, guidance_interval, span)
        # Decoded batch by batch, as denoised: a convolution over another batch size may round
        # the last bit otherwise, and a span's images would differ from the whole call's.
        return self.to_images(latents, batch_size)

    def to_images(self, latents: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The denoiser's samples as uint8 images (N, S, S, 3), decoded `batch_size` at a time."""
        return ae.to_uint8(latents) if self.vae is None else ae.decode(self.vae, latents, batch_size)

    def to_model_space(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, S, S, 3) in the space the denoiser works in: their latents, or
        themselves in [-1, 1] when there is no autoencoder."""
        return ae.to_model_range(images) if self.vae is None else ae.encode(self.vae, images)

