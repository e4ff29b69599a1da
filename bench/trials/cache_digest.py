"""What checking the cache's content digests costs on every read.

Each cached file's BLAKE2b digest (`cache.content_digest`) is computed when a stage is
served from the cache. Times (a) every file of a cache folder (default: this project's
cache, e.g. after a demo run) and (b) a paper-size array: PathMNIST's 89,996 train images
at 28 px (and at 64 px), written as .npy to a temporary folder. Each figure is the best of
three cold reads of the digest (the in-process memo cleared, the page cache warm).

    python bench/trials/cache_digest.py [--cache DIR]

Prints and writes bench/trials/results/cache_digest.csv (what, files, MB, seconds, MB/s, machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histodistill import cache, machine, paths

RESULTS = Path(__file__).parent / "results" / "cache_digest.csv"


def timed(files: list[Path]) -> float:
    best = float("inf")
    for _ in range(3):
        cache._DIGESTS.clear()
        start = time.perf_counter()
        for path in files:
            cache.content_digest(path)
        best = min(best, time.perf_counter() - start)
    return best


def row(what: str, files: list[Path]) -> dict:
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    seconds = timed(files)
    print(f"{what}: {len(files)} files, {megabytes:.1f} MB, {seconds:.3f} s ({megabytes / seconds:.0f} MB/s)")
    return {"what": what, "files": len(files), "MB": round(megabytes, 1), "seconds": round(seconds, 4),
            "MB_per_s": round(megabytes / seconds), "cpu": machine.cpu_name()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (default: the project's)")
    args = ap.parse_args()
    root = args.cache or paths.cache_dir()
    rows = [row(f"every file of the cache {root}",
                [p for p in root.rglob("*") if p.is_file() and "/.work-" not in str(p)])]
    with tempfile.TemporaryDirectory() as tmp:
        for size in (28, 64):
            path = Path(tmp) / f"train_images_{size}.npy"
            images = np.random.default_rng(0).integers(0, 256, (89_996, size, size, 3), dtype=np.uint8)
            np.save(path, images)
            del images
            rows.append(row(f"PathMNIST train at {size} px (.npy)", [path]))
            path.unlink()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(RESULTS, index=False)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
