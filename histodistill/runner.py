"""Run every numbered notebook in order with papermill (what ``./run_all.sh`` calls).

    python -m histodistill.runner --profile smoke --only 01 02 --run-name seed1 -p data.seed 1   # parameters
    python -m histodistill.runner --profile smoke --export DIR   # parameterised .ipynb, not run
    python -m histodistill.runner --run-name mine --compare-to demo   # then check against demo
    python -m histodistill.runner --run-name mine --distill ~/patches  # own images to a shareable set

Notebooks are the jupytext sources ``notebooks/NN_*.py``; each is converted to ``.ipynb``
on the fly, given ``profile`` (and ``run_name``) plus every ``-p`` override that its
``parameters`` cell declares or that sets a field of a stage it configures (``-p
diffusion.lr 3e-4``, in its ``config``; `parameters`), executed, and written to ``outputs/<run_name>/``. The run
stops at the first failing notebook, naming it and the error. Times go to the terminal
and to ``paper_results/<run_name>/run_times.csv``. With ``--compare-to NAME`` the run's
tables are then compared with those of ``paper_results/NAME/`` (`compare.compare_runs`).
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import sys
import time
from pathlib import Path

from . import parameters, paths, progress, runs
from .presets import PROFILES

KERNEL = "python3"
# A run name becomes a folder in figures/, paper_results/ and outputs/: a plain name only.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def parse_value(text: str):
    """``-p`` values: Python literals (``64``, ``0.5``, ``None``, ``'x'``), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    """``-p`` overrides as (named parameters, ``{"stage.field": value}``): a dotted name and the
    entries of a ``-p config "{...}"`` go to the second, the notebooks' ``config``."""
    named = {k: v for k, v in overrides.items() if "." not in k and k != parameters.CONFIG}
    fields = dict(overrides.get(parameters.CONFIG) or {})
    fields.update({k: v for k, v in overrides.items() if "." in k})
    return named, fields


def plan(profile: str, overrides: dict, run_name: str | None, only: list[str] | None = None,
         folder: Path | None = None, optional: frozenset = frozenset()):
    """(source, notebook, parameters) for each notebook to run; checks every override fits
    the configuration field it sets (`parameters.check`) and (but those in `optional`) goes
    to a notebook that runs: a named one declared by its parameters cell, a ``stage.field``
    one in the ``config`` of the notebook configuring that stage. So a typo or a wrong value
    fails before anything runs."""
    sources = notebook_sources(folder)
    if only:
        sources = [s for s in sources if any(s.name.startswith(o) for o in only)]
    if not sources:
        raise SystemExit(f"no notebook to run in {folder or paths.notebooks_dir()} (--only {only})")
    named, fields = split_overrides(overrides)
    parameters.check(profile, {**named, **fields})
    items, used = [], set()
    for source in sources:
        nb = to_notebook(source)
        declared = declared_parameters(nb)
        params = {"profile": profile, "run_name": run_name or profile, **named}
        params = {k: injectable(v) for k, v in params.items() if k in declared}
        own = {k: v for k, v in fields.items() if parameters.CONFIGURED_BY[k.partition(".")[0]] == source.name[:2]}
        if own and parameters.CONFIG in declared:
            params[parameters.CONFIG] = injectable(own)
            used.update(own)
        used.update(params)
        items.append((source, nb, params))
    unused = sorted(set(named) - used - optional)
    if unused:
        raise SystemExit(f"no notebook declares the parameter(s) {unused}; check the spelling")
    skipped = sorted(set(fields) - used - optional)
    if skipped:
        raise SystemExit("not run here: " + "; ".join(
            f"-p {k} sets a field of notebook {parameters.CONFIGURED_BY[k.partition('.')[0]]}'s stage" for k in skipped)
            + (f" (--only {' '.join(only)})" if only else ""))
    return items


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


def check_run_name(run_name: str) -> None:
    """Refuse a run name that is not a plain folder name (a separator or ``..`` would write
    outside figures/, paper_results/ and outputs/)."""
    if not RUN_NAME.fullmatch(run_name) or ".." in run_name:
        raise SystemExit(f"run name {run_name!r} is not a plain folder name: use letters, digits, '.', '_' "
                         f"and '-' (no '/', no '..'), e.g. --run-name mine")


# Parameters that change how the work is spread over processes (GPUs), not what it computes:
# a run that sets only these still writes the profile's own results.
EXECUTION_PARAMETERS = frozenset({"processes"})

# What ``--distill`` runs: the data, the generator, the pool, the selection and its audit.
# Notebook 05's comparison and 06's ablations do not change the shareable set.
DISTILL_NOTEBOOKS = ("01", "02", "03", "04", "07")
SAMPLER_FROM_VAL = "sampler_from_val"  # notebook 03's parameter


