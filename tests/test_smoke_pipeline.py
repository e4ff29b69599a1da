"""The whole pipeline in the smoke profile, as ./run_all.sh runs it: the exact files it
must produce, and a second run that reads every stage from the cache."""

import os
import subprocess
import sys

import pandas as pd

# Every file the smoke run must write, per output folder. A later stage adds its files here.
EXPECTED = {
    "figures/smoke": {
        "01_class_distribution.png",
        "01_examples_per_class.png",
        "01_colour_profile.png",
        "02_reconstructions.png",
        "02_loss_curves.png",
        "03_real_vs_synthetic.png",
        "03_pool_montage.png",
        "03_class_consistency.png",
        "03_pool_quality.png",
        "03_memorisation.png",
        "03_closest_pairs.png",
        "04_community_sizes.png",
        "04_community_map.png",
        "04_distilled_set.png",
    },
    "paper_results/smoke": {
        "data_splits.csv",
        "data_class_counts.csv",
        "autoencoder_reconstruction.csv",
        "ldm_training.csv",
        "pool_class_consistency.csv",
        "pool_quality.csv",
        "pool_memorisation.csv",
        "selection_graphs.csv",
        "distilled",  # the exported distilled set (a folder)
        "run_times.csv",
    },
    "outputs/smoke": {
        "01_data.ipynb",
        "02_latent_diffusion.ipynb",
        "03_synthetic_pool.ipynb",
        "04_graph_selection.ipynb",
        "run.json",
    },
}


def run_pipeline():
    return subprocess.run(
        [sys.executable, "-m", "histodistill.runner", "--profile", "smoke"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=600,
    )


def test_smoke_pipeline_writes_exactly_its_files(output_root):
    first = run_pipeline()
    assert first.returncode == 0, first.stderr[-3000:]
    for folder, names in EXPECTED.items():
        found = {p.name for p in (output_root / folder).iterdir()}
        assert found == names, f"{folder}: missing {names - found}, unexpected {found - names}"
        for name in names:
            assert (output_root / folder / name).stat().st_size > 0, name

    splits = pd.read_csv(output_root / "paper_results/smoke/data_splits.csv", index_col="split")
    assert splits.loc["train", "images"] == 9 * 20  # the smoke cap: 20 per class
    notebooks = ["01_data", "02_latent_diffusion", "03_synthetic_pool", "04_graph_selection"]
    assert list(pd.read_csv(output_root / "paper_results/smoke/run_times.csv")["notebook"]) == notebooks + ["total"]
    consistency = pd.read_csv(output_root / "paper_results/smoke/pool_class_consistency.csv", index_col="class")
    assert consistency.loc["mean over classes", "n_pool"] == 9 * 4  # the smoke pool: 4 per class
    assert consistency["pool_accuracy"].between(0, 1).all()
    distilled = output_root / "paper_results/smoke/distilled"
    assert {"distilled.npz", "data_card.json"} <= {p.name for p in distilled.iterdir()}
    assert len(list(distilled.glob("grid_*.png"))) == 9

    # A second run reads every stage from the cache and builds nothing.
    stages = {"01_data": ["data"], "02_latent_diffusion": ["autoencoder", "diffusion"],
              "03_synthetic_pool": ["data", "autoencoder", "diffusion", "pool", "classifier"],
              "04_graph_selection": ["data", "pool", "classifier", "embedding", "selection"]}
    for notebook, names in stages.items():
        text = (output_root / f"outputs/smoke/{notebook}.ipynb").read_text()
        assert f"[{names[-1]}] built" in text
    second = run_pipeline()
    assert second.returncode == 0, second.stderr[-3000:]
    for notebook, names in stages.items():
        text = (output_root / f"outputs/smoke/{notebook}.ipynb").read_text()
        assert " built in " not in text, notebook
        for name in names:
            assert f"[{name}] cached result" in text, (notebook, name)
