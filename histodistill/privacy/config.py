"""The privacy audit's configuration (notebook 07): its controls, attacks and bootstrap; each
profile's values are in `presets.py`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PrivacyConfig:
    """The privacy audit of notebook 07 (`privacy/audit.py`, `privacy/measures.py`): members are the real train
    split, non-members the real val split."""

    planted_noise: float = 2.0  # std (0..255 units) of the noise on the planted train copies (the control)
    neighbours: int = 50  # train images whose mean distance scales a near-copy's (Carlini et al. 2023)
    near_copy_threshold: float = 1 / 3  # Carlini et al.'s fixed near-copy ratio, reported beside the calibrated test
    near_copy_quantile: float = 0.01  # calibrated test: under this quantile of unseen real images' ratios, per class
    cells: int = 5  # k-means cells of the data-copying test C_T (Meehan et al. 2020)
    reference_models: int = 4  # classifiers on random pool subsets calibrating the reference-model attack
    selection_images: int = 500  # pool images the audit's classifiers choose their checkpoint on (not val)
    max_members: int = 10000  # train images the membership attacks score (a seeded subset when there are more)
    # Low noise levels: memorisation shows where little noise is added (on the demo the
    # control denoiser was caught at t = 50 and 100, not at 200 or 400).
    timesteps: tuple[int, ...] = (20, 50, 100)  # noise levels of the generator's membership attack
    draws: int = 4  # noise draws averaged per image and timestep
    control_per_class: int = 2  # train images per class the control denoiser is overtrained on
    # At 1500 steps the control was not caught, at 4 per class nor at 2 (demo: AUC 0.61 [0.47, 0.73]
    # at t = 20, against 0.71 [0.60, 0.80] at 3000).
    control_steps: int = 3000  # its training steps
    control_hidden_size: int = 64  # its width
    control_depth: int = 3  # its blocks (odd)
    n_boot: int = 2000  # bootstrap resamples of each attack's AUC interval
    seed: int = 0  # seed of subsets, noise, features and bootstraps

    def __post_init__(self) -> None:
        if self.reference_models < 2:
            raise ValueError("reference_models must be at least 2 (the reference attack fits a spread)")
        if not self.timesteps or min(self.timesteps) < 0:
            raise ValueError("timesteps must be a non-empty tuple of diffusion timesteps >= 0")
        if min(self.neighbours, self.cells, self.draws, self.control_per_class, self.control_steps,
               self.control_hidden_size, self.selection_images, self.max_members, self.n_boot) < 1:
            raise ValueError("neighbours, cells, draws, control_*, selection_images, max_members and n_boot "
                             "must be positive")
        if self.control_depth % 2 == 0:
            raise ValueError("control_depth must be odd")
        if not 0 < self.near_copy_threshold < 1 or not 0 < self.near_copy_quantile < 1 or self.planted_noise < 0:
            raise ValueError("near_copy_threshold and near_copy_quantile must lie in (0, 1) and planted_noise be >= 0")
