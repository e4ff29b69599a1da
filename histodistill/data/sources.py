"""Readers for the real data the pipeline accepts, each checked before anything is kept.

- ``bundled``:   the first 1000 official PathMNIST train images, shipped in the package.
- ``pathmnist``: full PathMNIST through ``medmnist`` (28, 64, 128 or 224 px, official
  splits), downloaded when online and checked against medmnist's MD5.
- ``npz``:       your own ``.npz`` in MedMNIST layout (``train_images``, ``train_labels``,
  optional ``val_*``/``test_*``, optional ``class_names``).
- ``folder``:    your own folder with one sub-folder of images per class, optionally
  under ``train/``, ``val/`` and ``test/``.

The last two are read by `own_data`; every reader's result passes `checks`.

Every reader returns `RawData`: uint8 RGB images (N, H, W, 3) and int64 labels (N,) per
split present in the source, plus class names. Anything malformed raises `DataError`,
whose message names the problem and what to do about it.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .config import PATHMNIST_SIZES, DataConfig
from ..paths import ASSETS_DIR
from ..progress import tqdm
from .checks import SPLITS, DataError, RawData, validate
from .own_data import read_folder, read_npz

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
