"""The run record: which configuration each stage of a run used.

Every notebook records the configurations it resolved in ``outputs/<run_name>/run.json``;
a later notebook reads its upstream stages' configurations from there instead of asking
for their parameters again. So notebook 03 samples from exactly the model notebook 02
trained, on exactly the data notebook 01 prepared, and (with the cache) gets them back
instantly.
"""

from __future__ import annotations

import json
from typing import Any

from . import cache, config, paths

RECORD_FILE = "run.json"


class RunError(Exception):
    """A notebook needs an upstream stage that this run has not recorded."""


def record(run_name: str, profile: str, **stage_configs: Any) -> None:
    """Store the resolved configuration of each named stage under this run."""
    path = paths.executed_notebooks_dir(run_name) / RECORD_FILE
    data = _read(run_name) or {"profile": profile, "stages": {}}
    if data["profile"] != profile:
        # A run name reused with another profile: the old record describes another run.
        data = {"profile": profile, "stages": {}}
    for stage, cfg in stage_configs.items():
        if stage not in config.STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {sorted(config.STAGES)}")
        data["stages"][stage] = config.to_dict(cfg)
    cache.write_json_atomic(path, data)


def upstream(run_name: str, profile: str, stage: str):
    """The configuration `stage` ran with in this run, as its dataclass."""
    data = _read(run_name)
    notebook = NOTEBOOK_OF.get(stage, "the notebook that runs it")
    if data is None or stage not in data["stages"]:
        raise RunError(
            f"run {run_name!r} has no recorded {stage!r} stage: run {notebook} first with "
            f"run_name={run_name!r} (it is instant when cached), or ./run_all.sh"
        )
    if data["profile"] != profile:
        raise RunError(
            f"run {run_name!r} was recorded with profile {data['profile']!r}, not {profile!r}; "
            f"use another run_name or re-run {notebook} with profile {profile!r}"
        )
    fields = dict(data["stages"][stage])
    cls = config.STAGES[stage]
    # JSON turns tuples into lists; the frozen dataclasses hash and compare tuples.
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return cls(**fields)


NOTEBOOK_OF = {
    "data": "01_data",
    "autoencoder": "02_latent_diffusion",
    "diffusion": "02_latent_diffusion",
    "sampling": "03_synthetic_pool",
    "guidance_sweep": "03_synthetic_pool",
    "classifier": "03_synthetic_pool",
    "selection": "04_graph_selection",
    "downstream": "05_downstream_evaluation",
    "evaluation": "05_downstream_evaluation",
    "dm": "05_downstream_evaluation",
    "ablation": "06_ablations",
}


def recorded_profile(run_name: str) -> str | None:
    """The profile run `run_name` was recorded with, or None when it has no record."""
    return (_read(run_name) or {}).get("profile")


def _read(run_name: str) -> dict | None:
    path = paths.output_root() / "outputs" / run_name / RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
