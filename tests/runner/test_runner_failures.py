"""What a failing or interrupted notebook prints through the runner, and the JupyterLab
launcher's settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from histodistill import notebook_runs, paths, runner

ROOT = Path(__file__).resolve().parents[2]


# --- noise: the runner's failure and interrupt blocks ---------------------------------------------

# Stands in for the kernel: papermill's real execute_notebook (parameters, its execution
# manager's logging, its error cells and PapermillExecutionError) runs around it; each code
# cell "runs" in order, a cell starting with `raise` fails, one starting with `interrupt`
# is stopped by Ctrl-C, and every other cell's output is logged as papermill logs it.
FAKE_KERNEL = textwrap.dedent('''
    import logging

    import nbformat
    from papermill.engines import Engine, papermill_engines

    class FakeKernel(Engine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            count = 0
            for index, cell in enumerate(nb_man.nb.cells):
                try:
                    nb_man.cell_start(cell, index)
                    if cell.cell_type != "code":
                        continue
                    count += 1
                    cell.execution_count = count
                    if cell.source.startswith("interrupt"):
                        raise KeyboardInterrupt
                    if cell.source.startswith("raise"):
                        cell.outputs = [nbformat.v4.new_output(
                            "error", ename="ValueError", evalue="boom in the third code cell",
                            traceback=["Traceback (most recent call last)", "ValueError: boom in the third code cell"])]
                        nb_man.cell_exception(cell, cell_index=index)
                        break
                    if kwargs.get("log_output"):
                        logging.getLogger("papermill").info(f"output of code cell {count}")
                finally:
                    nb_man.cell_complete(cell, cell_index=index)

    papermill_engines.register(None, FakeKernel)
''')

FAILING_NOTEBOOK = textwrap.dedent('''\
    # %% tags=["parameters"]
    profile = "demo"  # profile

    # %% [markdown]
    # A markdown cell between the code cells.

    # %%
    x = 1

    # %%
    raise ValueError('boom in the third code cell')

    # %%
    y = 2
''')


def notebooks(tmp_path, **named_sources) -> Path:
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name, text in named_sources.items():
        (folder / f"{name}.py").write_text(text)
    return folder


@pytest.fixture
def fake_kernel(monkeypatch):
    """FAKE_KERNEL in this process, with the terminal's path through `notebook_runs.execute` (the
    log path would configure logging and the environment for the whole test session)."""
    from papermill.engines import papermill_engines

    monkeypatch.setitem(papermill_engines._engines, None, papermill_engines.get_engine(None))
    exec(FAKE_KERNEL, {})
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


def test_the_failed_block_follows_the_cell_output_without_chatter(tmp_path):
    """Through `python -m histodistill.runner` with its output a pipe (its log path: papermill's
    log streamed, its chatter filtered), the fake kernel in place of a real one."""
    folder = notebooks(tmp_path, **{"01_fails": FAILING_NOTEBOOK, "02_never": '# %% tags=["parameters"]\n'
                                    'profile = "demo"  # profile\n\n# %%\nz = 3\n'})
    code = FAKE_KERNEL + "\nfrom histodistill import runner\nrunner.main()\n"
    result = subprocess.run(
        [sys.executable, "-c", code, "--profile", "smoke", "--notebooks", str(folder), "--run-name", "fails"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    err = result.stderr
    for chatter in ("Executing Cell", "Ending Cell", "Input Notebook", "Output Notebook", "Working directory",
                    "Executing notebook with kernel"):
        assert chatter not in err + result.stdout, chatter
    lines = err.strip().splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED "))
    # The cells' own output stays in the log, and the FAILED block follows it directly (after one blank line).
    assert lines[:failed] == ["output of code cell 1", "output of code cell 2", "output of code cell 3", ""]
    assert re.fullmatch(r"FAILED 01_fails\.py after \d+\.\d s, in code cell \[4\] \(cell \d+ of the executed "
                        r"notebook\): raise ValueError\('boom in the third code cell'\)", lines[failed])
    assert lines[failed + 1:] == [
        "  ValueError: boom in the third code cell",
        f"The executed notebook with the full traceback: {paths.executed_notebooks_dir('fails') / '01_fails.ipynb'}"]
    assert "02_never" not in result.stdout  # the run stopped at the failure


def test_the_failed_block_cell_number_points_into_the_written_notebook(tmp_path, fake_kernel, capsys):
    import nbformat

    folder = notebooks(tmp_path, **{"01_fails": FAILING_NOTEBOOK})
    out_dir = paths.executed_notebooks_dir("fails")
    with pytest.raises(SystemExit) as stopped:
        notebook_runs.execute(runner.plan("smoke", {}, "fails", folder=folder), out_dir, "fails")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    code_cell, cell = map(int, re.search(r"in code cell \[(\d+)\] \(cell (\d+) of the executed notebook\)", err).groups())
    written = nbformat.read(out_dir / "01_fails.ipynb", as_version=4)
    failing = next(c for c in written.cells if c.cell_type == "code" and c.source.startswith("raise ValueError"))
    assert failing.execution_count == code_cell == 4  # "In [4]" in JupyterLab: right
    assert written.cells[cell - 1] is failing or written.cells[cell - 1].source == failing.source, (
        f"cell {cell} of {out_dir / '01_fails.ipynb'} is {written.cells[cell - 1].source[:40]!r}; the failing cell is "
        f"cell {written.cells.index(failing) + 1}")


def test_an_interrupt_is_exactly_one_line_and_exit_130(tmp_path, fake_kernel, capsys):
    folder = notebooks(tmp_path, **{"01_slow": '# %% tags=["parameters"]\nprofile = "demo"  # profile\n\n'
                                               '# %%\ninterrupt_here = True\n'})
    out_dir = paths.executed_notebooks_dir("slow")
    with pytest.raises(SystemExit) as stopped:
        notebook_runs.execute(runner.plan("smoke", {}, "slow", folder=folder), out_dir, "slow")
    assert stopped.value.code == 130
    assert stopped.value.__suppress_context__  # no KeyboardInterrupt traceback chained to it
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Executing" not in line]
    assert len(err_lines) == 1, err_lines
    assert re.fullmatch(r"interrupted in 01_slow\.py after \d+\.\d s; finished stages stay cached, the same "
                        r"command resumes", err_lines[0])
    assert not (out_dir / ".01_slow.input.ipynb").exists()


# --- JupyterLab ---------------------------------------------------------------------------------


def test_lab_sh_makes_jupytext_notebook_the_default_viewer_and_serves_with_the_projects_manager(tmp_path):
    """scripts/lab.sh, run in a copy of the repository with its setup stubbed (no install)
    and a `jupyter` that only records its arguments."""
    repo, venv, home, bin_dir = tmp_path / "repo", tmp_path / "venv", tmp_path / "home", tmp_path / "bin"
    for folder in (repo / "scripts", venv, home, bin_dir):
        folder.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "lab.sh", repo / "scripts" / "lab.sh")
    (repo / "scripts" / "setup.sh").write_text(f'export VIRTUAL_ENV="{venv}"\nexport PATH="{bin_dir}:$PATH"\n')
    (bin_dir / "jupyter").write_text(f'#!/usr/bin/env bash\necho "$PWD $*" > "{tmp_path}/jupyter-called"\n')
    (bin_dir / "jupyter").chmod(0o755)
    result = subprocess.run(["bash", str(repo / "scripts" / "lab.sh"), "--no-browser"], capture_output=True,
                            text=True, env={**os.environ, "HOME": str(home)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "jupyter-called").read_text().strip() == (
        f"{repo} lab --ServerApp.contents_manager_class=histodistill.lab_contents.NotebookContents --no-browser")
    overrides = json.loads((venv / "share" / "jupyter" / "lab" / "settings" / "overrides.json").read_text())
    assert overrides == {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}
    assert list(home.iterdir()) == []  # the user's own settings are not touched

