"""The notebooks as papermill runs them: each jupytext source ``notebooks/NN_*.py`` converted
to a notebook, the parameters its ``parameters`` cell declares, executed in order (or written
out unexecuted, for nbval) with one block naming the cell that failed, and each notebook's wall
time kept in ``paper_results/<run>/run_times.csv``. `runner` decides what runs and with which
parameters.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
import time
from pathlib import Path

from . import paths, progress


KERNEL = "python3"


def notebook_sources(folder: Path | None = None) -> list[Path]:
    """``NN_*.py`` in `folder`, in number order."""
    folder = folder or paths.notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py"))


def to_notebook(source: Path):
    """The jupytext source as an nbformat notebook with a python3 kernelspec."""
    import jupytext

    nb = jupytext.read(source)
    for cell in nb.cells:  # papermill expects every cell to carry a tags list
        cell.metadata.setdefault("tags", [])
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def declared_parameters(nb) -> dict[str, str]:
    """Names and default sources of the assignments in the cell tagged ``parameters``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {
                target.id: ast.get_source_segment(cell.source, node.value)
                for node in tree.body
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
    raise ValueError("notebook has no cell tagged 'parameters'")


def injectable(value):
    """`value` as papermill can inject it: tuples become lists, at any depth. Papermill
    writes a tuple as the *string* of its repr (``"('convnet',)"``), which a notebook's
    ``tuple(networks)`` would split into characters; a list it writes as a list literal, and
    every notebook turns a list parameter back into a tuple."""
    if isinstance(value, (tuple, list)):
        return [injectable(v) for v in value]
    if isinstance(value, dict):
        return {k: injectable(v) for k, v in value.items()}
    return value


def export(items, out_dir: Path) -> list[Path]:
    """Write each notebook, parameters injected, without running it (for nbval)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source, nb, params in items:
        path = out_dir / f"{source.stem}.ipynb"
        nbformat.write(nb, path)
        nb = parameterize_notebook(load_notebook_node(str(path)), params, kernel_name=KERNEL)
        nbformat.write(nb, path)
        written.append(path)
    return written


def execute(items, out_dir: Path, run_name: str) -> list[tuple[str, float]]:
    """Run each notebook in order; stop at the first failure with its name and error."""
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    if not sys.stderr.isatty():  # no progress bar: stream each cell's output instead
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        os.environ[progress.MODE_VARIABLE] = "lines"  # inherited by the kernels: bars print lines
        for handler in logging.getLogger().handlers:
            handler.addFilter(_PapermillChatter())
    times = []
    for source, nb, params in items:
        input_path = out_dir / f".{source.stem}.input.ipynb"
        output_path = out_dir / f"{source.stem}.ipynb"
        nbformat.write(nb, input_path)
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        print(f"\n=== {source.stem}  ({shown})", flush=True)
        started = time.perf_counter()
        try:
            pm.execute_notebook(
                str(input_path),
                str(output_path),
                parameters=params,
                kernel_name=KERNEL,
                cwd=str(paths.project_root()),
                progress_bar=sys.stderr.isatty(),
                log_output=not sys.stderr.isatty(),
                # The kernel's own log (its unencrypted-TCP warning, the socket errors it
                # prints when shut down mid-cell) is noise here; cell errors still come back.
                extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            )
        except KeyboardInterrupt:
            # One line, not the kernel client's traceback: what stopped, and that the cached
            # stages (and the diffusion checkpoints) are kept for the next run.
            elapsed = time.perf_counter() - started
            print(f"\ninterrupted in {source.name} after {elapsed:.1f} s; finished stages stay cached, "
                  f"the same command resumes", file=sys.stderr)
            raise SystemExit(130) from None
        except pm.PapermillExecutionError as err:
            elapsed = time.perf_counter() - started
            first_line = next((line for line in err.source.splitlines() if line.strip()), "")
            print(
                f"\nFAILED {source.name} after {elapsed:.1f} s, in code cell [{err.exec_count}] "
                f"(cell {_failing_cell_number(output_path, err)} of the executed notebook): {first_line[:80]}\n"
                f"  {err.ename}: {err.evalue}\n"
                f"The executed notebook with the full traceback: {output_path}",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        finally:
            input_path.unlink(missing_ok=True)
        elapsed = time.perf_counter() - started
        times.append((source.stem, elapsed))
        print(f"=== {source.stem} done in {elapsed:.1f} s", flush=True)
    return times


def _failing_cell_number(notebook: Path, err) -> int:
    """The failing cell's 1-based position in the executed notebook as written, where
    papermill has added an error banner at the top and an anchor before the failing cell
    (its own `cell_index` counts without them): the code cell carrying the error output."""
    try:
        import nbformat

        cells = nbformat.read(notebook, as_version=4).cells
        for number, cell in enumerate(cells, start=1):
            if cell.cell_type == "code" and any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
                return number
    except Exception:  # an unreadable notebook: fall back to papermill's own count
        pass
    return err.cell_index + 1


class _PapermillChatter(logging.Filter):
    """Drops papermill's own lines (the notebook paths, "Executing Cell 7----", "Ending Cell
    7----") from the streamed log; the cells' output, which shows each stage's progress,
    stays, and a failure's block follows it directly."""

    PREFIXES = ("Input Notebook", "Output Notebook", "Working directory", "Executing notebook with kernel",
                "Executing Cell", "Ending Cell")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.PREFIXES)


def write_times(times: list[tuple[str, float]], profile: str, run_name: str) -> Path:
    """Record each notebook's wall time in ``paper_results/<run>/run_times.csv``.

    Rows of notebooks not run this time (``--only``) are kept with the time and date of
    their own last run, so re-running one notebook does not erase what the others took;
    ``total`` is the sum of the rows."""
    import pandas as pd

    path = paths.results_dir(run_name) / "run_times.csv"
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    new = pd.DataFrame([(name, round(sec, 1), finished) for name, sec in times], columns=["notebook", "seconds", "finished"])
    old = pd.read_csv(path) if path.is_file() else None
    if old is not None and set(old.columns) >= {"profile", *new.columns} and (old["profile"] == profile).all():
        old = old[(old["notebook"] != "total") & ~old["notebook"].isin(new["notebook"])]
        new = pd.concat([old[new.columns], new], ignore_index=True)
    table = new.sort_values("notebook", ignore_index=True)
    table.loc[len(table)] = ["total", round(table["seconds"].sum(), 1), finished]
    table.insert(0, "profile", profile)
    table.to_csv(path, index=False)
    print("\n" + table.to_string(index=False))
    return path
