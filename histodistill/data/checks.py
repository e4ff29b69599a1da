"""The checks every reader of real data runs before anything is kept: shapes, dtypes, labels,
class names and values, each refused (`DataError`, naming the problem and what to do) or
warned about once; and `RawData`, what every reader returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


class DataError(Exception):
    """Missing or malformed input data. The message says what is wrong and what to do."""


@dataclass
class RawData:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)
    class_names: list[str]
    description: str



def validate(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str] | None, description: str
) -> RawData:
    """Check shapes, dtypes, labels and class coverage; return normalised arrays."""
    if "train" not in splits:
        raise DataError(f"{description}: no train split")
    clean = {}
    for split, (images, labels) in splits.items():
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8:
            raise DataError(f"{description}: {split} images are {images.dtype}, not uint8 (0..255); "
                            f"{_conversion_hint(images)}")
        if images.ndim == 3:  # grayscale (N, H, W)
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            channel_first = images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3)
            raise DataError(
                f"{description}: {split} images have shape {images.shape}; expected "
                f"(N, H, W, 3) RGB or (N, H, W) grayscale"
                + ("; these look channel-first (N, C, H, W): write x.transpose(0, 2, 3, 1)" if channel_first else "")
            )
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            named = labels.dtype.kind in "USO"
            raise DataError(
                f"{description}: {split} labels must be integers of shape (N,) or (N, 1); "
                f"got {labels.dtype} {labels.shape}"
                + ("; for class names as labels write names, labels = np.unique(labels, return_inverse=True) "
                   "and save names as class_names" if named else "")
            )
        if len(images) != len(labels):
            raise DataError(
                f"{description}: {split} has {len(images)} images but {len(labels)} labels"
            )
        if len(images) == 0:
            raise DataError(f"{description}: {split} split is empty")
        clean[split] = (images, labels.astype(np.int64))
    shapes = {split: images.shape[1:3] for split, (images, _) in clean.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{description}: splits have different image sizes {shapes}")

    n_classes = len(class_names) if class_names else int(max(l.max() for _, l in clean.values())) + 1
    names = list(class_names) if class_names else [f"class {i}" for i in range(n_classes)]
    _check_class_names(names, description)
    for split, (_, labels) in clean.items():
        bad = labels[(labels < 0) | (labels >= n_classes)]
        if bad.size:
            given = f" (class_names has {n_classes} names)" if class_names else ""
            raise DataError(
                f"{description}: {split} labels must lie in 0..{n_classes - 1}{given}; "
                f"found {sorted(set(bad.tolist()))[:5]}"
            )
    counts = np.bincount(clean["train"][1], minlength=n_classes)
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{description}: classes {empty} have no train images")
    if n_classes < 2:
        raise DataError(f"{description}: one class ({names[0]!r}); classification needs at least two")
    few = [f"{names[i]} ({counts[i]})" for i in np.flatnonzero(counts < MIN_TRAIN_PER_CLASS)]
    if few:
        warn(f"{description}: classes with fewer than {MIN_TRAIN_PER_CLASS} train images: {', '.join(few)}; "
             f"their val/test share, selection and metrics rest on a handful of images")
    for split, (images, _) in clean.items():
        _check_values(images, f"{description}: {split} images")
    return RawData(clean, names, description)


def _conversion_hint(images: np.ndarray) -> str:
    """How to bring `images` (not uint8) to uint8, from the range their values span."""
    if images.dtype.kind not in "iuf" or images.size == 0:
        return "convert them to uint8 values in 0..255"
    low, high = float(np.nanmin(images)), float(np.nanmax(images))
    span = f"their values span {low:g}..{high:g}"
    if low >= 0 and high <= 1:
        return f"{span}: convert with (x * 255).round().astype(np.uint8)"
    if low >= 0 and high <= 255:
        return f"{span}, already 0..255: convert with x.round().astype(np.uint8)"
    return (f"{span}: scale them by that range, e.g. ((x - {low:g}) / ({high:g} - {low:g}) * 255)"
            f".round().astype(np.uint8)")


MIN_TRAIN_PER_CLASS = 10  # below this a class is warned about: a few images cannot stand for it


def warn(message: str) -> None:
    """A data warning, printed once where it arises (the data stage is cached, so once per data set)."""
    print(f"[data] warning: {message}", flush=True)


def _check_class_names(names: list[str], description: str) -> None:
    """Class names key the data card's counts and name exported files and figures: refuse
    empty, repeated or control-character names; warn once about characters a file name
    cannot hold (exported files use a slug of the name instead)."""
    bad = [n for n in names if not n.strip() or n != n.strip() or any(ord(c) < 32 for c in n)]
    if bad:
        raise DataError(f"{description}: class names must be non-empty, without surrounding spaces or control "
                        f"characters; bad: {bad}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"{description}: class names must be unique; repeated: {duplicates}")
    unsafe = [n for n in names if any(c in n for c in '/\\:*?"<>|')]
    if unsafe:
        warn(f"{description}: class names {unsafe} hold characters a file name cannot; exported files and "
             f"folders use a slug of them")


def _check_values(images: np.ndarray, what: str) -> None:
    """Refuse images that carry no picture: all of one colour, or values that only reach 1
    (floats in 0..1 cast to uint8); warn when many single images are blank."""
    flat = images.reshape(len(images), -1)
    blank = flat.max(axis=1) == flat.min(axis=1)
    if blank.all():
        raise DataError(f"{what} are all blank: every image is a single colour")
    if images.max() <= 1:
        raise DataError(f"{what} only take the values 0 and 1: floats in 0..1 cast to uint8? Convert with "
                        f"(x * 255).round().astype(np.uint8)")
    if blank.mean() > 0.1:
        warn(f"{what}: {int(blank.sum())} of {len(images)} are a single colour")
