"""Shared fixtures. Every test writes under its own temporary output root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from histodistill import cache, machine


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test processes side by side, one per CPU (scripts/test.sh): each computes on one thread,
    # as processes with a thread per CPU each would fight over the CPUs. Set before any test
    # imports torch; the runner and the notebooks' kernels inherit it.
    os.environ.setdefault(machine.THREADS_VARIABLE, "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SMOKE_PIPELINE = "test_smoke_pipeline.py"


def on_the_smoke_runs_cache(nodeid: str) -> bool:
    """The smoke run's tests and nbval's notebook cells, which run on the cache it builds."""
    return nodeid.split("::")[0].endswith((SMOKE_PIPELINE, ".ipynb"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With test processes side by side (pytest-xdist), the smoke run and the notebooks after it
    form one unit of work, run in order by one process, while the others take the unit tests
    one by one. It is the largest unit, so it starts first."""
    from xdist.scheduler import LoadScopeScheduling

    class SmokeRunTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "smoke run and notebooks" if on_the_smoke_runs_cache(nodeid) else nodeid

    return SmokeRunTogether(config, log)


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `before_notebooks` / `after_notebooks` go right before and after nbval's
    notebook cells (scripts/test.sh collects the notebooks after the tests); without
    notebooks they stay where they are and skip themselves."""
    notebook = [item for item in items if item.path.suffix == ".ipynb"]
    if not notebook:
        return
    before = [item for item in items if item.get_closest_marker("before_notebooks")]
    after = [item for item in items if item.get_closest_marker("after_notebooks")]
    moved = {id(item) for item in notebook + before + after}
    items[:] = [item for item in items if id(item) not in moved] + before + notebook + after


@pytest.fixture(autouse=True)
def output_root(tmp_path, monkeypatch) -> Path:
    """Send figures, tables and the cache of every test to a fresh folder."""
    root = tmp_path / "out"
    monkeypatch.setenv("HISTODISTILL_OUTPUT_ROOT", str(root))
    monkeypatch.delenv("HISTODISTILL_CACHE", raising=False)
    return root


def make_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """Distinct random uint8 RGB images (N, size, size, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def balanced_labels(n: int, n_classes: int) -> np.ndarray:
    return np.arange(n) % n_classes


def row_keys(images) -> list[bytes]:
    """Each image's bytes: to compare sets of images regardless of order."""
    return [img.tobytes() for img in images]


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def runs_nothing(monkeypatch):
    """The runner with its notebooks stubbed out: returns the run names it would have run."""
    from histodistill import notebook_runs

    ran = []
    monkeypatch.setattr(notebook_runs, "execute", lambda items, out_dir, run_name: ran.append(run_name) or [])
    monkeypatch.setattr(notebook_runs, "write_times", lambda times, profile, run_name: None)
    return ran


def overwrite_in_place(path: Path, offset: int, payload: bytes) -> None:
    """Overwrite bytes of `path` in place (same size), keeping its mtime, and forget this
    process's memo of content digests, as the next run (a new process) starts without it."""
    stat = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        assert fh.read(len(payload)) != payload  # the bytes really change
        fh.seek(offset)
        fh.write(payload)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    cache._DIGESTS.clear()
