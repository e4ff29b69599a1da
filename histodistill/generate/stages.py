"""The expensive stages after the data, each a cached function of its configuration and
upstream results (`cache.py`): change a field and only that stage and what follows recompute.

    data ─┬─ autoencoder ── diffusion ── pool
          └─ classifier  (the real-trained ConvNet: judge of the pool, and its embedding)

    >>> vae = stages.fit_autoencoder(ae_cfg, bundle)         # Artifact: vae/, latents, history
    >>> ldm = stages.fit_diffusion(dm_cfg, vae, bundle)      # Artifact: pipeline/ (diffusers)
    >>> pool = stages.sample_pool(sampling_cfg, ldm)         # Artifact: pool.npz (MedMNIST layout)
    >>> clf = judge.fit_classifier(clf_cfg, bundle)         # Artifact: ConvNet weights, history
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file

from . import autoencoder as ae
from . import scale_out, shipped
from .. import cache
from ..classifiers.augmentation import dihedral_views
from .config import AutoencoderConfig, DiffusionConfig, SamplingConfig
from ..data.dataset import DataBundle
from ..data.own_data import write_npz
from .diffusion import Trainer
from .pipeline import ClassConditionalLDMPipeline
from .uvit import UViT

# Bump a stage's version when its code changes what it writes: a new key, so a rebuild.
VERSIONS = {"autoencoder": 1, "diffusion": 1, "pool": 2, "pool_subset": 1}
POOL_FILE = "pool.npz"


# --- autoencoder ------------------------------------------------------------------------


def fit_autoencoder(cfg: AutoencoderConfig, bundle: DataBundle, progress: bool = True,
                    max_steps: int | None = None, cache_root: Path | None = None) -> cache.Artifact | None:
    """Train (or load) the autoencoder and encode the real train split once.

    Writes ``vae/`` (diffusers layout), ``train_latents.npy`` (scaled latents, float32),
    ``train_labels.npy``, ``history.csv`` (per-step L1 and KL; empty for a pretrained
    model) and ``reconstruction.json`` (MAE and PSNR on the val split). Training
    checkpoints itself in the stage's work folder, so an interrupted run resumes there;
    `max_steps` stops after that many more steps (tests), returning None."""
    inputs = {"data": bundle.artifact.key}
    if cfg.pretrained:
        inputs["pretrained"] = _pretrained_identity(cfg.pretrained)
    source = None
    if cfg.shipped:
        source = shipped.find("autoencoder", cfg, inputs, VERSIONS["autoencoder"])
        inputs["shipped"] = source.digest if source else shipped.NONE

    def build(folder: Path) -> None:
        train, val = bundle.splits["train"], bundle.splits["val"]
        if source:
            model = ae.load_pretrained_autoencoder(str(source.file("vae"))).eval()
            history = pd.read_csv(source.file("autoencoder_history.csv"))
        elif cfg.pretrained:
            model = ae.load_pretrained_autoencoder(cfg.pretrained)
            history = pd.DataFrame(columns=["step", "l1", "kl", "edge"])
        else:
            model, history = ae.train_autoencoder(train.images, cfg, progress, work_dir=work, config_hash=key,
                                                  max_steps=max_steps)
            if model is None:
                raise _StoppedEarly
        model.save_pretrained(folder / "vae")
        np.save(folder / "train_latents.npy", ae.encode(model, train.images, progress=progress).numpy().astype(np.float32))
        np.save(folder / "train_labels.npy", train.labels)
        history.to_csv(folder / "history.csv", index=False)
        (folder / "reconstruction.json").write_text(json.dumps(ae.reconstruction_error(model, val.images)))

    work, key = cache.work_dir("autoencoder", cfg, inputs, VERSIONS["autoencoder"], cache_root)
    return _resumable("autoencoder", cfg, build, inputs, work, cache_root)


def _pretrained_identity(name_or_path: str) -> str:
    """A local folder is identified by its files (a changed model changes the key); a hub
    id by its name."""
    local = Path(name_or_path).expanduser()
    if not local.exists():
        return f"hub:{name_or_path}"
    listing = [(f.relative_to(local).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
               for f in sorted(local.rglob("*")) if f.is_file()]
    return "folder:" + cache.digest(listing)


def load_autoencoder(artifact: cache.Artifact) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(artifact.file("vae"), low_cpu_mem_usage=False).eval()


def load_latents(artifact: cache.Artifact) -> torch.Tensor:
    """The scaled latents of the real train split, (N, C, h, w) float32."""
    return torch.from_numpy(np.load(artifact.file("train_latents.npy"), allow_pickle=False))


def reconstruction_table(artifact: cache.Artifact, cfg: AutoencoderConfig) -> pd.DataFrame:
    """One row: which autoencoder, its latent shape, and its val reconstruction error
    (mean absolute error on the 0-255 scale, PSNR in dB)."""
    error = json.loads(artifact.file("reconstruction.json").read_text())
    latent = np.load(artifact.file("train_latents.npy"), mmap_mode="r").shape[1:]
    return pd.DataFrame([{
        "autoencoder": cfg.pretrained or ("shipped with the package" if shipped.shipped_digest(artifact) else "trained here"),
        "latent shape": "x".join(map(str, latent)),
        "mae": round(error["mae"], 3),
        "psnr_db": round(error["psnr_db"], 3),
    }])


# --- diffusion ------------------------------------------------------------------------------


def fit_diffusion(cfg: DiffusionConfig, autoencoder: cache.Artifact, bundle: DataBundle,
                  progress: bool = True, max_steps: int | None = None,
                  cache_root: Path | None = None, processes: int = 1) -> cache.Artifact | None:
    """Train the class-conditional U-ViT on the cached latents (or, in pixel space, on the
    train images, `autoencoder` unused); save the whole model as a diffusers pipeline
    (``pipeline/``) plus ``history.csv`` (loss and lr per step).

    Training checkpoints into a persistent work folder: interrupt it (or pass `max_steps`
    to stop early) and the next call resumes where it stopped. With `max_steps`, returns
    None until training is complete. `processes` > 1 trains data-parallel on that many
    processes (GPUs) under accelerate (`scale_out`); the result's cache key does not
    depend on it."""
    scale_out.check_processes(processes)
    pixel = cfg.space == "pixel"
    inputs = denoiser_inputs(cfg, autoencoder, bundle)
    source = None
    if cfg.shipped and not pixel:
        # The identity a shipped denoiser was built for names the autoencoder trained from
        # scratch; it only fits the latents of that very autoencoder, the one shipped with it.
        source = shipped.find("diffusion", cfg, {"autoencoder": shipped.from_scratch_key(autoencoder)},
                              VERSIONS["diffusion"])
        if source and shipped.shipped_digest(autoencoder) != source.digest:
            print("[diffusion] the shipped denoiser belongs to the autoencoder shipped with it, and this "
                  "run's autoencoder was not loaded from there (set its `shipped` too): training from scratch")
            source = None
        inputs["shipped"] = source.digest if source else shipped.NONE
    work, key = cache.work_dir("diffusion", cfg, inputs, VERSIONS["diffusion"], cache_root)

    def build(folder: Path) -> None:
        if source:
            transformer = UViT.from_pretrained(source.file("transformer"), low_cpu_mem_usage=False).eval()
            shutil.copy(source.file("diffusion_history.csv"), folder / "history.csv")
        else:
            latents, labels = training_set(cfg, autoencoder, bundle)
            if processes > 1:
                scale_out.Shard(0, processes).part(min(cfg.batch_size, len(latents)))  # refuse a batch they cannot share
                work.mkdir(parents=True, exist_ok=True)
                save_file({"latents": latents.float().contiguous(), "labels": torch.as_tensor(labels)},
                          work / "training_latents.safetensors")
                scale_out.launch("train-diffusion", {"cfg": cache.to_dict(cfg), "work": str(work), "key": key,
                                                     "n_classes": bundle.n_classes, "max_steps": max_steps},
                                 processes, work)
            trainer = Trainer(latents, labels, bundle.n_classes, cfg, work, key)  # resumes where they stopped
            trainer.run(progress, 0 if processes > 1 else max_steps)  # the processes did the training
            if trainer.step < cfg.steps:
                raise _StoppedEarly
            transformer = trainer.ema_model().cpu()
            trainer.history_frame().to_csv(folder / "history.csv", index=False)
        vae = None if pixel else load_autoencoder(autoencoder)
        ClassConditionalLDMPipeline.assemble(vae, transformer, cfg, bundle.class_names).save_pretrained(folder / "pipeline")

    return _resumable("diffusion", cfg, build, inputs, work, cache_root)


def denoiser_inputs(cfg: DiffusionConfig, autoencoder: cache.Artifact | None, bundle: DataBundle) -> dict[str, str]:
    """What a denoiser is a function of besides its configuration: the autoencoder whose
    latents it learns, or in pixel space the data."""
    return {"data": bundle.artifact.key} if cfg.space == "pixel" else {"autoencoder": autoencoder.key}


class _StoppedEarly(Exception):
    pass


def _resumable(stage: str, cfg, build, inputs: dict, work: Path, cache_root: Path | None) -> cache.Artifact | None:
    """The cached stage of a training that checkpoints in `work`: None when `build` stopped
    early (the checkpoints stay for the next run), else the result, with `work` removed."""
    try:
        artifact = cache.cached(stage, cfg, build, inputs, VERSIONS[stage], cache_root)
    except _StoppedEarly:
        print(f"[{stage}] stopped early; checkpoints kept in {work}, the next run resumes")
        return None
    shutil.rmtree(work, ignore_errors=True)  # the result is complete: the checkpoints served
    return artifact


def training_set(cfg: DiffusionConfig, autoencoder: cache.Artifact | None, bundle: DataBundle) -> tuple[torch.Tensor, np.ndarray]:
    """The denoiser's training set in `cfg.space`: the train images in [-1, 1] or their cached
    latents, with `cfg.augment` also their 8 flips and turns (encoded here, once per training
    run: the encoder is not equivariant, so flipping latents would not do)."""
    train = bundle.splits["train"]
    views = dihedral_views(train.images) if cfg.augment else [train.images]
    if cfg.space == "pixel":
        return torch.cat([ae.to_model_range(view) for view in views]), np.tile(train.labels, len(views))
    vae = load_autoencoder(autoencoder) if cfg.augment else None
    latents = torch.cat([load_latents(autoencoder)] + [ae.encode(vae, view) for view in views[1:]])
    return latents, np.tile(np.load(autoencoder.file("train_labels.npy"), allow_pickle=False), len(views))


def load_pipeline(artifact: cache.Artifact) -> ClassConditionalLDMPipeline:
    return load_pipeline_from(artifact.file("pipeline"))


def load_pipeline_from(folder: Path) -> ClassConditionalLDMPipeline:
    diffusers_logging.disable_progress_bar()  # no "Loading pipeline components" bar in the notebooks
    try:
        pipe = ClassConditionalLDMPipeline.from_pretrained(folder, low_cpu_mem_usage=False)
    finally:
        diffusers_logging.enable_progress_bar()
    return pipe


# --- the synthetic pool -----------------------------------------------------------------------


def sample_pool(cfg: SamplingConfig, diffusion: cache.Artifact, progress: bool = True,
                cache_root: Path | None = None, processes: int = 1) -> cache.Artifact:
    """`cfg.per_class` images per class from the trained pipeline, written as ``pool.npz``
    in MedMNIST layout: ``train_images`` uint8 (N, S, S, 3), ``train_labels`` (N, 1), plus
    ``class_names``, so the project's own npz reader loads it like any data set.

    The pool is sampled in chunks kept in a work folder (an interrupted run resumes at the
    first missing chunk); `processes` > 1 shares the chunks among that many processes
    (GPUs) under accelerate (`scale_out`), with the same pool as one process."""
    scale_out.check_processes(processes)
    inputs = {"diffusion": diffusion.key}
    work, _ = cache.work_dir("pool", cfg, inputs, VERSIONS["pool"], cache_root)

    def build(folder: Path) -> None:
        pipe = load_pipeline(diffusion)
        labels = np.repeat(np.arange(len(pipe.class_names)), cfg.per_class)
        if processes > 1:
            scale_out.launch("sample", {"pipeline": str(diffusion.file("pipeline")), "cfg": cache.to_dict(cfg),
                                        "labels": labels.tolist(), "work": str(work)}, processes, work)
        scale_out.sample_chunks(pipe, labels, cfg, work, progress=progress)  # what is still missing
        images = scale_out.gather_chunks(work, len(labels), cfg.batch_size)
        write_npz(folder / POOL_FILE, images, labels, pipe.class_names)

    artifact = cache.cached("pool", cfg, build, inputs, VERSIONS["pool"], cache_root)
    shutil.rmtree(work, ignore_errors=True)  # the pool is complete: its chunks served
    return artifact


def load_pool(artifact: cache.Artifact) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels (N,), class names) of a pool artifact."""
    with np.load(artifact.file(POOL_FILE), allow_pickle=False) as z:
        return z["train_images"], z["train_labels"].ravel().astype(np.int64), z["class_names"].tolist()


