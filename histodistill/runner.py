"""Run every numbered notebook in order with papermill (what ``./run_all.sh`` calls).

    python -m histodistill.runner --profile smoke --only 01 02 --run-name seed1 -p data.seed 1   # parameters
    python -m histodistill.runner --profile smoke --export DIR   # parameterised .ipynb, not run
    python -m histodistill.runner --run-name mine --compare-to demo   # then check against demo
    python -m histodistill.runner --run-name mine --distill ~/patches  # own images to a shareable set

Notebooks are the jupytext sources ``notebooks/NN_*.py``; each is converted to ``.ipynb``
on the fly, given ``profile`` (and ``run_name``) plus every ``-p`` override that its
``parameters`` cell declares or that sets a field of a stage it configures (``-p
diffusion.lr 3e-4``, in its ``config``; `parameters`), executed (`notebook_runs`), and written
to ``outputs/<run_name>/``. The run stops at the first failing notebook, naming it and the error. Times go to the terminal
and to ``paper_results/<run_name>/run_times.csv``. With ``--compare-to NAME`` the run's
tables are then compared with those of ``paper_results/NAME/`` (`compare.compare_runs`).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from . import notebook_runs, parameters, paths, run_record
from .presets import PROFILES

# A run name becomes a folder in figures/, paper_results/ and outputs/: a plain name only.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_value(text: str):
    """``-p`` values: Python literals (``64``, ``0.5``, ``None``, ``'x'``), else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    sources = notebook_runs.notebook_sources(folder)
    if only:
        sources = [s for s in sources if any(s.name.startswith(o) for o in only)]
    if not sources:
        raise SystemExit(f"no notebook to run in {folder or paths.notebooks_dir()} (--only {only})")
    named, fields = split_overrides(overrides)
    parameters.check(profile, {**named, **fields})
    items, used = [], set()
    for source in sources:
        nb = notebook_runs.to_notebook(source)
        declared = notebook_runs.declared_parameters(nb)
        params = {"profile": profile, "run_name": run_name or profile, **named}
        params = {k: notebook_runs.injectable(v) for k, v in params.items() if k in declared}
        own = {k: v for k, v in fields.items() if parameters.CONFIGURED_BY[k.partition(".")[0]] == source.name[:2]}
        if own and parameters.CONFIG in declared:
            params[parameters.CONFIG] = notebook_runs.injectable(own)
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
    recorded = run_record.recorded_profile(run_name)
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
        for path in notebook_runs.export(items, args.export):
            print(path)
        return
    times = notebook_runs.execute(items, paths.executed_notebooks_dir(run_name), run_name)
    notebook_runs.write_times(times, args.profile, run_name)
    if args.compare_to:
        from . import compare

        compare.compare_runs(run_name, args.compare_to)
    if args.distill:
        from . import summary

        print("\n" + summary.shareable_set(run_name))


if __name__ == "__main__":
    main()