def check_destination(profile: str, run_name: str, named: bool, overrides: dict) -> None:
    """Refuse, before anything runs, to write over results that belong to another run: an
    unnamed run with ``-p`` overrides would write into the profile's own folders (for demo,
    the results committed in the repository), and a run named after another profile, or
    recorded with another one, would mix its tables with that profile's."""
    changes = sorted(set(overrides) - EXECUTION_PARAMETERS)
    if not named and changes:
        committed = ", the results committed in the repository" if profile == "demo" else ""
        raise SystemExit(f"-p {', '.join(changes)} changes the {profile} profile, and an unnamed run writes "
                         f"into figures/{profile}/ and paper_results/{profile}/{committed}; name this run "
                         f"(--run-name NAME) or pass --overwrite to replace them")
    if run_name in PROFILES and run_name != profile:
        raise SystemExit(f"run name {run_name!r} is the {run_name} profile's own folder, but this run uses profile "
                         f"{profile!r}; choose another --run-name (or --overwrite)")
    recorded = runs.recorded_profile(run_name)
    if recorded not in (None, profile):
        raise SystemExit(f"run {run_name!r} holds results of profile {recorded!r} (outputs/{run_name}/run.json), "
                         f"not {profile!r}; choose another --run-name (or --overwrite)")


def distill_overrides(data: str, overrides: dict) -> dict:
    """The parameters ``--distill PATH`` sets, under any given with ``-p``: the images (a
    class-folder root or a MedMNIST-layout ``.npz``) and the sampler chosen on val."""
    path = Path(data).expanduser()
    if not path.exists():
        raise SystemExit(f"--distill {data}: no such folder or file; give a folder with one sub-folder of images "
                         f"per class, or an .npz in MedMNIST layout (docs/data.md)")
    if path.is_file() and path.suffix != ".npz":
        raise SystemExit(f"--distill {data}: a file, but not an .npz; give a folder with one sub-folder of "
                         f"images per class, or an .npz in MedMNIST layout (docs/data.md)")
    return {"data_source": "folder" if path.is_dir() else "npz", "data_path": str(path.resolve()),
            SAMPLER_FROM_VAL: True, **overrides}


def prepare(argv: list[str] | None = None):
    """Parse a command line and check it as far as can be done without running anything:
    the run name and where it writes, every ``-p`` against the notebooks and the
    configurations they set, ``--compare-to`` and ``--distill``'s data. Returns (arguments,
    run name, the notebooks with their parameters); refuses with SystemExit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", choices=PROFILES)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a notebook parameter (repeatable)")
    parser.add_argument("--run-name", help="output folder name under figures/ and paper_results/ (default: the profile)")
    parser.add_argument("--only", nargs="+", help="run only notebooks whose names start with these")
    parser.add_argument("--notebooks", type=Path, help="folder of NN_*.py notebooks (default: notebooks/)")
    parser.add_argument("--export", type=Path, metavar="DIR", help="write parameterised .ipynb to DIR and stop")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into the run's folders even when they hold another run's results")
    parser.add_argument("--compare-to", metavar="NAME",
                        help="afterwards, compare the run's tables with paper_results/NAME/ (e.g. demo)")
    parser.add_argument("--distill", metavar="PATH",
                        help="your images (class folders or an .npz) to a shareable distilled set and its audit: "
                             f"notebooks {', '.join(DISTILL_NOTEBOOKS)}, the sampler chosen on val; needs --run-name")
    args = parser.parse_args(argv)

    overrides = {name: parse_value(value) for name, value in args.parameter}
    named = args.run_name or overrides.pop("run_name", None)
    if args.distill:
        if not named:
            raise SystemExit("--distill needs a run name for its outputs, e.g. --run-name mine (results go to "
                             "paper_results/mine/, the shareable set to paper_results/mine/distilled/)")
        overrides = distill_overrides(args.distill, overrides)
        args.only = args.only or list(DISTILL_NOTEBOOKS)
    run_name = named or args.profile
    check_run_name(run_name)
    if not args.export and not args.overwrite:
        check_destination(args.profile, run_name, bool(named), overrides)
    if args.compare_to:  # refused before anything runs, not after an hour of notebooks
        from . import compare

        if args.export:
            raise SystemExit("--compare-to needs a run; --export runs nothing")
        if args.compare_to == run_name:
            raise SystemExit(f"--compare-to {args.compare_to} names this run itself, whose results the run "
                             f"overwrites; choose another --run-name")
        compare.run_folder(args.compare_to)
    # --distill's own parameters may fall outside an --only that skips their notebooks.
    optional = frozenset({"data_source", "data_path", SAMPLER_FROM_VAL}) if args.distill else frozenset()
    items = plan(args.profile, overrides, run_name, args.only, args.notebooks, optional)
    return args, run_name, items


def main(argv: list[str] | None = None) -> None:
    args, run_name, items = prepare(argv)
    if args.export:
        for path in export(items, args.export):
            print(path)
        return
    times = execute(items, paths.executed_notebooks_dir(run_name), run_name)
    write_times(times, args.profile, run_name)
    if args.compare_to:
        from . import compare

        compare.compare_runs(run_name, args.compare_to)
    if args.distill:
        from . import summary

        print("\n" + summary.shareable_set(run_name))


if __name__ == "__main__":
    main()
