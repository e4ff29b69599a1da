"""Every stage's configuration, and each profile's presets, in one place.

A stage's configuration is a frozen dataclass: it is hashed into the stage's cache key
(see `cache.py`), so two runs with equal configurations share one result. A profile is
a named set of presets, one per stage:

- ``smoke``: tiny everything, for CI; the whole pipeline runs in minutes on 2 cores.
- ``demo``:  the bundled 1000 real PathMNIST images on a CPU; honest but small.
- ``paper``: full PathMNIST through medmnist at paper scale, meant for a GPU box.

A notebook's ``parameters`` cell names a profile and may override any field; ``None``
there means "the profile's value". An ablation is the same stage with other fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PROFILES = ("smoke", "demo", "paper")

DATA_SOURCES = ("bundled", "pathmnist", "npz", "folder")
# Sizes medmnist serves PathMNIST at; other sizes are resized from the nearest one.
PATHMNIST_SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class DataConfig:
    """Where the real images come from and how they are split and sized."""

    source: str = "bundled"  # bundled | pathmnist | npz | folder
    path: str | None = None  # npz file or class-folder root (own data); data root (pathmnist)
    size: int = 28  # side in pixels every image is resized to
    download: bool = True  # pathmnist: fetch the file from medmnist's servers when missing
    val_fraction: float = 0.15  # share of all images carved out for validation, if none given
    test_fraction: float = 0.25  # share of all images carved out for testing, if none given
    max_train_per_class: int | None = None  # cap on train images per class (None: all)
    seed: int = 0  # seed of every carved split and cap

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data source {self.source!r} is not one of {DATA_SOURCES}")
        if self.source in ("npz", "folder") and not self.path:
            raise ValueError(f"data source {self.source!r} needs `path` (the file or folder)")
        if not 8 <= self.size <= 1024:
            raise ValueError(f"image size {self.size} is outside 8..1024 pixels")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave images for training")
        if self.max_train_per_class is not None and self.max_train_per_class < 1:
            raise ValueError("max_train_per_class must be at least 1 (or None for all)")


STAGES: dict[str, type] = {"data": DataConfig}

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"data": DataConfig(max_train_per_class=20)},
    "demo": {"data": DataConfig()},
    "paper": {"data": DataConfig(source="pathmnist", size=28)},
}


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


def to_dict(cfg) -> dict[str, Any]:
    """A configuration as plain JSON-ready data (what gets hashed and saved)."""
    return dataclasses.asdict(cfg)
