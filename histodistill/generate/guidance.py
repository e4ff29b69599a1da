"""Choosing the sampler (guidance scale and solver) without test data.

Classifier-free guidance trades diversity and texture for class identity: too little and
the pool mixes classes, too much and every image flattens into its class's mean. The SDE
form of DPM-Solver++ adds fresh noise at every step, which moves that trade-off. Both are
chosen on real **val** and on the pool itself, never on test data: for each scale and
solver of a sweep, a small pool is sampled (a cached pool stage) and scored by the
real-trained judge ConvNet against real val (class consistency, Fréchet distance with its
real-train floor, precision/recall), by its texture against real train, and by the copy
check.

    >>> sweep = guidance.sweep(ldm_artifact, sweep_cfg, classifier, bundle, sampling_steps=20)
    >>> guidance.choose(sweep)   # (solver, scale) by the rule below, on val and pool only

The rule (`choose`): among the settings whose pool class consistency (mean over classes)
reaches the judge's own real-val accuracy (likewise), the one with the smallest Fréchet
distance to real val; when none reaches it, the most class-consistent one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .. import cache
from ..classifiers import convnet
from .config import GuidanceSweepConfig, SamplingConfig
from ..data.dataset import DataBundle
from . import memorisation, quality, stages

SWEEP_COLUMNS = ["solver", "guidance_scale", "judge_val_accuracy", "consistency_mean", "consistency_min", "texture_ratio_min",
                 "texture_ratio_max", "fd_pool_vs_val", "fd_train_vs_val", "fd_ratio", "precision", "recall",
                 "precision_train", "recall_train", "memorised_pixels", "memorised_features", "n_pool"]


def judge_features(classifier: convnet.ConvNet, bundle: DataBundle) -> dict:
    """What every pool of a sweep is scored against, computed once per sweep: the judge's
    embeddings of real train and real val, and (``"val_to_train"``) each val image's
    distance to its nearest train image in features and pixels, the copy check's reference."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    feats = {split: convnet.embed(classifier, bundle.splits[split].images) for split in ("train", "val")}
    feats["val_to_train"] = memorisation.val_to_train(feats["train"], feats["val"], train.images, val.images)
    return feats


