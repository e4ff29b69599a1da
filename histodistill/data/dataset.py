"""The data stage: real images, split into train/val/test at one resolution, cached.

    >>> from histodistill import presets
    >>> from histodistill.data import dataset
    >>> bundle = dataset.prepare_data(presets.stage_config("data", "demo"))
    >>> bundle.splits["train"].images.shape        # (N, 28, 28, 3) uint8
    >>> ds = dataset.HistoDataset("val", profile="demo")  # a torch Dataset, medmnist style

Splits that the source does not provide are carved out of its train split, stratified by
class and seeded: first `test_fraction` of all images, then `val_fraction` of all images
from the rest. For the bundled subset (1000 images, no official val/test) that gives
600 train / 150 val / 250 test with the default fractions. The test split is for the
final evaluation only; no choice anywhere in the pipeline may look at it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from .. import cache, paths
from .config import DataConfig
from ..presets import stage_config
from ..progress import tqdm
from . import rehearsal
from .checks import SPLITS, DataError
from .own_data import existing, read_npz, square_resize
from .sources import BUNDLED_FILE, pathmnist_file_info, pathmnist_stored_size, read_source

STAGE = "data"
STAGE_VERSION = 1  # bump when the files this stage writes change meaning
FOLDER_READER = 2  # bump when `read_folder` turns the same files into other pixels (a folder's key only)


@dataclass
class Split:
    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64 class ids

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """The three splits, the class names, and where they came from."""

    splits: dict[str, Split]
    class_names: list[str]
    meta: dict
    artifact: cache.Artifact

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def prepare_data(cfg: DataConfig, cache_root: Path | None = None) -> DataBundle:
    """Read, check, split and resize the data `cfg` names; cached (see `cache.py`)."""
    identity = source_identity(cfg, cache_root)
    artifact = cache.cached(
        STAGE,
        cfg,
        lambda folder: _build(cfg, folder, cache_root),
        inputs={"source": identity},
        version=STAGE_VERSION,
        cache_root=cache_root,
    )
    return load_bundle(artifact)


def source_identity(cfg: DataConfig, cache_root: Path | None = None) -> str:
    """A string that changes whenever the source data changes (part of the cache key)."""
    if cfg.source == "bundled":
        return "sha256:" + cache.file_digest(BUNDLED_FILE, cache_root)
    if cfg.source == "pathmnist":
        name, _, md5 = pathmnist_file_info(pathmnist_stored_size(cfg.size))
        return f"{name}:md5:{md5}"  # the file is checked against this MD5 when read
    if cfg.source == "rehearsal":  # made from the bundled file by versioned code: no need to hash 250 MB
        return (f"rehearsal:v{rehearsal.VERSION}:{cache.digest(rehearsal.PATHMNIST_SPLITS)}:sha256:"
                + cache.file_digest(BUNDLED_FILE, cache_root))
    path = existing(cfg.path, cfg.source)
    if cfg.source == "npz":
        return "sha256:" + cache.file_digest(path, cache_root)
    listing = [
        (f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(path.rglob("*"))
        if f.is_file()
    ]
    return f"listing:reader{FOLDER_READER}:" + cache.digest(listing)


def _build(cfg: DataConfig, folder: Path, cache_root: Path | None = None) -> None:
    if cfg.source == "rehearsal":
        file = rehearsal.write_file((cache_root or paths.cache_dir()) / "rehearsal")
        raw = dataclasses.replace(read_npz(file), description=f"rehearsal ({file.name}): {rehearsal.NOTICE}")
    else:
        raw = read_source(cfg)
    splits = carve_splits(raw.splits, cfg.val_fraction, cfg.test_fraction, cfg.seed, raw.class_names)
    if cfg.max_train_per_class:
        keep = cap_per_class(splits["train"][1], cfg.max_train_per_class)
        splits["train"] = tuple(a[keep] for a in splits["train"])
    for split, (images, labels) in splits.items():
        np.save(folder / f"{split}_images.npy", resize_images(images, cfg.size, split))
        np.save(folder / f"{split}_labels.npy", labels)
    meta = {
        "class_names": raw.class_names,
        "source": raw.description,
        "carved_splits": sorted(set(SPLITS) - set(raw.splits)),
        "counts": {s: np.bincount(l, minlength=len(raw.class_names)).tolist() for s, (_, l) in splits.items()},
        "size": cfg.size,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def load_bundle(artifact: cache.Artifact) -> DataBundle:
    meta = json.loads(artifact.file("meta.json").read_text())
    splits = {
        split: Split(
            np.load(artifact.file(f"{split}_images.npy"), allow_pickle=False),
            np.load(artifact.file(f"{split}_labels.npy"), allow_pickle=False),
        )
        for split in SPLITS
    }
    return DataBundle(splits, meta["class_names"], meta, artifact)


def carve_splits(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: list[str],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Give every missing split a stratified, seeded share of the train split.

    Fractions are of the train split as given, so test takes `test_fraction` of it and
    val `val_fraction` of it (not of what is left)."""
    out = dict(splits)
    images, labels = out["train"]
    total = len(labels)
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in out:
            continue
        n_take = max(1, round(fraction * total))
        _check_stratifiable(labels, n_take, split, class_names)
        keep_idx, take_idx = train_test_split(
            np.arange(len(labels)), test_size=n_take, stratify=labels, random_state=seed
        )
        keep_idx, take_idx = np.sort(keep_idx), np.sort(take_idx)  # keep the source order
        out[split] = (images[take_idx], labels[take_idx])
        images, labels = images[keep_idx], labels[keep_idx]
    out["train"] = (images, labels)
    return out


