"""Comparing a fresh run's tables with a reference run's (`compare`, ``--compare-to``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from histodistill import compare, notebook_runs, paths, runner

PAIRED = ["row", "network", "metric", "reference", "n_runs", "n_test", "diff", "low", "high", "excludes_zero"]


def main_runs(accuracies: dict[str, list[float]]) -> pd.DataFrame:
    """Runs of main_runs.csv's shape: per row, one line per seed with these accuracies (auc
    and macro F1 follow the accuracy)."""
    lines = [{"row": row, "network": "convnet", "seed": seed, "variant": None, "ipc": 10, "n_train": 90,
              "acc": acc, "auc": acc + 0.3, "macro_f1": acc - 0.05, "best_epoch": 10, "model_key": "k"}
             for row, accs in accuracies.items() for seed, acc in enumerate(accs)]
    return pd.DataFrame(lines)


def write_run(folder, tables: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(folder / name, index=False)


@pytest.fixture
def runs(tmp_path):
    """A reference run and a fresh one, differing as a run on another machine might, and more."""
    reference, fresh = tmp_path / "reference", tmp_path / "fresh"
    write_run(reference, {
        "main_runs.csv": main_runs({"A": [0.50, 0.52, 0.54], "B": [0.30, 0.31, 0.32], "C": [0.4, 0.4, 0.4]}),
        "paired_differences.csv": pd.DataFrame(
            [["A", "convnet", "acc", "InfoDist", 3, 100, 0.02, -0.01, 0.05, False],
             ["B", "convnet", "acc", "InfoDist", 3, 100, 0.02, -0.01, 0.05, False]], columns=PAIRED),
        "ablation_other_paired.csv": pd.DataFrame({"variant": ["x"], "value": [1.0]}),
        "pool_quality.csv": pd.DataFrame({"class": ["adipose", "mucus"], "n_pool": [64, 71],
                                          "fd_pool_vs_val": [100.0, 50.0]}),
        "autoencoder_reconstruction.csv": pd.DataFrame({"autoencoder": ["shipped"], "latent shape": ["4x28x28"],
                                                        "mae": [4.0], "psnr_db": [30.0]}),
        "ldm_training.csv": pd.DataFrame({"stage": ["diffusion"], "steps": [100], "final loss": [0.06],
                                          "training seconds": [3987.0]}),
        "guidance_sweep.csv": pd.DataFrame({"solver": ["dpmsolver++"], "guidance_scale": [2.0], "recall": [0.6]}),
    })
    write_run(fresh, {
        "main_runs.csv": main_runs({"A": [0.51, 0.53, 0.55], "B": [0.60, 0.61, 0.62], "D": [0.1, 0.2]}),
        "paired_differences.csv": pd.DataFrame(
            [["A", "convnet", "acc", "InfoDist", 3, 100, 0.03, 0.0, 0.06, True],
             ["B", "convnet", "acc", "InfoDist", 3, 100, 0.09, 0.06, 0.12, True]], columns=PAIRED),
        "ablation_other_paired.csv": pd.DataFrame({"variant": ["x"], "value": [2.0]}),
        "ablation_ipc_paired.csv": pd.DataFrame(
            [["IPC 1", "convnet", "acc", "IPC 10", 3, 100, 0.1, 0.0, 0.2, True]], columns=["variant", *PAIRED[1:]]),
        "pool_quality.csv": pd.DataFrame({"class": ["mucus", "adipose"], "n_pool": [71, 64],
                                          "fd_pool_vs_val": [50.0, 101.0]}),
        "autoencoder_reconstruction.csv": pd.DataFrame({"autoencoder": ["shipped"], "latent shape": ["4x28x28"],
                                                        "mae": [4.0], "psnr_db": [30.0]}),
        "ldm_training.csv": pd.DataFrame({"stage": ["diffusion"], "steps": [100], "final loss": [0.066],
                                          "training seconds": [1000.0]}),
    })
    return fresh, reference


def one(frame: pd.DataFrame, **where) -> pd.Series:
    """The single line of `frame` with these column values."""
    for column, value in where.items():
        frame = frame[frame[column] == value]
    assert len(frame) == 1, where
    return frame.iloc[0]



def test_a_fresh_mean_inside_the_reference_interval_is_inside(runs):
    result = compare.compare_folders(*runs)
    a = one(result, table="main_table.csv", row="A | convnet", column="acc_mean")
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)  # std of 0.50, 0.52, 0.54 is 0.02
    assert a["reference"] == pytest.approx(0.52) and a["fresh"] == pytest.approx(0.53)
    assert a["reference_low"] == pytest.approx(0.52 - half) and a["reference_high"] == pytest.approx(0.52 + half)
    assert a["difference"] == pytest.approx(0.01) and a["verdict"] == "inside"
    assert set(result[(result["table"] == "main_table.csv") & result["row"].eq("A | convnet")]["column"]) == {
        "acc_mean", "auc_mean", "macro_f1_mean"}


def test_a_fresh_mean_far_away_is_outside(runs):
    b = one(compare.compare_folders(*runs), table="main_table.csv", row="B | convnet", column="acc_mean")
    assert b["fresh"] == pytest.approx(0.61) and b["reference_high"] < 0.4
    assert b["verdict"] == "outside"


def test_rows_of_one_run_only_are_reported_not_misaligned(runs):
    result = compare.compare_folders(*runs)
    main = result[result["table"] == "main_table.csv"]
    assert set(main[main["row"] == "C | convnet"]["verdict"]) == {"missing in fresh"}
    assert set(main[main["row"] == "D | convnet"]["verdict"]) == {"missing in reference"}
    assert main[main["row"] == "D | convnet"]["reference"].isna().all()
    # Runs that agree exactly: a zero-wide interval, not none.
    c = one(main, row="C | convnet", column="acc_mean")
    assert c["reference_low"] == pytest.approx(0.4) and c["reference_high"] == pytest.approx(0.4)


def test_paired_differences_use_the_reference_interval(runs):
    result = compare.compare_folders(*runs)
    paired = result[result["table"] == "paired_differences.csv"].set_index("row")
    assert list(paired.index) == ["A | convnet | acc | InfoDist", "B | convnet | acc | InfoDist"]
    assert (paired["column"] == "diff").all()
    assert paired["reference_low"].tolist() == [-0.01, -0.01] and paired["reference_high"].tolist() == [0.05, 0.05]
    assert paired["verdict"].tolist() == ["inside", "outside"]
    assert paired["difference"].tolist() == pytest.approx([0.01, 0.07])


def test_tables_without_an_interval_give_the_relative_difference(runs):
    result = compare.compare_folders(*runs)
    pool = result[result["table"] == "pool_quality.csv"]
    assert set(pool["verdict"]) == {"no interval"} and pool["reference_low"].isna().all()
    fd = one(pool, row="adipose", column="fd_pool_vs_val")  # matched by class, not by position
    assert fd["fresh"] == 101.0 and fd["relative_difference"] == pytest.approx(0.01)
    assert one(pool, row="mucus", column="n_pool")["relative_difference"] == 0.0
    assert set(result[result["table"] == "autoencoder_reconstruction.csv"]["column"]) == {"mae", "psnr_db"}
    ldm = result[result["table"] == "ldm_training.csv"]  # wall times measure the machine: left out
    assert set(ldm["column"]) == {"steps", "final loss"}
    assert one(ldm, column="final loss")["relative_difference"] == pytest.approx(0.1)


def test_files_of_one_run_only_are_noted_once_and_other_tables_skipped(runs):
    result = compare.compare_folders(*runs)
    assert one(result, table="guidance_sweep.csv")["verdict"] == "file missing in fresh"
    assert one(result, table="ablation_ipc_paired.csv")["verdict"] == "file missing in reference"
    assert "ablation_other_paired.csv" not in set(result["table"])  # not a paired table: skipped
    counts, text = compare.summarise(result)
    assert counts.loc["main_table.csv", "inside"] == 3 and counts.loc["paired_differences.csv", "outside"] == 1
    assert "outside: main_table.csv B | convnet acc_mean" in text
    assert "largest relative difference without an interval: 0.1 (ldm_training.csv" in text


def test_the_command_line_writes_the_comparison_next_to_the_fresh_run(runs, output_root, capsys):
    fresh, reference = runs
    (output_root / "paper_results").mkdir(parents=True)
    fresh.rename(output_root / "paper_results" / "mine")
    reference.rename(output_root / "paper_results" / "demo")
    compare.main(["mine", "demo"])
    written = pd.read_csv(output_root / "paper_results" / "mine" / "comparison_to_demo.csv")
    assert list(written.columns) == compare.COLUMNS and "outside" in set(written["verdict"])
    assert "mine compared with demo" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not exist"):
        compare.main(["mine", "nowhere"])


@pytest.fixture
def nothing_runs(monkeypatch):
    """The runner's notebooks, replaced by a failure: a refusal must come first."""
    def fail(*args, **kwargs):
        raise AssertionError("ran before refusing")

    monkeypatch.setattr(notebook_runs, "execute", fail)


