"""A run's results folder read back (``paper_results/<run>/``): a table or the exported set's
data card, and, for a file that is not there, one line naming the notebook that writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import paths


CARD = "distilled/data_card.json"


class MissingOutput(Exception):
    """A file a summary needs is not in the run's results folder."""


def folder(run_name: str) -> Path:
    # Not paths.results_dir: reading must not create the folder of a run that never ran.
    return paths.output_root() / "paper_results" / run_name


def result_path(run_name: str, name: str, notebook: str) -> Path:
    path = folder(run_name) / name
    if not path.is_file():
        raise MissingOutput(f"No {name} in paper_results/{run_name}/: run notebook {notebook} "
                            f"for run '{run_name}' first.")
    return path


def read_table(run_name: str, name: str, notebook: str) -> pd.DataFrame:
    return pd.read_csv(result_path(run_name, name, notebook))


def read_card(run_name: str) -> dict:
    return json.loads(result_path(run_name, CARD, "04").read_text())


def shown(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (as the README writes it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
