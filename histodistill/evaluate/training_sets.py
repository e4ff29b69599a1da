"""What a downstream model trains on (notebooks 05-07): the full real train split, a random real
subset, a selection from the synthetic pool, or Distribution Matching's learnt images, each a
`TrainingSet` whose key names what produced its images (so a model's cache key follows them).
Distribution Matching runs here as a cached stage (``dm``); its algorithm is `dm`.

    >>> real = training_sets.random_real(bundle, ipc=10, seed=0)
    >>> dm_set = training_sets.from_dm(training_sets.fit_dm(dm_cfg, bundle, ipc=10))
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cache
from .. import workers as workers_mod
from ..classifiers import convnet
from ..classifiers.augmentation import DSA
from ..data.dataset import DataBundle
from ..data.own_data import write_npz
from ..generate import stages
from ..select import distill
from . import dm
from .config import DMConfig

DM_VERSION = 4  # bump when the files the DM stage writes change meaning: a new key, so a rebuild


DM_PAPER_ITERATIONS = 20000  # the DM paper's headline runs (Zhao & Bilen 2023), from real images


DM_CHECKPOINT_EVERY = 500  # DM iterations between checkpoints: a killed run loses at most these


def dm_row(cfg: DMConfig) -> str:
    """The DM row's name: it says so when the run is shorter than the DM paper's."""
    if cfg.iterations >= DM_PAPER_ITERATIONS:
        return "Distribution Matching"
    return f"Distribution Matching ({cfg.iterations:,} of the paper's {DM_PAPER_ITERATIONS:,} iterations)"


@dataclass(frozen=True)
class TrainingSet:
    """Images a downstream model trains on, and `key`: the identity of what produced them."""

    images: np.ndarray  # uint8 (N, S, S, C)
    labels: np.ndarray  # (N,) class ids
    key: str

    @property
    def ipc(self) -> int:
        """Images of the largest class (a distilled set has the same number in every class)."""
        return int(np.bincount(self.labels).max())


def full_real(bundle: DataBundle) -> TrainingSet:
    train = bundle.splits["train"]
    return TrainingSet(train.images, train.labels, cache.digest({"real_train": bundle.artifact.key}))


def random_real(bundle: DataBundle, ipc: int, seed: int) -> TrainingSet:
    """`ipc` random real train images per class (all of a class that has fewer)."""
    train = bundle.splits["train"]
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(train.labels == c))[:ipc] for c in range(bundle.n_classes)]
    idx = np.sort(np.concatenate(picks))
    key = cache.digest({"random_real": bundle.artifact.key, "ipc": ipc, "seed": seed})
    return TrainingSet(train.images[idx], train.labels[idx], key)


def from_selection(selection: cache.Artifact, pool: cache.Artifact) -> TrainingSet:
    """The images a selection stage picked from its pool."""
    indices, labels, _, _ = distill.load_selection(selection)
    images, _, _ = stages.load_pool(pool)
    return TrainingSet(images[indices], labels.astype(np.int64), selection.key)


def fit_dm(cfg: DMConfig, bundle: DataBundle, ipc: int, progress: bool = True,
           cache_root: Path | None = None) -> cache.Artifact:
    """Distribution Matching on the real train split (cached): ``dm.npz`` holds the learnt
    images as uint8 ``train_images``/``train_labels`` (MedMNIST layout), ``losses.csv`` the
    matching loss per iteration."""
    train = bundle.splits["train"]
    key_cfg = {**dataclasses.asdict(cfg), "ipc": ipc}
    inputs = {"data": bundle.artifact.key}
    work, key = cache.work_dir("dm", key_cfg, inputs, DM_VERSION, cache_root)

    def build(folder: Path) -> None:
        mean, std = convnet.channel_stats(train.images)
        with workers_mod.one_thread_on_cpu():
            images, labels, losses = dm.distribution_matching(
                train.images, train.labels, bundle.n_classes, ipc, cfg.iterations, lr_img=cfg.lr_img,
                batch_real=cfg.batch_real, seed=cfg.seed, embed_width=cfg.embed_width, init=cfg.init,
                dsa=DSA(shared=True).augment if cfg.dsa else None, progress=progress, mean=mean, std=std,
                return_losses=True, work_dir=work, checkpoint_every=DM_CHECKPOINT_EVERY, config_hash=key)
        write_npz(folder / "dm.npz", dm.to_uint8(images, mean, std), labels.numpy(), bundle.class_names)
        pd.DataFrame({"iteration": np.arange(1, len(losses) + 1), "loss": losses}).to_csv(
            folder / "losses.csv", index=False)

    artifact = cache.cached("dm", key_cfg, build, inputs, DM_VERSION, cache_root)
    shutil.rmtree(work, ignore_errors=True)  # the result is complete: its checkpoints served
    return artifact


def _dm_name(cfg: DMConfig, bundle: DataBundle, ipc: int, cache_root: Path | None) -> tuple[str, str]:
    key = cache.stage_key("dm", {**dataclasses.asdict(cfg), "ipc": ipc}, {"data": bundle.artifact.key}, DM_VERSION)
    return str(cache_root), key


def queue_dm_runs(cfgs: list[DMConfig], bundle: DataBundle, ipc: int, progress: bool = True,
                  cache_root: Path | None = None, workers: int | None = None) -> int:
    """Start the DM runs of `cfgs` that are neither cached nor queued in the model workers
    (one thread each, as every DM run, `workers` at once) and return at once: how many were
    queued. `fit_dm_runs` waits for them. Where they would run here, nothing is queued."""
    pending = [cfg for cfg in cfgs if not workers_mod.is_queued(_dm_name(cfg, bundle, ipc, cache_root))
               and not cache.is_cached("dm", {**dataclasses.asdict(cfg), "ipc": ipc}, {"data": bundle.artifact.key},
                                       DM_VERSION, cache_root)]
    n = workers_mod.count(len(pending), sum(cfg.iterations for cfg in pending), workers)
    if n == 1:
        return 0
    if progress:
        print(f"[dm] {len(pending)} runs in {n} worker processes")
    for cfg in pending:
        workers_mod.start(_dm_name(cfg, bundle, ipc, cache_root), n, fit_dm, cfg, bundle, ipc, False, cache_root)
    return len(pending)


def fit_dm_runs(cfgs: list[DMConfig], bundle: DataBundle, ipc: int, progress: bool = True,
                cache_root: Path | None = None, workers: int | None = None) -> list[cache.Artifact]:
    """`fit_dm` for each configuration; on CPU those not cached yet run side by side in the
    model workers (`queue_dm_runs`, which may have started them earlier)."""
    queue_dm_runs(cfgs, bundle, ipc, progress, cache_root, workers)
    workers_mod.finish([_dm_name(cfg, bundle, ipc, cache_root) for cfg in cfgs])
    return [fit_dm(cfg, bundle, ipc, progress, cache_root) for cfg in cfgs]


def from_dm(artifact: cache.Artifact) -> TrainingSet:
    with np.load(artifact.file("dm.npz"), allow_pickle=False) as z:
        return TrainingSet(z["train_images"], z["train_labels"].ravel().astype(np.int64), artifact.key)
