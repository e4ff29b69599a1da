"""Downstream evaluation: train classifiers on each training set and test them once (the
tables they make: `tables`).

    >>> jobs, dm_stage = evaluation.main_jobs(up, down_cfg, eval_cfg, dm_cfg)   # rows x networks x seeds
    >>> runs = evaluation.run_jobs(jobs, up.bundle)                     # one row per trained model

Every trained model is a cached stage (``model``) keyed by its `DownstreamConfig` (network,
seed, steps, ...), the identity of its training images and the data splits, so a row
shared by notebook 05 and an ablation in 06 trains once, and a changed parameter retrains
only the models it touches. A model's stage keeps its test metrics, its test-set class
probabilities (for confusion matrices) and its val history; the weights are not kept.

Rows of the main table, each run `seeds` times (run i: training seed `seed + i`, and every
other seed of the row moved by i too, see `main_jobs`):

- the full real train set, and a random real subset at the selection's IPC (a new subset
  per run, so the spread includes the choice of images);
- random and k-means selections from the synthetic pool (a new subset / k-means seed per run);
- InfoDist with cross-entropy only, and with the contrastive term (Infomap seed per run;
  run 0 is notebook 04's selection);
- Distribution Matching distilled from the real train set at the same IPC, from real images
  as the DM paper's headline runs (a DM seed per run; the row's name says when it ran fewer
  iterations than the paper's 20,000).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cache, paths
from .. import workers as workers_mod
from ..classifiers import convnet, metrics, training
from ..classifiers.config import DownstreamConfig
from .config import DMConfig, EvaluationConfig
from ..data.dataset import DataBundle
from ..generate import memorisation
from ..progress import tqdm
from . import training_sets
from .training_sets import TrainingSet

# Bump a stage's version when its code changes what it writes: a new key, so a rebuild.
VERSIONS = {"model": 5}


MAIN_ROWS = (
    "Full real train set",
    "Random real",
    "Random synthetic",
    "k-means synthetic",
    "InfoDist (CE)",
    "InfoDist (CE + contrastive)",
    "Distribution Matching",
)
REAL_ROWS = ("Full real train set", "Random real")  # references, not shareable data


@dataclass(frozen=True)
class Job:
    """One model to train: a table row, its training set and its recipe."""

    row: str
    train_set: TrainingSet
    cfg: DownstreamConfig
    variant: str = ""  # an ablation's variant label (empty in the main table)


# --- one model -----------------------------------------------------------------------------


def _model_inputs(train_set: TrainingSet, bundle: DataBundle) -> dict[str, str]:
    return {"train_set": train_set.key, "data": bundle.artifact.key}


def train_model(cfg: DownstreamConfig, train_set: TrainingSet, bundle: DataBundle, progress: bool = False,
                cache_root: Path | None = None, log=print) -> cache.Artifact:
    """Train `cfg.network` on `train_set`, keep the EMA weights of the best val evaluation,
    and evaluate them once on test (cached): ``result.json`` (test ACC/AUC/macro F1, per-class
    values, best step), ``test_probs.npy`` and ``history.csv`` (val metrics per evaluation)."""

    def build(folder: Path) -> None:
        val, test = bundle.splits["val"], bundle.splits["test"]
        # One thread, as in `train_together`'s workers: the same key, the same weights.
        with workers_mod.one_thread_on_cpu():
            model, history = training.train_on_set(train_set.images, train_set.labels, val.images, val.labels,
                                                   bundle.n_classes, cfg, progress=progress)
        probs = convnet.predict(model, test.images)
        scores = metrics.evaluate(test.labels, probs)
        best = history.loc[history["val_auc"].fillna(history["val_acc"]).idxmax()]
        scores.update(n_train=int(len(train_set.labels)), best_step=int(best["step"]),
                      best_val_auc=float(best["val_auc"]))
        cache.write_json_atomic(folder / "result.json", scores)
        np.save(folder / "test_probs.npy", probs.astype(np.float32))
        history.to_csv(folder / "history.csv", index=False)

    return cache.cached("model", cfg, build, _model_inputs(train_set, bundle), VERSIONS["model"], cache_root, log=log)


def load_result(artifact: cache.Artifact) -> dict:
    return json.loads(artifact.file("result.json").read_text())


def test_probabilities(artifact: cache.Artifact) -> np.ndarray:
    return np.load(artifact.file("test_probs.npy"), allow_pickle=False)


def _uncached(jobs: list[Job], bundle: DataBundle, cache_root: Path | None) -> tuple[list, list[tuple[str, str]]]:
    """(name, job) of each model of `jobs` neither cached nor queued in the workers, each
    once and costliest first, and the names of those queued; a name is (cache root, key)."""
    pending, queued, seen = [], [], set()
    for job in jobs:
        inputs = _model_inputs(job.train_set, bundle)
        name = (str(cache_root), cache.stage_key("model", job.cfg, inputs, VERSIONS["model"]))
        if name in seen:
            continue
        seen.add(name)
        if workers_mod.is_queued(name):
            queued.append(name)
        elif not cache.is_cached("model", job.cfg, inputs, VERSIONS["model"], cache_root):
            pending.append((name, job))
    # Longest first: with the costly models (the full real set, two-view SupCon, IPC 50) at the
    # end of the queue, one worker would train the last of them while the other sat idle.
    pending.sort(key=lambda item: _relative_cost(item[1]), reverse=True)
    return pending, queued


def _workers_for(pending: list, workers: int | None) -> int:
    return workers_mod.count(len(pending), sum(job.cfg.steps for _, job in pending), workers)


def _start(pending: list, bundle: DataBundle, cache_root: Path | None, n: int) -> None:
    for name, job in pending:
        workers_mod.start(name, n, train_model, job.cfg, job.train_set, bundle, cache_root=cache_root, log=_quiet)


def queue(jobs: list[Job], bundle: DataBundle, cache_root: Path | None = None, workers: int | None = None) -> int:
    """Start training the models of `jobs` that are neither cached nor queued in the worker
    processes and return at once: how many were queued. A later `run_jobs` or
    `train_together` over them waits for them, so this process can prepare the next
    training sets (selections, pools) while the workers train. Where the models would train
    here (one worker: a single GPU, or too little work to start them), nothing is queued."""
    pending, _ = _uncached(jobs, bundle, cache_root)
    n = _workers_for(pending, workers)
    if n == 1:
        return 0
    _start(pending, bundle, cache_root, n)
    return len(pending)


def train_together(jobs: list[Job], bundle: DataBundle, desc: str = "models", progress: bool = True,
                   cache_root: Path | None = None, workers: int | None = None) -> int:
    """Train the models of `jobs` that are not cached yet, each on one thread, `workers` at
    once in worker processes on a CPU (None: `workers.count`'s choice), and wait for those
    `queue` started; the models are the same whatever the number. Returns how many were
    trained or waited for."""
    pending, queued = _uncached(jobs, bundle, cache_root)
    total = len(pending) + len(queued)
    bar = tqdm(total=total, desc=desc, unit="model", disable=not progress or not total)
    n = _workers_for(pending, workers)
    if n == 1:
        for _, job in pending:
            bar.set_postfix_str(f"{job.cfg.network}, {len(job.train_set.labels)} images")
            train_model(job.cfg, job.train_set, bundle, cache_root=cache_root, log=lambda message: None)
            bar.update(1)
    else:
        _start(pending, bundle, cache_root, n)
        queued += [name for name, _ in pending]
    workers_mod.finish(queued, on_done=lambda: bar.update(1))
    bar.close()
    return total


def _quiet(message: str) -> None:
    """A worker's log: the bar says what is done (a module-level function, so it pickles)."""


def _relative_cost(job: Job) -> float:
    """A model's training cost in rough units, only to order the queue: steps x images per
    step (x 2 for SupCon's two views, x 4 for ResNet-18, which trains at 4-5x the ConvNet's
    time at the demo's widths)."""
    cfg = job.cfg
    per_step = min(cfg.batch_size, len(job.train_set.labels)) * (2 if cfg.contrastive == "supcon" else 1)
    return cfg.steps * per_step * (4 if cfg.network == "resnet18" else 1)


def run_jobs(jobs: list[Job], bundle: DataBundle, desc: str = "models", progress: bool = True,
             cache_root: Path | None = None) -> pd.DataFrame:
    """Train (or read from the cache) every job's model, side by side (`train_together`);
    one row per model: row, variant, network, seed, ipc, n_train, test
    acc/auc/macro_f1, best step, the val AUC it was chosen on, the model's cache key."""
    trained = train_together(jobs, bundle, desc, progress, cache_root)
    records = []
    for job in jobs:
        artifact = train_model(job.cfg, job.train_set, bundle, cache_root=cache_root, log=lambda message: None)
        result = load_result(artifact)
        records.append({
            "row": job.row, "variant": job.variant, "network": job.cfg.network, "seed": job.cfg.seed,
            "ipc": job.train_set.ipc, "n_train": result["n_train"], "acc": result["acc"], "auc": result["auc"],
            "macro_f1": result["macro_f1"], "best_step": result["best_step"], "val_auc": result["best_val_auc"],
            "model_key": artifact.key,
        })
    if progress:
        print(f"{len(jobs)} models: {trained} trained now, {len(jobs) - trained} read from the cache")
    return pd.DataFrame(records)


def model_artifact(key: str, cache_root: Path | None = None) -> cache.Artifact:
    """A trained model's stage folder from its key (as `run_jobs` reports it)."""
    return cache.Artifact("model", key, (cache_root or paths.cache_dir()) / "model" / key[: cache.KEY_CHARS])


# --- the main table ------------------------------------------------------------------------


def seeds(cfg: DownstreamConfig, n: int) -> list[int]:
    return [cfg.seed + i for i in range(n)]


def main_jobs(up, down: DownstreamConfig, ev: EvaluationConfig, dm_cfg: DMConfig,
              progress: bool = True) -> tuple[list[Job], list[cache.Artifact]]:
    """Every model of the main table (rows x networks x runs), and the DM stages (one per
    run, built here if not cached). `up` is the run's `run_record.Upstream`.

    Every source of randomness varies with the run: run i trains at seed `down.seed + i`
    and draws its subsets, its Infomap and k-means seeds (`selection seed + i`) and its DM
    images (`dm seed + i`) anew; run 0 is notebook 04's selection. The pool itself stays
    the one notebook 03 sampled. Run i of every row starts from the same network weights
    and, where the sets have equal size, sees the same batch order, so rows compare pairwise."""
    ipc = up.selection_cfg.ipc
    select_seed = up.selection_cfg.seed
    ce = dataclasses.replace(down, contrastive="none")
    with_term = dataclasses.replace(down, contrastive=ev.contrastive)
    dm_cfgs = [dataclasses.replace(dm_cfg, seed=dm_cfg.seed + i) for i in range(ev.seeds)]
    # The DM runs go to the workers first and the other models queue behind them, so no worker
    # idles while the last DM run ends; the DM rows' models are added once their sets exist.
    training_sets.queue_dm_runs(dm_cfgs, up.bundle, ipc, progress)
    jobs: list = []
    for network in ev.networks:
        for i, seed in enumerate(seeds(down, ev.seeds)):
            def job(row, train_set, cfg=ce, **changes):
                jobs.append(Job(row, train_set, dataclasses.replace(cfg, network=network, seed=seed, **changes)))

            def selected(method):
                return training_sets.from_selection(up.select(method=method, seed=select_seed + i), up.pool)

            infodist = selected("infodist")
            job("Full real train set", training_sets.full_real(up.bundle))
            job("Random real", training_sets.random_real(up.bundle, ipc, select_seed + i))
            job("Random synthetic", selected("random"))
            job("k-means synthetic", selected("kmeans"))
            job("InfoDist (CE)", infodist)
            job("InfoDist (CE + contrastive)", infodist, with_term)
            jobs.append((i, dataclasses.replace(ce, network=network, seed=seed)))  # the DM row, below
    queue([j for j in jobs if isinstance(j, Job)], up.bundle)
    dm_artifacts = training_sets.fit_dm_runs(dm_cfgs, up.bundle, ipc, progress)
    dm_row = training_sets.dm_row(dm_cfg)
    jobs = [j if isinstance(j, Job) else Job(dm_row, training_sets.from_dm(dm_artifacts[j[0]]), j[1]) for j in jobs]
    return jobs, dm_artifacts


def copy_check(sets: dict[str, TrainingSet], bundle: DataBundle, classifier: convnet.ConvNet) -> pd.DataFrame:
    """How close each training set's images lie to the real train images, against how close
    unseen real val images lie (`memorisation.memorisation`, in the real-trained ConvNet's
    feature space and in pixels): one line per set and space. A shareable set should have
    no image at or below val's 1st percentile."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    train_feats, val_feats = convnet.embed(classifier, train.images), convnet.embed(classifier, val.images)
    reference = memorisation.val_to_train(train_feats, val_feats, train.images, val.images)  # once for every set
    frames = []
    for name, train_set in sets.items():
        result = memorisation.memorisation(convnet.embed(classifier, train_set.images), train_feats, val_feats,
                                      train_set.images, train.images, val.images, val_distances=reference)
        frames.append(memorisation.memorisation_summary(result, train_set.labels, bundle.class_names).assign(set=name))
    table = pd.concat(frames, ignore_index=True).rename(
        columns={"n_pool": "n_images", "median_pool_distance": "median_distance"})
    return table.set_index(["set", "space"])
