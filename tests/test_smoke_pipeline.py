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
    },
    "paper_results/smoke": {
        "data_splits.csv",
        "data_class_counts.csv",
        "run_times.csv",
    },
    "outputs/smoke": {
        "01_data.ipynb",
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
    assert list(pd.read_csv(output_root / "paper_results/smoke/run_times.csv")["notebook"]) == ["01_data", "total"]

    executed = output_root / "outputs/smoke/01_data.ipynb"
    assert "[data] built" in executed.read_text()
    second = run_pipeline()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[data] cached result" in executed.read_text()
    assert "[data] built" not in executed.read_text()
