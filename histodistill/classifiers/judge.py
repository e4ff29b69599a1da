"""The real-trained ConvNet as a cached stage: trained on the real train split with its epoch
chosen on val (`training.train_judge`). Notebook 03 judges the pool with it, notebook 04 embeds
the pool with its features, notebook 07 calibrates the privacy filter's features with it.

    >>> artifact = judge.fit_classifier(presets.stage_config("classifier", "demo"), bundle)
    >>> model = judge.load_classifier(artifact)
"""

from __future__ import annotations

from pathlib import Path

from .. import cache
from ..data.dataset import DataBundle
from . import convnet, training
from .config import ClassifierConfig

VERSION = 4  # bump when the files this stage writes change meaning: a new key, so a rebuild


def fit_classifier(cfg: ClassifierConfig, bundle: DataBundle, progress: bool = True,
                   cache_root: Path | None = None) -> cache.Artifact:
    """The ConvNet trained on the real train split, selected on val (`training.train_judge`):
    ``classifier/`` (safetensors) and ``history.csv`` (one row per epoch)."""

    def build(folder: Path) -> None:
        train, val = bundle.splits["train"], bundle.splits["val"]
        model, history = training.train_judge(
            train.images, train.labels, val.images, val.labels, bundle.n_classes, cfg, progress
        )
        convnet.save_classifier(model.cpu(), folder / "classifier")
        history.to_csv(folder / "history.csv", index=False)

    return cache.cached("classifier", cfg, build, {"data": bundle.artifact.key}, VERSION, cache_root)


def load_classifier(artifact: cache.Artifact) -> convnet.ConvNet:
    return convnet.load_classifier(artifact.file("classifier"))
