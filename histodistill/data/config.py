"""The data stage's configuration (notebook 01); each profile's values are in `presets.py`."""

from __future__ import annotations

from dataclasses import dataclass


# "rehearsal": a stand-in file of full PathMNIST's layout and sizes built from the bundled
# images (`data/rehearsal.py`), written into the cache on first use. Not data.
DATA_SOURCES = ("bundled", "pathmnist", "npz", "folder", "rehearsal")
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