def pool_scores(pool_images: np.ndarray, pool_labels: np.ndarray, classifier: convnet.ConvNet,
                bundle: DataBundle, real_features: dict[str, np.ndarray] | None = None) -> dict:
    """One pool's summary: class consistency (mean and worst class) with the judge's own
    val accuracy, texture ratio range over classes (pool / real train), Fréchet distance to
    real val next to real train's (at the same size per class) and their ratio,
    precision/recall with real train's at the same size, and how many pool images sit
    closer to a train image than val's 1st percentile (pixels, features).

    `real_features` ({"train": ..., "val": ...}, the judge's embeddings) saves recomputing
    them across a sweep."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    names = bundle.class_names
    if real_features is None:
        real_features = judge_features(classifier, bundle)
    pool_pred = convnet.predict(classifier, pool_images).argmax(1)
    val_pred = convnet.predict(classifier, val.images).argmax(1)
    consistency, _ = quality.class_consistency(pool_pred, pool_labels, val_pred, val.labels, names)
    per_class = consistency.iloc[: len(names)]
    texture = quality.texture_table(pool_images, pool_labels, train.images, train.labels, names).iloc[: len(names)]
    pool_feats = convnet.embed(classifier, pool_images)
    fidelity = quality.quality_table(real_features["train"], train.labels, real_features["val"], val.labels,
                                     pool_feats, pool_labels, names)
    overall = fidelity.set_index("class").loc["all"]
    mem = memorisation.memorisation(pool_feats, real_features["train"], real_features["val"],
                               pool_images, train.images, val.images, val_distances=real_features.get("val_to_train"))
    return {
        # Both means over classes (unweighted), as in pool_class_consistency.csv.
        "judge_val_accuracy": float(per_class["val_accuracy"].mean()),
        "consistency_mean": float(per_class["pool_accuracy"].mean()),
        "consistency_min": float(per_class["pool_accuracy"].min()),
        "texture_ratio_min": float(texture["texture_ratio"].min()),
        "texture_ratio_max": float(texture["texture_ratio"].max()),
        "fd_pool_vs_val": float(overall["fd_pool_vs_val"]),
        "fd_train_vs_val": float(overall["fd_train_vs_val"]),
        "fd_ratio": float(overall["fd_pool_vs_val"] / overall["fd_train_vs_val"]),
        "precision": float(overall["precision_pool"]),
        "recall": float(overall["recall_pool"]),
        "precision_train": float(overall["precision_train"]),  # the floor, at the same size
        "recall_train": float(overall["recall_train"]),
        "memorised_pixels": int(mem["pixels"]["n_below"]),
        "memorised_features": int(mem["features"]["n_below"]),
        "n_pool": int(len(pool_images)),
    }


def sweep(diffusion: cache.Artifact, cfg: GuidanceSweepConfig, classifier: convnet.ConvNet,
          bundle: DataBundle, sampling_steps: int, progress: bool = True, processes: int = 1,
          real_features: dict | None = None) -> pd.DataFrame:
    """Score a small pool per solver and guidance scale (each a cached pool stage, sampled
    on `processes` processes); one row per pair, solvers in the order given.
    `real_features` (`judge_features`, None: computed here) can be shared with the main
    pool's scoring."""
    real_features = real_features or judge_features(classifier, bundle)
    rows = []
    for solver in cfg.solvers:
        for scale in cfg.scales:
            pool_cfg = SamplingConfig(per_class=cfg.per_class, steps=sampling_steps, guidance_scale=float(scale),
                                      seed=cfg.seed, solver=solver)
            images, labels, _ = stages.load_pool(stages.sample_pool(pool_cfg, diffusion, progress, processes=processes))
            scores = pool_scores(images, labels, classifier, bundle, real_features)
            rows.append({"solver": solver, "guidance_scale": float(scale), **scores})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def choose(sweep_table: pd.DataFrame) -> tuple[str, float]:
    """(solver, guidance scale) the rule picks (see the module's docstring); the judge's
    real-val accuracy (mean over classes) is the sweep's ``judge_val_accuracy`` column.
    Ties go to the lower scale, then to the sweep's first solver."""
    if sweep_table.empty:
        raise ValueError("the guidance sweep is empty: give at least one scale")
    table = sweep_table.assign(order=range(len(sweep_table)))
    consistent = table[table["consistency_mean"] >= table["judge_val_accuracy"]]
    if len(consistent):
        row = consistent.sort_values(["fd_pool_vs_val", "guidance_scale", "order"]).iloc[0]
    else:
        row = table.sort_values(["consistency_mean", "guidance_scale", "order"], ascending=[False, True, True]).iloc[0]
    return str(row["solver"]), float(row["guidance_scale"])


def follow(chosen: tuple[str, float], sampling: SamplingConfig) -> SamplingConfig:
    """`sampling` with the solver and guidance scale the rule picked on val."""
    solver, scale = chosen
    return dataclasses.replace(sampling, solver=solver, guidance_scale=scale)


def verdict(chosen: tuple[str, float], sampling: SamplingConfig) -> str:
    """One line: does the pool's sampler follow the rule, and if not, what to set."""
    solver, scale = chosen
    if (solver, scale) == (sampling.solver, sampling.guidance_scale):
        return f"the pool's sampler ({solver}, guidance {scale:g}) is the one the rule picks on val"
    return (f"note: the rule picks {solver} at guidance {scale:g} on val here; this pool uses {sampling.solver} at "
            f"{sampling.guidance_scale:g} (the profile's preset or your parameters). Set sampler_from_val=True "
            f"(or solver={solver!r}, guidance_scale={scale:g}) to follow the rule.")
