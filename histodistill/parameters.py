"""Notebook parameters: what each one sets, as plain data, and the checks run before any
notebook does.

A notebook's parameters cell names the few settings a reader tweaks (`NAMED`: each sets one
field of a stage's configuration, or two for `use_shipped_generator`) and ends with
``config``, a dict of ``"stage.field": value`` for every other field of the stages that
notebook configures (`CONFIGURED_BY`). On the command line ``-p ipc 20`` sets a named
parameter and ``-p diffusion.lr 3e-4`` a field through ``config``. Every value is checked
against its field's type and the stage's own checks (its dataclass's ``__post_init__``), so
``-p ipc ten`` or ``-p networks resnet18`` (a string where a tuple is needed) fails at once,
naming the parameter, the value and what is allowed, instead of minutes later inside a
notebook. Parameters that set no field (which class the community map shows, say) are left
to their notebook.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from . import presets

# The notebook that configures (and records) each stage; later notebooks read the recorded one.
CONFIGURED_BY = {
    "data": "01",
    "autoencoder": "02",
    "diffusion": "02",
    "sampling": "03",
    "classifier": "03",
    "guidance_sweep": "03",
    "selection": "04",
    "downstream": "05",
    "evaluation": "05",
    "dm": "05",
    "ablation": "06",
    "privacy": "07",
}

# Named parameter -> the field(s) it sets.
NAMED: dict[str, tuple[str, ...]] = {
    "data_source": ("data.source",),
    "data_path": ("data.path",),
    "image_size": ("data.size",),
    "max_train_per_class": ("data.max_train_per_class",),
    "use_shipped_generator": ("autoencoder.shipped", "diffusion.shipped"),
    "ae_pretrained": ("autoencoder.pretrained",),
    "ae_steps": ("autoencoder.steps",),
    "ldm_steps": ("diffusion.steps",),
    "ldm_hidden_size": ("diffusion.hidden_size",),
    "ldm_depth": ("diffusion.depth",),
    "pool_per_class": ("sampling.per_class",),
    "sampling_steps": ("sampling.steps",),
    "guidance_scale": ("sampling.guidance_scale",),
    "solver": ("sampling.solver",),
    "clf_epochs": ("classifier.epochs",),
    "select_method": ("selection.method",),
    "ipc": ("selection.ipc",),
    "embedding": ("selection.embedding",),
    "graph": ("selection.graph",),
    "rank": ("selection.rank",),
    "privacy_filter": ("selection.privacy_filter",),
    "networks": ("evaluation.networks",),
    "seeds": ("evaluation.seeds",),
    "contrastive": ("evaluation.contrastive",),
    "steps": ("downstream.steps",),
    "ablation_network": ("ablation.network",),
    "ablation_seeds": ("ablation.seeds",),
    "ipcs": ("ablation.ipcs",),
    "planted_noise": ("privacy.planted_noise",),
    "reference_models": ("privacy.reference_models",),
    "max_members": ("privacy.max_members",),
}

CONFIG = "config"  # the parameter holding "stage.field" values


def split_target(key: str) -> tuple[str, str]:
    """``"diffusion.lr"`` -> ``("diffusion", "lr")``; refuses a stage or field that does not exist."""
    stage, dot, field = key.partition(".")
    if not dot or stage not in presets.STAGES:
        raise ValueError(f"{key!r} is not stage.field; stages: {', '.join(sorted(presets.STAGES))}")
    fields = [f.name for f in dataclasses.fields(presets.STAGES[stage])]
    if field not in fields:
        raise ValueError(f"{key!r}: the {stage} configuration has no field {field!r}; its fields: {', '.join(fields)}")
    return stage, field


def as_tuples(value):
    """Papermill and JSON give a tuple back as a list: a tuple again, at any depth."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, list) else value


def stage_values(stage: str, named: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The fields of `stage` that named parameters (``None``: the profile's value) and
    `config` set."""
    given = [(target, named.get(name)) for name, targets in NAMED.items() for target in targets]
    given += list((config or {}).items())
    values = {}
    for target, value in given:
        target_stage, field = split_target(target)
        if target_stage == stage and value is not None:
            values[field] = as_tuples(value)
    return values


def configure(stage: str, profile: str, namespace: dict[str, Any]):
    """The configuration of `stage` under `profile` with a notebook's parameters applied,
    read from `namespace` (the notebook's ``globals()``).

    >>> configure("selection", "demo", {"ipc": 20, "config": {"selection.seed": 3}}).seed
    3
    """
    return presets.stage_config(stage, profile, **stage_values(stage, namespace, namespace.get(CONFIG)))


def _matches(value, hint) -> bool:
    """Whether `value` (as ``-p`` parsed it) fits the annotation `hint`; a list stands for a
    tuple, an int for a float."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (tuple, list)) and all(_matches(v, args[0]) for v in value) if args else True
    return True  # an annotation this check does not know: the stage's own checks decide


NAMES = {int: "a whole number", float: "a number", str: "a text", bool: "True or False", type(None): "None"}
_EXAMPLES = {str: "'convnet'", int: "10", float: "2.0"}


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        element = _describe(typing.get_args(hint)[0]).removeprefix("a ")
        return f"a tuple of {element}s, e.g. ({_EXAMPLES.get(typing.get_args(hint)[0], '...')},)"
    return NAMES.get(hint, str(hint))


def targets(name: str) -> tuple[str, ...]:
    """The ``stage.field`` targets a ``-p`` name sets: a named parameter's, or the name itself
    when it is ``stage.field``; none for a parameter that sets no field."""
    return NAMED.get(name, (name,) if "." in name else ())


def check(profile: str, overrides: dict) -> None:
    """Refuse (SystemExit, one line per bad parameter) overrides that name no field, are of
    the wrong type, or that the stage's configuration rejects; `overrides` maps ``-p`` names
    (named parameters or ``stage.field``) to values."""
    errors, by_stage = [], {}
    for name, value in overrides.items():
        try:
            fields = [split_target(t) for t in targets(name)]
        except ValueError as err:
            errors.append(f"-p {name}: {err}")
            continue
        if value is None:  # None: the profile's value, as in every parameters cell
            continue
        for stage, field in fields:
            hint = typing.get_type_hints(presets.STAGES[stage])[field]
            if not _matches(value, hint):
                errors.append(f"-p {name} {value!r}: sets {stage}.{field}, which takes {_describe(hint)}")
            elif field.endswith("seed") and isinstance(value, int) and value < 0:
                # numpy's SeedSequence, and with it every seeded draw here, needs seeds >= 0.
                errors.append(f"-p {name} {value!r}: sets {stage}.{field}, a seed: a whole number >= 0")
            elif field in by_stage.setdefault(stage, {}):
                errors.append(f"-p {by_stage[stage][field][0]} and -p {name} both set {stage}.{field}; give one")
            else:
                by_stage[stage][field] = (name, as_tuples(value))
    for stage, fields in by_stage.items():
        try:
            presets.stage_config(stage, profile, **{field: v for field, (_, v) in fields.items()})
        except (TypeError, ValueError) as err:
            shown = ", ".join(f"-p {name} {v!r}" for name, v in fields.values())
            errors.append(f"{shown}: {err}")
    if errors:
        raise SystemExit("bad parameter(s); nothing was run:\n  " + "\n  ".join(errors))
