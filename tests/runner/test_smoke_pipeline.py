"""The whole pipeline in the smoke profile, as ./run_all.sh runs it: the exact files it
must produce; and, when nbval runs the notebooks after it on the same cache (as
scripts/test.sh does), that they read every stage back and build nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ABLATIONS = ("contrastive", "selection", "rank", "ipc", "pool_size", "guidance", "privacy_filter")

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
        "03_guidance_sweep.png",
        "03_pool_texture.png",
        "04_community_sizes.png",
        "04_community_map.png",
        "04_distilled_set.png",
        "05_training_budget.png",
        "05_main_results.png",
        "05_paired_differences.png",
        "05_infodist_confusion.png",
        "05_per_class_accuracy.png",
        "05_dm_images.png",
        "05_dm_loss.png",
        "07_distances.png",
        "07_copy_ratios.png",
        "07_attacks.png",
        "07_closest_pairs.png",
    } | {f"06_ablation_{name}.png" for name in ABLATIONS},
    "paper_results/smoke": {
        "data_splits.csv",
        "data_class_counts.csv",
        "autoencoder_reconstruction.csv",
        "autoencoder_texture.csv",
        "guidance_sweep.csv",
        "pool_texture.csv",
        "ldm_training.csv",
        "pool_class_consistency.csv",
        "pool_quality.csv",
        "pool_memorisation.csv",
        "selection_graphs.csv",
        "distilled",  # the exported distilled set (a folder)
        "run_times.csv",
        "training_budget.csv",
        "main_runs.csv",
        "distilled_copy_check.csv",
        "main_table.csv",
        "main_table.md",
        "main_table.tex",
        "paired_differences.csv",
        "paired_differences.md",
        "privacy_audit.csv",
        "privacy_audit.md",
        "privacy_audit_by_class.csv",
    } | {f"ablation_{name}.{ext}" for name in ABLATIONS for ext in ("csv", "md", "tex")}
      | {f"ablation_{name}_paired.{ext}" for name in ABLATIONS for ext in ("csv", "md")}
      | {f"ablation_{name}_val.csv" for name in ABLATIONS},
    "outputs/smoke": {
        "01_data.ipynb",
        "02_latent_diffusion.ipynb",
        "03_synthetic_pool.ipynb",
        "04_graph_selection.ipynb",
        "05_downstream_evaluation.ipynb",
        "06_ablations.ipynb",
        "07_privacy_audit.ipynb",
        "run.json",
    },
}


def run_pipeline():
    # scripts/test.sh names a cache that nbval, run after the unit tests, reads the stages from.
    env = os.environ.copy()
    if os.environ.get("HISTODISTILL_TEST_CACHE"):
        env["HISTODISTILL_CACHE"] = os.environ["HISTODISTILL_TEST_CACHE"]
    return subprocess.run([sys.executable, "-m", "histodistill.runner", "--profile", "smoke"],
                          capture_output=True, text=True, env=env, timeout=600)


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
    notebooks = ["01_data", "02_latent_diffusion", "03_synthetic_pool", "04_graph_selection",
                 "05_downstream_evaluation", "06_ablations", "07_privacy_audit"]
    assert list(pd.read_csv(output_root / "paper_results/smoke/run_times.csv")["notebook"]) == notebooks + ["total"]
    consistency = pd.read_csv(output_root / "paper_results/smoke/pool_class_consistency.csv", index_col="class")
    assert consistency.loc["mean over classes", "n_pool"] == 9 * 4  # the smoke pool: 4 per class
    assert consistency["pool_accuracy"].between(0, 1).all()
    texture = pd.read_csv(output_root / "paper_results/smoke/pool_texture.csv", index_col="class")
    assert len(texture) == 9 + 1 and (texture["texture_ratio"] >= 0).all()
    sweep = pd.read_csv(output_root / "paper_results/smoke/guidance_sweep.csv")
    # The smoke preset's sweep: both solvers at scales 1 and 3.
    assert list(zip(sweep["solver"], sweep["guidance_scale"])) == [
        ("dpmsolver++", 1.0), ("dpmsolver++", 3.0), ("sde-dpmsolver++", 1.0), ("sde-dpmsolver++", 3.0)]
    distilled = output_root / "paper_results/smoke/distilled"
    assert {"distilled.npz", "data_card.json"} <= {p.name for p in distilled.iterdir()}
    assert len(list(distilled.glob("grid_*.png"))) == 9

    # The main table: every row, for both networks, over the smoke profile's 2 seeds.
    main = pd.read_csv(output_root / "paper_results/smoke/main_table.csv")
    rows = ["Full real train set", "Random real", "Random synthetic", "k-means synthetic", "InfoDist (CE)",
            "InfoDist (CE + contrastive)", "Distribution Matching (3 of the paper's 20,000 iterations)"]
    assert list(dict.fromkeys(main["row"])) == rows
    assert set(main["network"]) == {"convnet", "resnet18"} and (main["n_runs"] == 2).all()
    assert main[["acc_mean", "auc_mean", "macro_f1_mean"]].stack().between(0, 1).all()
    assert len(pd.read_csv(output_root / "paper_results/smoke/main_runs.csv")) == len(rows) * 2 * 2
    # Every row but the reference, against InfoDist (CE), per network and metric, with its interval.
    paired = pd.read_csv(output_root / "paper_results/smoke/paired_differences.csv")
    compared = [r for r in rows if r != "InfoDist (CE)"]
    assert list(dict.fromkeys(paired["row"])) == compared and (paired["reference"] == "InfoDist (CE)").all()
    assert len(paired) == len(compared) * 2 * 3 and set(paired["metric"]) == {"acc", "auc", "macro_f1"}
    assert (paired["low"] <= paired["high"]).all() and paired[["diff", "low", "high"]].abs().le(1).all().all()
    assert "95 % interval" in (output_root / "paper_results/smoke/paired_differences.md").read_text()
    ipc = pd.read_csv(output_root / "paper_results/smoke/ablation_ipc.csv")
    assert sorted(ipc["images per class"].unique()) == [1, 2, 4]  # the smoke pool holds 4 per class

    # The privacy audit: every test on every set, the controls among them, and the verdict in
    # the exported set's card.
    audit = pd.read_csv(output_root / "paper_results/smoke/privacy_audit.csv")
    assert {"DCR share", "near-copies", "data-copying C_T", "MIA classifier: loss",
            "MIA classifier: reference models"} <= set(audit["test"])
    assert {"distilled (InfoDist)", "whole pool", "Distribution Matching", "random real (reference)",
            "planted train copies (control)", "the run's generator", "overtrained denoiser (control)",
            "random unseen real (control)", "selected unseen real (control)",
            "unseen vs unseen real (control)"} == set(audit["set"])
    planted = audit[audit["set"] == "planted train copies (control)"]
    assert not planted["passed"].any()  # the planted copies are caught by every distance test
    # The negative controls are audited like a synthetic set, by every test that applies to one.
    negative = audit[audit["role"] == "negative control"]
    unseen = negative[negative["set"] == "random unseen real (control)"]
    assert set(unseen["test"]) == {"DCR share", "near-copies", "data-copying C_T", "MIA classifier: loss",
                                   "MIA classifier: reference models"}
    assert set(negative.loc[negative["set"] == "selected unseen real (control)", "test"]) == {
        "DCR share", "near-copies", "data-copying C_T"}
    versus = audit[audit["test"].str.endswith(" vs selected unseen real")]
    assert set(versus["set"]) == {"distilled (InfoDist)"} and len(versus) == 4  # DCR share and C_T, two spaces
    assert (versus["ci_low"] <= versus["statistic"]).all() and (versus["statistic"] <= versus["ci_high"]).all()
    assert audit.loc[audit["test"] == "near-copies", "carlini_near_copies"].notna().all()
    by_class = pd.read_csv(output_root / "paper_results/smoke/privacy_audit_by_class.csv")
    own = by_class[(by_class["set"] == "distilled (InfoDist)") & (by_class["space"] == "pixels")]
    near = audit[(audit["set"] == "distilled (InfoDist)") & (audit["space"] == "pixels") & (audit["test"] == "near-copies")]
    assert own["images"].sum() == near["n"].item() and own["near_copies"].sum() == near["statistic"].item()
    card = json.loads((distilled / "data_card.json").read_text())
    assert card["audit"]["verdict"] in ("passed", "FAILED") and card["audit"]["tests"] and "where" in card["audit"]

    # The first run built each notebook's own stages (a second run, nbval's, builds none: below).
    stages = {"01_data": "data", "02_latent_diffusion": "diffusion", "03_synthetic_pool": "classifier",
              "04_graph_selection": "selection", "07_privacy_audit": "audit"}
    for notebook, name in stages.items():
        assert f"[{name}] built" in (output_root / f"outputs/smoke/{notebook}.ipynb").read_text(), notebook
    # The budget check trains InfoDist (CE) at 2 and 4 steps (run 0, both networks); its
    # 4-step models are the main table's own, read back from the cache there.
    budget = pd.read_csv(output_root / "paper_results/smoke/training_budget.csv")
    assert sorted(zip(budget["network"], budget["budget"])) == [("convnet", 2), ("convnet", 4),
                                                                ("resnet18", 2), ("resnet18", 4)]
    trained = {"05_downstream_evaluation": "28 models: 26 trained now, 2 read from the cache",
               "06_ablations": "trained now"}
    for notebook, message in trained.items():
        assert message in (output_root / f"outputs/smoke/{notebook}.ipynb").read_text(), notebook


SNAPSHOT = pytest.StashKey[set]()


def cache_entries() -> set[str]:
    """The stage results (stage/key) in the cache the smoke run and nbval share."""
    root = os.environ.get("HISTODISTILL_TEST_CACHE")
    if not root:
        pytest.skip("only under scripts/test.sh, where nbval runs the notebooks on the smoke run's cache")
    return {f"{p.parent.parent.name}/{p.parent.name}" for p in Path(root).glob("*/*/config.json")}


@pytest.mark.before_notebooks
def test_the_notebooks_start_on_the_smoke_runs_cache(request):
    entries = cache_entries()
    smoke_run_selected = any(item.name == test_smoke_pipeline_writes_exactly_its_files.__name__
                             for item in request.session.items)
    if not smoke_run_selected:
        pytest.skip("the smoke run is not among the selected tests: nbval builds the stages itself")
    # Selected, it ran before this test, in this process, on this cache (tests/conftest.py).
    assert entries, "the smoke run left nothing in the cache the notebooks are to read"
    assert {entry.split("/")[0] for entry in entries} >= {"data", "diffusion", "pool", "selection", "model", "audit"}
    request.config.stash[SNAPSHOT] = entries


@pytest.mark.after_notebooks
def test_the_notebooks_read_every_stage_back_and_build_nothing(request):
    """nbval has run every notebook again on the smoke run's cache: a stage whose key were
    not stable (or a model trained again) would be a new result here."""
    before = request.config.stash.get(SNAPSHOT, None)
    if before is None:
        pytest.skip("the snapshot before the notebooks was not taken")
    assert cache_entries() == before