def test_the_runner_refuses_to_compare_a_run_with_itself(output_root, nothing_runs):
    (output_root / "paper_results" / "demo").mkdir(parents=True)
    with pytest.raises(SystemExit, match="--compare-to demo names this run itself"):
        runner.main(["--profile", "demo", "--only", "01", "--compare-to", "demo"])
    with pytest.raises(SystemExit, match="names this run itself"):
        runner.main(["--run-name", "mine", "--only", "01", "--compare-to", "mine"])


def test_the_runner_refuses_a_reference_that_does_not_exist(output_root, nothing_runs):
    with pytest.raises(SystemExit, match="paper_results/nowhere does not exist"):
        runner.main(["--run-name", "mine", "--only", "01", "--compare-to", "nowhere"])
    assert not (output_root / "paper_results" / "nowhere").exists()


def test_the_runner_compares_after_running(runs, output_root, monkeypatch):
    fresh, reference = runs
    (output_root / "paper_results").mkdir(parents=True)
    reference.rename(output_root / "paper_results" / "demo")

    def execute(items, out_dir, run_name):  # stands in for the notebooks: they write the tables
        for table in fresh.iterdir():
            (paths.results_dir(run_name) / table.name).write_bytes(table.read_bytes())
        return [("01_data", 1.0)]

    monkeypatch.setattr(notebook_runs, "execute", execute)
    runner.main(["--run-name", "mine", "--only", "01", "--compare-to", "demo"])
    written = pd.read_csv(output_root / "paper_results" / "mine" / "comparison_to_demo.csv")
    assert one(written, table="main_table.csv", row="A | convnet", column="acc_mean")["verdict"] == "inside"
