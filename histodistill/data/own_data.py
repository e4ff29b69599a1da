"""Readers of your own data: an ``.npz`` in MedMNIST layout (``train_images``,
``train_labels``, optional ``val_*``/``test_*``, optional ``class_names``), or a folder with
one sub-folder of images per class, optionally under ``train/``, ``val/`` and ``test/``.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..progress import tqdm
from .checks import SPLITS, DataError, RawData, validate, warn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")



def existing(path: str | Path, source: str) -> Path:
    """`path` (``~`` expanded) when it is what `source` (``npz`` or ``folder``) reads; else
    a DataError saying what it is and which source reads that."""
    path = Path(path).expanduser()
    if source == "npz" and path.is_dir():
        raise DataError(f"data file {path} is a folder, not an .npz; the folder source reads a folder with one "
                        f"sub-folder of images per class (-p data_source folder)")
    if source == "folder" and path.is_file():
        raise DataError(f"data folder {path} is a file, not a folder; the npz source reads an .npz in MedMNIST "
                        f"layout (-p data_source npz)")
    if not path.exists():
        raise DataError(f"data {'file' if source == 'npz' else 'folder'} {path} does not exist")
    return path



def read_npz(path: str | Path) -> RawData:
    path = existing(path, "npz")
    if not zipfile.is_zipfile(path):  # np.load would call anything else "pickled data"
        raise DataError(f"{path} is not a readable .npz archive (np.savez writes a zip of .npy arrays); "
                        f"it starts with {path.read_bytes()[:8]!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as err:  # zlib: a damaged compressed member
        raise DataError(f"{path} is not a readable .npz file ({type(err).__name__}: {err}); write it again "
                        f"or restore it from a copy") from None
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(
            f"{path} needs the MedMNIST keys train_images and train_labels "
            f"(optional val_*/test_*, class_names); it has {sorted(arrays)}"
        )
    splits = {}
    for split in SPLITS:
        has_images, has_labels = f"{split}_images" in arrays, f"{split}_labels" in arrays
        if has_images != has_labels:
            raise DataError(f"{path}: {split}_images and {split}_labels must come together")
        if has_images:
            splits[split] = (arrays[f"{split}_images"], arrays[f"{split}_labels"])
    names = None
    if "class_names" in arrays:
        names_array = arrays["class_names"]
        if names_array.ndim != 1 or names_array.dtype.kind not in "US":
            raise DataError(f"{path}: class_names must be a 1-D array of strings")
        names = [str(n) for n in names_array]
    return validate(splits, names, f"npz: {path.name}")


def write_npz(path: str | Path, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    """Write images in MedMNIST's layout, as `read_npz` reads them: ``train_images`` uint8,
    ``train_labels`` an (N, 1) column (uint8 when the classes fit), ``class_names``."""
    dtype = np.uint8 if len(class_names) <= 256 else np.int64
    np.savez_compressed(
        path, train_images=np.asarray(images, np.uint8),
        train_labels=np.asarray(labels).reshape(-1, 1).astype(dtype), class_names=np.array([str(n) for n in class_names]),
    )


def read_folder(root: str | Path, size: int) -> RawData:
    """Read ``root/<class>/*`` (or ``root/{train,val,test}/<class>/*``). Each image is
    centre-cropped to a square and resized to `size`, as their sizes may differ."""
    root = existing(root, "folder")
    split_roots = {s: root / s for s in SPLITS if (root / s).is_dir()}
    if split_roots and "train" not in split_roots:
        raise DataError(f"{root} has {sorted(split_roots)} folders but no train/ folder")
    stray = sorted(d.name for d in root.iterdir() if _visible_dir(d) and d.name not in SPLITS)
    if split_roots and stray:  # one layout or the other: these images would be ignored
        raise DataError(f"{root} has split folders {sorted(split_roots)} and also {stray} beside them; "
                        f"move those class folders into train/ (or the split they belong to)")
    split_roots = split_roots or {"train": root}
    names = sorted(d.name for d in split_roots["train"].iterdir() if _visible_dir(d))
    if not names:
        raise DataError(f"{split_roots['train']} holds no class folders (one per class)")
    splits = {}
    for split, split_root in split_roots.items():
        extra = sorted(d.name for d in split_root.iterdir() if _visible_dir(d) and d.name not in names)
        if extra:
            raise DataError(f"{split_root} has class folders {extra} that train/ does not have")
        images, labels = [], []
        for label, name in enumerate(names):
            folder = split_root / name
            entries = sorted(f for f in folder.iterdir() if f.is_file()) if folder.is_dir() else []
            # Hidden files (macOS "._x.png", ".DS_Store") are system files, not images.
            files = [f for f in entries if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
            ignored = [f.name for f in entries if f not in files and not f.name.startswith(".")]
            if ignored:
                warn(f"{folder}: {len(ignored)} file(s) that are not images ({', '.join(IMAGE_SUFFIXES)}) "
                     f"are ignored, e.g. {ignored[:3]}")
            if split == "train" and not files:
                raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for file in tqdm(files, desc=f"read {split}/{name}", leave=False, disable=len(files) < 500):
                images.append(_read_image(file, size))
                labels.append(label)
        if images:
            splits[split] = (images, np.asarray(labels))
    splits = _to_8_bits(splits, root)
    return validate(splits, names, f"folder: {root.name}")


def _visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


# Pillow's modes for one channel of more than 8 bits: 16-bit PNG and TIFF (microscopes, many
# TIFF exports, 12-bit sensors stored in 16), 32-bit integers and floats. Converting them to
# RGB clips every value above 255, so they are read as numbers and scaled together instead.
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _read_image(file: Path, size: int) -> np.ndarray:
    """(size, size, 3): uint8 for 8-bit images, float32 for images of more than 8 bits
    (`HIGH_DEPTH_MODES`, their raw values, for `_to_8_bits`)."""
    try:
        with Image.open(file) as img:
            if img.mode in HIGH_DEPTH_MODES:
                values = np.asarray(img, dtype=np.float32)
                # Bicubic resizing overshoots at edges: keep the image's own range.
                resized = np.clip(square_resize(values, size), values.min(), values.max())
                return np.repeat(resized[..., None], 3, axis=-1)
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read image {file}: {err}") from None
    return square_resize(np.asarray(img), size)


def _to_8_bits(splits: dict[str, tuple[list, np.ndarray]], root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stack each split's images, bringing images of more than 8 bits to 0..255 by the range
    their values span over the whole folder (so 12 bits in 16 fill 0..255 as 16 bits do, and
    the images keep their brightness relative to each other); says so in one line."""
    deep = [image for images, _ in splits.values() for image in images if image.dtype != np.uint8]
    if not deep:
        return {split: (np.stack(images), labels) for split, (images, labels) in splits.items()}
    low = float(min(image.min() for image in deep))
    high = float(max(image.max() for image in deep))
    scale = 255.0 / (high - low) if high > low else 0.0

    def eight_bits(image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint8:
            return image
        return np.clip(np.rint((image - low) * scale), 0, 255).astype(np.uint8)

    total = sum(len(images) for images, _ in splits.values())
    warn(f"{root}: {len(deep)} of {total} images have more than 8 bits per value (16-bit or 32-bit); their values "
         f"span {low:g}..{high:g} over the folder and are scaled to 0..255 by that range")
    return {split: (np.stack([eight_bits(image) for image in images]), labels)
            for split, (images, labels) in splits.items()}


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an (H, W, 3) uint8 image (or an (H, W) float32 one) to a square and resize
    it to size x size (bicubic; Pillow filters out aliasing when it shrinks)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(image)
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil)
