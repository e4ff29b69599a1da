"""Does the near-copy test flag real images no model saw? Carlini et al.'s fixed ratio against
the audit's calibrated test, on the bundled 1000 PathMNIST images.

For each seed, the images are split at random into 600 "train" and 400 held out; the held-out
images are cut, within class, into a calibration half (the thresholds) and an audited half
(audited as if it were a synthetic set). Nothing is trained: every audited image is real and
unseen, so a calibrated test must pass it (the negative control). The audited half with
`--planted` of its images replaced by exact copies of train images must fail (the positive
control). Pixels in 0..1, the 50 nearest train images, the calibrated quantile 1 %.

    python bench/near_copy_calibration.py             # seeds 0-4; prints, writes
    python bench/near_copy_calibration.py --seeds 10 --planted 5

Writes bench/results/near_copy_calibration.csv (one row per seed, set and class: images, the
count under Carlini's 1/3, the calibrated count, and for each set's whole-set row the
calibrated test's expected count and p-value).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from histodistill.data.sources import BUNDLED_FILE, PATHMNIST_CLASSES
from histodistill.generate import memorisation

CLASSES = list(PATHMNIST_CLASSES)
OUT = Path(__file__).resolve().parent / "results" / "near_copy_calibration.csv"


def halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets, half of each class in each (rounded down for the first)."""
    first, second = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        first.append(rows[: len(rows) // 2])
        second.append(rows[len(rows) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def audit(ratios: np.ndarray, labels: np.ndarray, thresholds: memorisation.CopyThresholds, seed: int,
          name: str) -> list[dict]:
    """Per class and for the whole set: Carlini's count, the calibrated count (and the test)."""
    test = memorisation.calibrated_near_copies(ratios, labels, thresholds)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[test["flagged"]] = True
    rows = [{"seed": seed, "set": name, "class": CLASSES[c], "images": int((labels == c).sum()),
             "carlini": int((ratios[labels == c] < 1 / 3).sum()), "calibrated": int(flagged[labels == c].sum())}
            for c in range(len(CLASSES))]
    rows.append({"seed": seed, "set": name, "class": "all", "images": len(labels), "carlini": int((ratios < 1 / 3).sum()),
                 "calibrated": test["statistic"], "expected": test["expected"], "p_value": test["p_value"],
                 "passed": test["passed"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--planted", type=int, default=10, help="train copies planted in the positive control")
    args = parser.parse_args()
    with np.load(BUNDLED_FILE, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].ravel().astype(np.int64)
    vectors = memorisation.pixel_vectors(images)
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(labels))
        train, held = np.sort(order[:600]), np.sort(order[600:])
        ratios = memorisation.copy_ratios(vectors[held], vectors[train])["ratios"]
        calibration, audited = halves(labels[held], rng)
        thresholds = memorisation.copy_thresholds(ratios[calibration], labels[held][calibration], len(CLASSES))
        rows += audit(ratios[audited], labels[held][audited], thresholds, seed, "unseen real (negative control)")
        rows += audit(ratios, labels[held], thresholds, seed, "all 400 held out (Carlini's count only)")[:-1]
        # The positive control: `planted` audited images replaced by train images of their class.
        planted = rng.choice(len(audited), size=args.planted, replace=False)
        copies = vectors[held][audited].copy()
        for i in planted:
            same = train[labels[train] == labels[held][audited][i]]
            copies[i] = vectors[rng.choice(same)]
        planted_ratios = memorisation.copy_ratios(copies, vectors[train])["ratios"]
        rows += audit(planted_ratios, labels[held][audited], thresholds, seed,
                      f"with {args.planted} train copies (positive control)")
    table = pd.DataFrame(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, index=False)
    whole = table[table["class"] == "all"]
    print(whole[["seed", "set", "images", "carlini", "calibrated", "expected", "p_value", "passed"]].to_string(index=False))
    held = table[table["set"].str.startswith("all 400")]
    by_class = held.groupby("class", sort=False)[["images", "carlini"]].sum()
    print(f"\nheld-out real images under Carlini's 1/3, summed over {args.seeds} splits:")
    print(by_class.to_string())
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
