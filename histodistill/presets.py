"""Each profile's presets: the value of every stage's configuration, in one place.

A profile is a named set of presets, one per stage:

- ``smoke``: tiny everything, for CI; the whole pipeline runs in minutes on 2 cores.
- ``demo``:  the bundled 1000 real PathMNIST images on a CPU; honest but small.
- ``paper``: full PathMNIST through medmnist at paper scale, meant for a GPU box.
- ``rehearsal``: the paper profile on a stand-in file of PathMNIST's exact sizes (not data;
  `data/rehearsal.py`) with every step, epoch and iteration count cut and nothing else
  changed: what full size costs and breaks, on a CPU, without the download.

A notebook's ``parameters`` cell names a profile and may override any field
(`parameters.configure`); ``None`` there means "the profile's value" (`stage_config`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .classifiers.config import ClassifierConfig, DownstreamConfig

from .data.config import DataConfig

from .evaluate.config import AblationConfig, DMConfig, EvaluationConfig

from .generate.config import AutoencoderConfig, DiffusionConfig, GuidanceSweepConfig, SamplingConfig

from .privacy.config import PrivacyConfig

from .select.config import SelectionConfig

PROFILES = ("smoke", "demo", "paper", "rehearsal")

STAGES: dict[str, type] = {
    "data": DataConfig,
    "classifier": ClassifierConfig,
    "autoencoder": AutoencoderConfig,
    "diffusion": DiffusionConfig,
    "sampling": SamplingConfig,
    "guidance_sweep": GuidanceSweepConfig,
    "selection": SelectionConfig,
    "downstream": DownstreamConfig,
    "evaluation": EvaluationConfig,
    "dm": DMConfig,
    "ablation": AblationConfig,
    "privacy": PrivacyConfig,
}

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": DataConfig(max_train_per_class=20),
        "classifier": ClassifierConfig(width=16, epochs=2),
        "autoencoder": AutoencoderConfig(block_out_channels=(8, 16), steps=20),
        "diffusion": DiffusionConfig(hidden_size=32, depth=3, steps=20, batch_size=32, warmup_steps=5, checkpoint_every=10),
        "sampling": SamplingConfig(per_class=4, steps=5, batch_size=64),
        "guidance_sweep": GuidanceSweepConfig(scales=(1.0, 3.0), per_class=3),
        "selection": SelectionConfig(ipc=2, k=3),
        "downstream": DownstreamConfig(width_scale=0.125, steps=4, lr=0.03, warmup_fraction=0.2, eval_every=2),
        "evaluation": EvaluationConfig(seeds=2, budget_steps=(2, 4), budget_seeds=1),
        "dm": DMConfig(iterations=3, batch_real=16, embed_width=16),
        "ablation": AblationConfig(seeds=1, contrastive_weights=(0.1,), ipcs=(1, 2, 4), pool_sizes=(2, 4),
                                   guidance_scales=(2.0, 4.0), guidance_per_class=4),
        "privacy": PrivacyConfig(neighbours=10, cells=2, reference_models=2, selection_images=36, timesteps=(100, 400),
                                 draws=1, control_per_class=2, control_steps=30, control_hidden_size=32,
                                 n_boot=200, max_members=100),  # a member sample of 180 train images
    },
    "demo": {
        "data": DataConfig(),
        "classifier": ClassifierConfig(),
        # The demo's generator trains for over an hour on 2 CPU cores, so the package ships
        # it (`shipped=True`: `python -m histodistill.generate.ship build --profile demo` made it)
        # and notebook 02 loads it when these fields are unchanged; any change trains anew.
        # One autoencoder level plus the Laplacian loss keep the tissue's fine texture.
        "autoencoder": AutoencoderConfig(block_out_channels=(32,), steps=1200, edge_weight=1.0, shipped=True),
        "diffusion": DiffusionConfig(hidden_size=128, patch_size=4, steps=16000, lr=1e-3, warmup_steps=200,
                                     ema_decay=0.9995, prediction_type="v_prediction", snr_gamma=5.0,
                                     shipped=True),
        # The sampler the val rule picks in notebook 03 (guidance_sweep.csv, 03_guidance_sweep.png).
        "sampling": SamplingConfig(steps=20, guidance_scale=2.0, solver="sde-dpmsolver++"),
        "guidance_sweep": GuidanceSweepConfig(),
        "selection": SelectionConfig(ipc=10),
        # Networks at 1/8 width (ConvNet 16, ResNet-18 8..64) at a higher peak rate, both chosen
        # on val (bench/results/downstream_lr.csv); 600 steps is the budget the val rule picks
        # (training_budget.csv, 05_training_budget.png).
        "downstream": DownstreamConfig(width_scale=0.125, steps=600, lr=0.1, warmup_fraction=0.2, eval_every=20),
        # ConvNet only: converged ResNet-18 runs cost ~48 s each on 2 cores, ~30 min for its
        # 35 models; `networks=("convnet", "resnet18")` adds it (the paper profile has both).
        "evaluation": EvaluationConfig(networks=("convnet",)),
        "dm": DMConfig(iterations=200, batch_real=64, embed_width=32),
        # A smaller grid than the defaults, for time: one contrastive weight, IPC up to 50,
        # three pool sizes, three guidance scales on pools of 30 per class.
        "ablation": AblationConfig(contrastive_weights=(0.1,), ipcs=(1, 10, 50), pool_sizes=(50, 100, 200),
                                   guidance_scales=(1.0, 2.0, 4.0), guidance_per_class=30),
        # Two reference models (each a 600-step ConvNet) keep the audit to a few minutes on 2 cores.
        "privacy": PrivacyConfig(reference_models=2),
    },
    "paper": {
        "data": DataConfig(source="pathmnist", size=28),
        "classifier": ClassifierConfig(epochs=50),
        "autoencoder": AutoencoderConfig(block_out_channels=(64, 128), steps=20000, batch_size=256),
        "diffusion": DiffusionConfig(hidden_size=512, depth=13, num_heads=8, steps=200000, batch_size=256, lr=2e-4, warmup_steps=5000, ema_decay=0.9999, checkpoint_every=5000, augment=False),
        "sampling": SamplingConfig(per_class=1000, steps=50),
        "guidance_sweep": GuidanceSweepConfig(per_class=200),
        "selection": SelectionConfig(ipc=100),
        # The paper's 1000 epochs of an IPC-100 set (900 images at batch 256) are 4000 steps.
        "downstream": DownstreamConfig(steps=4000, lr=1e-3, warmup_fraction=0.5, eval_every=100),
        "evaluation": EvaluationConfig(budget_steps=(1000, 2000, 4000, 8000)),
        "dm": DMConfig(),
        "ablation": AblationConfig(seeds=5, pool_sizes=(100, 250, 500, 1000), guidance_per_class=500),
        "privacy": PrivacyConfig(reference_models=8, selection_images=2000),
    },
}


# The rehearsal profile: the paper's presets (data sizes, pool, IPC, widths, batch sizes) on
# the stand-in file, with the counts cut so that every stage runs on a CPU in minutes and shows
# what its size costs: steps, epochs and iterations; the small pools that only choose or
# compare (the main pool keeps its 1000 per class); the runs per row and variant (the smoke
# profile's: each still runs once at full size); the members the attacks score.
REHEARSAL_CUTS: dict[str, dict[str, Any]] = {
    "data": {"source": "rehearsal"},
    "classifier": {"epochs": 1},
    "autoencoder": {"steps": 10},
    "diffusion": {"steps": 10, "warmup_steps": 2, "checkpoint_every": 5},
    "sampling": {"steps": 1},
    "guidance_sweep": {"per_class": 20},
    "selection": {},
    "downstream": {"steps": 4, "eval_every": 4},
    "evaluation": {"budget_steps": (2, 4), "seeds": 2, "budget_seeds": 1},
    "dm": {"iterations": 2},
    "ablation": {"guidance_per_class": 200, "seeds": 1},
    "privacy": {"control_steps": 10, "reference_models": 2, "draws": 1, "max_members": 2000},
}
PRESETS["rehearsal"] = {stage: dataclasses.replace(cfg, **REHEARSAL_CUTS[stage])
                        for stage, cfg in PRESETS["paper"].items()}


def stage_config(stage: str, profile: str, **overrides: Any):
    """The configuration of `stage` under `profile`, with non-None `overrides` applied.

    >>> stage_config("data", "demo", size=64).size
    64
    """
    if profile not in PRESETS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {sorted(STAGES)}")
    preset = PRESETS[profile][stage]
    valid = {f.name for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"{stage} configuration has no field(s) {unknown}; valid fields: {sorted(valid)}"
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(preset, **changes)
