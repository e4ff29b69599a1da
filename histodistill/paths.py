"""Where the project reads notebooks from and writes figures, tables and caches.

Defaults are folders of the repository. Two environment variables move them, which is how
the tests run the pipeline without touching the committed results:

- ``HISTODISTILL_OUTPUT_ROOT``: parent of ``figures/``, ``paper_results/``, ``outputs/``
  and (unless ``HISTODISTILL_CACHE`` says otherwise) ``.cache/``.
- ``HISTODISTILL_CACHE``: the artifact cache alone.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def project_root() -> Path:
    """The repository (the folder holding ``notebooks/``), or the working directory."""
    repo = PACKAGE_DIR.parent
    return repo if (repo / "notebooks").is_dir() else Path.cwd()


def output_root() -> Path:
    env = os.environ.get("HISTODISTILL_OUTPUT_ROOT")
    return Path(env).expanduser().resolve() if env else project_root()


def cache_dir() -> Path:
    env = os.environ.get("HISTODISTILL_CACHE")
    return Path(env).expanduser().resolve() if env else output_root() / ".cache"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def figures_dir(run_name: str) -> Path:
    """``figures/<run_name>/``, created on demand."""
    path = output_root() / "figures" / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(run_name: str) -> Path:
    """``paper_results/<run_name>/``, created on demand."""
    path = output_root() / "paper_results" / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def executed_notebooks_dir(run_name: str) -> Path:
    """``outputs/<run_name>/``: executed notebooks (never committed)."""
    path = output_root() / "outputs" / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path
