"""Everything a run's earlier notebooks produced, loaded in one call (from the cache).

    >>> up = upstream.load("demo", "demo")        # data, autoencoder, LDM, pool, classifier
    >>> up.select(method="kmeans")                # a selection stage like notebook 04's, changed
    >>> up.pool_subset(50)                        # the first 50 pool images of every class

The configurations come from the run record (`runs.py`); every stage is read from the cache
when its result exists, so loading costs seconds. A stage notebook 04 has not recorded
raises `runs.RunError` naming the notebook to run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache, runs
from .data import dataset
from .generate import stages
from .select import distill
from .config import SamplingConfig, SelectionConfig
from .data.dataset import DataBundle

POOL_SUBSET_VERSION = 1


@dataclass
class Upstream:
    run_name: str
    profile: str
    bundle: DataBundle
    autoencoder: cache.Artifact
    diffusion: cache.Artifact
    sampling_cfg: SamplingConfig
    pool: cache.Artifact
    classifier: cache.Artifact
    selection_cfg: SelectionConfig | None  # None when loaded for notebook 04 itself

    def select(self, pool: cache.Artifact | None = None, **changes) -> cache.Artifact:
        """The selection stage with notebook 04's configuration, `changes` applied, on
        `pool` (default: the run's pool)."""
        cfg = dataclasses.replace(self.selection_cfg, **changes)
        return distill.distill(cfg, pool or self.pool, self.classifier, real_data=self.bundle.meta["source"])

    def sample(self, **changes) -> cache.Artifact:
        """Another pool from the run's diffusion model (e.g. another guidance scale)."""
        return stages.sample_pool(dataclasses.replace(self.sampling_cfg, **changes), self.diffusion)

    def pool_subset(self, per_class: int) -> cache.Artifact:
        return pool_subset(self.pool, per_class)


def load(run_name: str, profile: str, with_selection: bool = True, cache_root: Path | None = None) -> Upstream:
    """The run's stages up to and including notebook 04's selection configuration (up to
    the pool and the classifier with `with_selection` False, as notebook 04 needs)."""
    stages_needed = ["data", "autoencoder", "diffusion", "sampling", "classifier"] + ["selection"] * with_selection
    cfgs = {stage: runs.upstream(run_name, profile, stage) for stage in stages_needed}
    bundle = dataset.prepare_data(cfgs["data"], cache_root)
    vae = stages.fit_autoencoder(cfgs["autoencoder"], bundle, cache_root=cache_root)
    ldm = stages.fit_diffusion(cfgs["diffusion"], vae, bundle, cache_root=cache_root)
    pool = stages.sample_pool(cfgs["sampling"], ldm, cache_root=cache_root)
    clf = stages.fit_classifier(cfgs["classifier"], bundle, cache_root=cache_root)
    return Upstream(run_name, profile, bundle, vae, ldm, cfgs["sampling"], pool, clf, cfgs.get("selection"))


def pool_subset(pool: cache.Artifact, per_class: int, cache_root: Path | None = None) -> cache.Artifact:
    """The first `per_class` images of every class of `pool` (all of a class with fewer),
    written as a pool of its own. Pool images are independent draws, so the first n are a
    random subset, and a smaller subset is contained in every larger one."""

    def build(folder: Path) -> None:
        images, labels, class_names = stages.load_pool(pool)
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(class_names))])
        stages.write_medmnist_npz(folder / stages.POOL_FILE, images[keep], labels[keep], class_names)

    return cache.cached("pool_subset", {"per_class": per_class}, build, {"pool": pool.key}, POOL_SUBSET_VERSION,
                        cache_root)
