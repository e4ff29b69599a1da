"""Readers for the real data the pipeline accepts, each checked before anything is kept.

- ``bundled``:   the first 1000 official PathMNIST train images, shipped in the package.
- ``pathmnist``: full PathMNIST through ``medmnist`` (28, 64, 128 or 224 px, official
  splits), downloaded when online and checked against medmnist's MD5.
- ``npz``:       your own ``.npz`` in MedMNIST layout (``train_images``, ``train_labels``,
  optional ``val_*``/``test_*``, optional ``class_names``).
- ``folder``:    your own folder with one sub-folder of images per class, optionally
  under ``train/``, ``val/`` and ``test/``.

Every reader returns `RawData`: uint8 RGB images (N, H, W, 3) and int64 labels (N,) per
split present in the source, plus class names. Anything malformed raises `DataError`,
whose message names the problem and what to do about it.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config import PATHMNIST_SIZES, DataConfig
from ..paths import ASSETS_DIR
from ..progress import tqdm

SPLITS = ("train", "val", "test")
PATHMNIST_CLASSES = (
    "adipose",
    "background",
    "debris",
    "lymphocytes",
    "mucus",
    "smooth muscle",
    "normal colon mucosa",
    "cancer-associated stroma",
    "colorectal adenocarcinoma epithelium",
)
BUNDLED_FILE = ASSETS_DIR / "pathmnist_train_first1000.npz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DataError(Exception):
    """Missing or malformed input data. The message says what is wrong and what to do."""


@dataclass
class RawData:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)
    class_names: list[str]
    description: str


def read_source(cfg: DataConfig) -> RawData:
    """Read and check the data `cfg` points at."""
    if cfg.source == "bundled":
        with np.load(BUNDLED_FILE, allow_pickle=False) as z:
            raw = {"train": (z["images"], z["labels"])}
        description = "bundled: first 1000 official PathMNIST train images (28 px)"
        return validate(raw, list(PATHMNIST_CLASSES), description)
    if cfg.source == "pathmnist":
        return read_pathmnist(cfg.path, cfg.size, cfg.download)
    if cfg.source == "npz":
        return read_npz(cfg.path)
    if cfg.source == "rehearsal":
        raise DataError("the rehearsal stand-in is written into the cache by data.prepare_data; read it there "
                        "(or write it with rehearsal.write_file and read that file as source 'npz')")
    return read_folder(cfg.path, cfg.size)


# --- full PathMNIST through medmnist -------------------------------------------------------


def pathmnist_stored_size(size: int) -> int:
    """The served size to read for a wanted size: the same, or the next larger (else 224)."""
    return next((s for s in PATHMNIST_SIZES if s >= size), PATHMNIST_SIZES[-1])


def pathmnist_file_info(size: int) -> tuple[str, str, str]:
    """(file name, URL, MD5) of the PathMNIST file served at `size`, from medmnist."""
    info = _import_medmnist().INFO["pathmnist"]
    flag = "" if size == 28 else f"_{size}"
    return f"pathmnist{flag}.npz", info[f"url{flag}"], info[f"MD5{flag}"]


def default_medmnist_root() -> Path:
    return Path("~/.medmnist").expanduser()


def read_pathmnist(root: str | None, size: int, download: bool = True) -> RawData:
    medmnist = _import_medmnist()
    stored = pathmnist_stored_size(size)
    name, url, md5 = pathmnist_file_info(stored)
    root_dir = Path(root).expanduser() if root else default_medmnist_root()
    file = root_dir / name
    if not file.exists():
        if not download:
            raise DataError(_missing_message(file, url, md5, "download is switched off"))
        root_dir.mkdir(parents=True, exist_ok=True)
        try:
            download_file(url, file, md5)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise DataError(_missing_message(file, url, md5, f"download failed: {err}")) from None
    found = file_md5(file)
    if found != md5:
        raise DataError(
            f"{file} has MD5 {found}, but medmnist expects {md5}: the file is damaged or "
            f"incomplete. Delete it and run again to download it, or fetch it yourself from "
            f"{url}"
        )
    splits = {}
    for split in SPLITS:
        dataset = medmnist.PathMNIST(split=split, root=str(root_dir), size=stored, download=False)
        splits[split] = (np.asarray(dataset.imgs), np.asarray(dataset.labels))
    labels = medmnist.INFO["pathmnist"]["label"]
    names = [labels[str(i)] for i in range(len(labels))]
    return validate(splits, names, f"pathmnist: official splits of {name} (medmnist)")


def _missing_message(file: Path, url: str, md5: str, reason: str) -> str:
    return (
        f"PathMNIST file {file.name} is not in {file.parent} ({reason}).\n"
        f"Do one of:\n"
        f"  - on a machine with internet, download {url}\n"
        f"    (MD5 {md5}) and put it at {file}\n"
        f"  - set data_path to the folder that already holds {file.name}\n"
        f"  - use the bundled 1000-image subset instead: data_source='bundled' (demo profile)"
    )


def download_file(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> None:
    """Stream `url` to `dest` with a progress bar; keep it only if complete (and MD5 fits)."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None and file_md5(part) != md5:
            raise DataError(f"downloaded {dest.name} does not match MD5 {md5}; try again")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def file_md5(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
    return md5.hexdigest()


def _import_medmnist():
    try:
        import medmnist
    except ImportError:
        raise DataError(
            "Full PathMNIST is read through the `medmnist` package, which is not installed. "
            "Install it without its torchvision dependency: "
            "pip install --no-deps 'medmnist>=3.0.2,<4'  (scripts/setup.sh does this)."
        ) from None
    return medmnist


# --- your own data --------------------------------------------------------------------------


def read_npz(path: str | Path) -> RawData:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
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


def read_folder(root: str | Path, size: int) -> RawData:
    """Read ``root/<class>/*`` (or ``root/{train,val,test}/<class>/*``). Each image is
    centre-cropped to a square and resized to `size`, as their sizes may differ."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
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
            splits[split] = (np.stack(images), np.asarray(labels))
    return validate(splits, names, f"folder: {root.name}")


def _visible_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _read_image(file: Path, size: int) -> np.ndarray:
    try:
        with Image.open(file) as img:
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read image {file}: {err}") from None
    return square_resize(np.asarray(img), size)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an (H, W, 3) uint8 image to a square and resize it to size x size
    (bicubic; Pillow filters out aliasing when it shrinks)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(image)
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil)


# --- checks shared by every reader --------------------------------------------------------


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
            raise DataError(
                f"{description}: {split} images are {images.dtype}, not uint8 (0..255); "
                f"convert them, e.g. (x * 255).round().astype(np.uint8) for floats in 0..1"
            )
        if images.ndim == 3:  # grayscale (N, H, W)
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{description}: {split} images have shape {images.shape}; expected "
                f"(N, H, W, 3) RGB or (N, H, W) grayscale"
            )
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(
                f"{description}: {split} labels must be integers of shape (N,) or (N, 1); "
                f"got {labels.dtype} {labels.shape}"
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
