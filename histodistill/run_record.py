"""How notebooks find each other's results: the run record, and everything earlier
notebooks produced, loaded in one call.

Every notebook records the configurations it resolved in ``outputs/<run_name>/run.json``
(`record`); a later notebook reads its upstream stages' configurations from there instead of
asking for their parameters again (`upstream`). So notebook 03 samples from exactly the model
notebook 02 trained, on exactly the data notebook 01 prepared, and (with the cache) gets them
back instantly. `load` brings back a whole run up to notebook 04's selection:

    >>> up = run_record.load("demo", "demo")            # data, autoencoder, LDM, pool, classifier
    >>> up.select(method="kmeans")                # a selection stage like notebook 04's, changed
    >>> up.pool_subset(50)                        # the first 50 pool images of every class

Every stage is read from the cache when its result exists, so loading costs seconds. A stage
a notebook has not recorded raises `RunError` naming the notebook to run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache, parameters, paths, presets
from .generate.config import SamplingConfig
from .select.config import SelectionConfig
from .data import dataset
from .data.dataset import DataBundle
from .generate import stages
from .select import distill
from .classifiers import judge

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
        if stage not in presets.STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {sorted(presets.STAGES)}")
        data["stages"][stage] = cache.to_dict(cfg)
    cache.write_json_atomic(path, data)


def upstream(run_name: str, profile: str, stage: str):
    """The configuration `stage` ran with in this run, as its dataclass."""
    data = _read(run_name)
    notebook = f"notebook {parameters.CONFIGURED_BY[stage]}"
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
    # JSON turns tuples into lists; the frozen dataclasses hash and compare tuples.
    fields = {k: parameters.as_tuples(v) for k, v in data["stages"][stage].items()}
    return presets.STAGES[stage](**fields)


def upstream_or_preset(run_name: str, profile: str, stage: str):
    """The configuration `stage` ran with in this run or, when its notebook has not run in
    this run (``./run_all.sh --distill`` skips notebook 05), the profile's preset: what that
    notebook would have used, said in one line."""
    data = _read(run_name)
    if data is not None and data["profile"] == profile and stage not in data["stages"]:
        print(f"run {run_name!r} has not run notebook {parameters.CONFIGURED_BY[stage]}: {stage} takes the {profile} profile's preset")
        return presets.stage_config(stage, profile)
    return upstream(run_name, profile, stage)




def recorded_profile(run_name: str) -> str | None:
    """The profile run `run_name` was recorded with, or None when it has no record."""
    return (_read(run_name) or {}).get("profile")


def _read(run_name: str) -> dict | None:
    path = paths.output_root() / "outputs" / run_name / RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Upstream:
    run_name: str
    profile: str
    bundle: DataBundle
    autoencoder: cache.Artifact
    diffusion: cache.Artifact
    sampling_cfg: SamplingConfig
    pool: cache.Artifact
    classifier: cache.Artifact
    selection_cfg: SelectionConfig | None  # None when loaded for notebook 04 itself

    def select(self, pool: cache.Artifact | None = None, **changes) -> cache.Artifact:
        """The selection stage with notebook 04's configuration, `changes` applied, on
        `pool` (default: the run's pool)."""
        cfg = dataclasses.replace(self.selection_cfg, **changes)
        return distill.distill(cfg, pool or self.pool, self.classifier, real_data=self.bundle.meta["source"],
                               bundle=self.bundle)

    def sample(self, **changes) -> cache.Artifact:
        """Another pool from the run's diffusion model (e.g. another guidance scale)."""
        return stages.sample_pool(dataclasses.replace(self.sampling_cfg, **changes), self.diffusion)

    def pool_subset(self, per_class: int) -> cache.Artifact:
        return stages.pool_subset(self.pool, per_class)


def load(run_name: str, profile: str, with_selection: bool = True, cache_root: Path | None = None) -> Upstream:
    """The run's stages up to and including notebook 04's selection configuration (up to
    the pool and the classifier with `with_selection` False, as notebook 04 needs)."""
    stages_needed = ["data", "autoencoder", "diffusion", "sampling", "classifier"] + ["selection"] * with_selection
    cfgs = {stage: upstream(run_name, profile, stage) for stage in stages_needed}
    bundle = dataset.prepare_data(cfgs["data"], cache_root)
    vae = stages.fit_autoencoder(cfgs["autoencoder"], bundle, cache_root=cache_root)
    ldm = stages.fit_diffusion(cfgs["diffusion"], vae, bundle, cache_root=cache_root)
    pool = stages.sample_pool(cfgs["sampling"], ldm, cache_root=cache_root)
    clf = judge.fit_classifier(cfgs["classifier"], bundle, cache_root=cache_root)
    return Upstream(run_name, profile, bundle, vae, ldm, cfgs["sampling"], pool, clf, cfgs.get("selection"))
