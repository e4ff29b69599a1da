"""A stand-in file with full PathMNIST's layout and sizes, for rehearsing the paper profile
where the real data (and a GPU) are out of reach.

It is **not data**: every image is one of the 1000 bundled PathMNIST images, turned or
flipped, shifted by a random crop and with its colour jittered, so the file has the real
one's shapes, dtypes, split sizes and memory footprint, and nothing else of it. No result
may come from it; it exists to find what breaks at 90,000 images (memory of the
nearest-neighbour checks, Fréchet distance, DM, the full-real row, selection) and to time
each stage per unit.

    >>> DataConfig(source="rehearsal")                          # the data stage writes it into the cache
    >>> path = rehearsal.write_file(Path("somewhere"))          # or by hand: ~250 MB, MedMNIST layout,
    >>> DataConfig(source="npz", path=str(path))                # then read like your own data

The file also holds a ``notice`` array saying what it is, and its class names are
PathMNIST's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import DataConfig
from . import sources

VERSION = 1  # bump when the file this code writes changes (it is part of the data stage's key)
# PathMNIST (28 px) split sizes, as medmnist serves them.
PATHMNIST_SPLITS = {"train": 89_996, "val": 10_004, "test": 7_180}
NOTICE = ("NOT DATA: a rehearsal file made of the 1000 bundled PathMNIST images, turned, flipped, "
          "cropped and colour-jittered, in full PathMNIST's layout and sizes. No result may come from it.")
FILE_NAME = "pathmnist_rehearsal.npz"
CHUNK = 8192  # images built at once (bounded memory)


def jitter(images: np.ndarray, rng: np.random.Generator, shift: int = 2, colour: float = 0.06) -> np.ndarray:
    """Each uint8 image (N, S, S, C) turned by a random multiple of 90°, maybe flipped,
    shifted by up to `shift` pixels (edge-padded crop) and with each channel scaled by a
    random factor in 1 ± `colour`: copies that are not byte-identical to their source."""
    n, size = len(images), images.shape[1]
    out = np.empty_like(images)
    turns, flips = rng.integers(0, 4, n), rng.integers(0, 2, n).astype(bool)
    offsets = rng.integers(0, 2 * shift + 1, (n, 2))
    gains = rng.uniform(1 - colour, 1 + colour, (n, 1, 1, images.shape[3]))
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    for i in range(n):
        dy, dx = offsets[i]
        image = np.rot90(padded[i, dy : dy + size, dx : dx + size], turns[i])
        out[i] = image[:, ::-1] if flips[i] else image
    return np.clip(out.astype(np.float32) * gains, 0, 255).round().astype(np.uint8)


def build(sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of the rehearsal file: ``<split>_images`` (N, 28, 28, 3) uint8 and
    ``<split>_labels`` (N, 1) for each split of `sizes` (default: PathMNIST's), the class
    names and the notice. Labels keep the bundled sample's class shares; each image is a
    jittered copy of a bundled image of its class."""
    sizes = dict(sizes or PATHMNIST_SPLITS)
    raw = sources.read_source(DataConfig(source="bundled"))
    images, labels = raw.splits["train"]
    labels = labels.reshape(-1)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(len(raw.class_names))]
    shares = np.array([len(members) for members in by_class], dtype=float) / len(labels)
    arrays: dict[str, np.ndarray] = {}
    for split, n in sizes.items():
        split_labels = rng.choice(len(shares), size=n, p=shares)
        split_images = np.empty((n, *images.shape[1:]), dtype=np.uint8)
        for start in range(0, n, CHUNK):
            part = split_labels[start : start + CHUNK]
            sources_idx = np.array([rng.choice(by_class[c]) for c in part], dtype=np.int64)
            split_images[start : start + len(part)] = jitter(images[sources_idx], rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = split_images, split_labels.reshape(-1, 1)
    arrays["class_names"] = np.asarray(raw.class_names)
    arrays["notice"] = np.asarray(NOTICE)
    return arrays


def write_file(folder: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write the rehearsal file into `folder` (uncompressed: the real file's footprint) once;
    an existing file of the same sizes is kept. Returns its path."""
    folder = Path(folder)
    path = folder / FILE_NAME
    wanted = dict(sizes or PATHMNIST_SPLITS)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if all(f"{s}_labels" in z.files and len(z[f"{s}_labels"]) == n for s, n in wanted.items()):
                return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **build(wanted, seed))
    partial.replace(path)  # whole or absent: an interrupted write leaves no half file under the name
    return path
