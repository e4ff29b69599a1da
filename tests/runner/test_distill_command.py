"""`./run_all.sh --distill PATH`: own images (not PathMNIST) to a shareable set and its audit in
one command, at smoke size."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image

from histodistill.generate import guidance

CLASSES = ("fat", "stroma", "tumour")  # not PathMNIST's names, nor its number of classes


def write_own_images(root, per_class=40, size=32):
    """A class-folder root of RGB PNGs whose colour and texture differ by class."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.array([200, 120, 160]) - 50 * k
            noise = rng.normal(0, 15 + 15 * k, (size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"patch{i:03d}.png")


def test_distill_runs_what_a_shareable_set_needs_and_says_where_it_is(tmp_path, output_root):
    images = tmp_path / "my images"
    write_own_images(images)
    done = subprocess.run(
        [sys.executable, "-m", "histodistill.runner", "--profile", "smoke", "--run-name", "mine",
         "--distill", str(images)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = output_root / "paper_results" / "mine"

    # Notebooks 01-04 and 07 only: neither 05's comparison nor 06's ablations.
    ran = list(pd.read_csv(results / "run_times.csv")["notebook"])
    assert ran == ["01_data", "02_latent_diffusion", "03_synthetic_pool", "04_graph_selection",
                   "07_privacy_audit", "total"]
    assert not (results / "main_table.csv").exists()

    # The set of the user's classes, with its card and the audit's verdict in it.
    card = json.loads((results / "distilled" / "data_card.json").read_text())
    assert sorted(card["counts_per_class"]) == sorted(CLASSES)
    assert card["audit"]["verdict"] in ("passed", "FAILED")
    assert len(list((results / "distilled").glob("grid_*.png"))) == len(CLASSES)

    # The pool's sampler is the one the sweep picked on val, recorded for the later notebooks.
    sweep = pd.read_csv(results / "guidance_sweep.csv")
    sampling = json.loads((output_root / "outputs" / "mine" / "run.json").read_text())["stages"]["sampling"]
    assert (sampling["solver"], sampling["guidance_scale"]) == guidance.choose(sweep)
    assert "is the one the rule picks on val" in (output_root / "outputs/mine/03_synthetic_pool.ipynb").read_text()
    # Notebook 07 says it used the profile's recipe, 05 not having run.
    assert "has not run notebook 05" in (output_root / "outputs/mine/07_privacy_audit.ipynb").read_text()

    # The run ends by saying where the set, its card and its audit are, and the verdict.
    out = done.stdout
    assert f"The shareable set: {results / 'distilled' / 'distilled.npz'}" in out
    assert f"{results / 'distilled' / 'data_card.json'}" in out
    assert f"verdict on the distilled set: {card['audit']['verdict']}" in out
    assert ("The verdict passed means" in out) if card["audit"]["verdict"] == "passed" else ("What to try" in out)