def pool_subset(pool: cache.Artifact, per_class: int, cache_root: Path | None = None) -> cache.Artifact:
    """The first `per_class` images of every class of `pool` (all of a class with fewer),
    written as a pool of its own. Pool images are independent draws, so the first n are a
    random subset, and a smaller subset is contained in every larger one."""

    def build(folder: Path) -> None:
        images, labels, class_names = load_pool(pool)
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(class_names))])
        write_npz(folder / POOL_FILE, images[keep], labels[keep], class_names)

    return cache.cached("pool_subset", {"per_class": per_class}, build, {"pool": pool.key}, VERSIONS["pool_subset"],
                        cache_root)


def history(artifact: cache.Artifact) -> pd.DataFrame:
    return pd.read_csv(artifact.file("history.csv"))


def training_summary(*artifacts: cache.Artifact) -> pd.DataFrame:
    """Per trained stage: where it comes from (trained here, or shipped with the package),
    steps, the mean loss over its last tenth of steps, how long building its cached result
    took (measured when it was built, not when it was read from the cache; for a shipped
    model that is the copying), and its training wall time where its history records it."""
    rows = []
    for artifact in artifacts:
        frame = history(artifact)
        losses = frame.drop(columns=[c for c in ("step", "lr", "kl", "edge", "seconds") if c in frame.columns])
        tail = losses.tail(max(1, len(frame) // 10)).mean()
        record = json.loads(artifact.file(cache.CONFIG_FILE).read_text())
        rows.append({
            "stage": artifact.stage,
            "source": "shipped" if shipped.shipped_digest(artifact) else "trained here",
            "steps": len(frame),
            "final loss (mean of last 10%)": float(tail.iloc[0]) if len(frame) else np.nan,
            "build seconds": record["build_seconds"],
            "training seconds": float(frame["seconds"].iloc[-1]) if "seconds" in frame and len(frame) else np.nan,
        })
    return pd.DataFrame(rows).set_index("stage")