def _check_stratifiable(labels: np.ndarray, n_take: int, split: str, class_names: list[str]) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    small = [class_names[i] for i in np.flatnonzero((counts > 0) & (counts < 2))]
    if small:
        raise DataError(
            f"cannot carve a stratified {split} split: classes {small} have a single image "
            f"left; give more images per class or supply a {split} split yourself"
        )
    if n_take < np.count_nonzero(counts) or len(labels) - n_take < np.count_nonzero(counts):
        raise DataError(
            f"cannot carve a stratified {split} split of {n_take} from {len(labels)} images "
            f"over {np.count_nonzero(counts)} classes; change the fractions or add images"
        )


def cap_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first `k` images of each class, in their original order."""
    seen: dict[int, int] = {}
    keep = []
    for i, label in enumerate(labels.tolist()):
        if seen.get(label, 0) < k:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def resize_images(images: np.ndarray, size: int, desc: str = "") -> np.ndarray:
    """Resize (N, H, W, 3) uint8 images to (N, size, size, 3); a no-op when already there."""
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i in tqdm(range(len(images)), desc=f"resize {desc} to {size}px", disable=len(images) < 2000):
        out[i] = square_resize(images[i], size)
    return out


def summary_table(bundle: DataBundle) -> pd.DataFrame:
    """One row per split: image count, size, smallest/largest class, and origin."""
    rows = []
    for split in SPLITS:
        part = bundle.splits[split]
        counts = np.bincount(part.labels, minlength=bundle.n_classes)
        rows.append(
            {
                "split": split,
                "images": len(part),
                "image size": "x".join(map(str, part.images.shape[1:])),
                "classes present": int(np.count_nonzero(counts)),
                "smallest class": int(counts.min()),
                "largest class": int(counts.max()),
                "origin": _origin(split, bundle.meta["carved_splits"]),
            }
        )
    return pd.DataFrame(rows).set_index("split")


def _origin(split: str, carved: list[str]) -> str:
    if split in carved:
        return "carved from the source's train"
    if split == "train" and carved:
        return "the source's train, less the carved splits"
    return "as given"


def class_counts(bundle: DataBundle) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with each split's share in percent."""
    table = pd.DataFrame(
        {s: np.bincount(bundle.splits[s].labels, minlength=bundle.n_classes) for s in SPLITS},
        index=pd.Index(bundle.class_names, name="class"),
    )
    for split in SPLITS:
        table[f"{split} %"] = (100 * table[split] / table[split].sum()).round(1)
    return table


class HistoDataset(torch.utils.data.Dataset):
    """One split of the real data as a torch Dataset, used the way a medmnist dataset is:
    ``imgs`` (N, S, S, 3) uint8, ``labels`` (N, 1), ``info``, and items
    ``(PIL image or transform(image), label array)``."""

    def __init__(self, split: str = "train", profile: str = "demo", transform=None, target_transform=None, **overrides):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        bundle = prepare_data(stage_config("data", profile, **overrides))
        self.split = split
        self.imgs = bundle.splits[split].images
        self.labels = bundle.splits[split].labels[:, None]
        self.transform, self.target_transform = transform, target_transform
        self.info = {
            "task": "multi-class",
            "label": {str(i): name for i, name in enumerate(bundle.class_names)},
            "n_channels": 3,
            "n_samples": {s: len(bundle.splits[s]) for s in SPLITS},
            "source": bundle.meta["source"],
        }

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image, target = Image.fromarray(self.imgs[index]), self.labels[index].astype(int)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return f"HistoDataset({self.split!r}, {len(self)} images of {self.imgs.shape[1]} px, {len(self.info['label'])} classes)"
