"""Notebook parameters, checked before anything runs.

Each ``-p NAME VALUE`` override is matched to the configuration field it sets, read from the
notebooks' own ``presets.stage_config("stage", profile, field=NAME, ...)`` and
``presets.from_parameters("stage", profile, globals(), "prefix_", ...)`` calls, and checked
against that field's type and the stage's own checks (its dataclass's ``__post_init__``). So
``-p ipc ten`` or ``-p networks resnet18`` (a string where a tuple is needed) fails at once,
naming the parameter, the value and what is allowed, instead of minutes later inside a
notebook. Parameters that set no stage field (e.g. which network's confusion matrix to show)
are left to their notebook.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path

from . import presets


def field_map(notebooks: list[tuple[Path, set[str], str]]) -> dict[str, set[tuple[str, str]]]:
    """parameter -> {(stage, field), ...}, from each notebook's (source, declared parameters,
    code): a keyword of a ``stage_config`` or ``from_parameters`` call whose value uses
    exactly one declared parameter, and for ``from_parameters`` every declared parameter
    named its prefix + a field of the stage (a name two notebooks use for different fields
    maps to both)."""
    mapping: dict[str, set[tuple[str, str]]] = {}
    for _, declared, code in notebooks:
        for node in ast.walk(ast.parse(code)):
            kind = getattr(node.func, "attr", "") if isinstance(node, ast.Call) else ""
            if kind not in ("stage_config", "from_parameters"):
                continue
            stage = node.args[0].value
            if kind == "from_parameters":
                prefix = node.args[3].value
                fields = {f.name for f in dataclasses.fields(presets.STAGES[stage])}
                for name in declared:
                    if name.startswith(prefix) and name[len(prefix):] in fields:
                        mapping.setdefault(name, set()).add((stage, name[len(prefix):]))
            for keyword in node.keywords:
                used = {n.id for n in ast.walk(keyword.value) if isinstance(n, ast.Name)} & declared
                if len(used) == 1:
                    mapping.setdefault(used.pop(), set()).add((stage, keyword.arg))
    return mapping


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


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        element = _describe(typing.get_args(hint)[0]).removeprefix("a ")
        return f"a tuple of {element}s, e.g. ({_EXAMPLES.get(typing.get_args(hint)[0], '...')},)"
    return NAMES.get(hint, str(hint))


_EXAMPLES = {str: "'convnet'", int: "10", float: "2.0"}


def check(profile: str, overrides: dict, notebooks: list[tuple[Path, set[str], str]]) -> None:
    """Refuse (SystemExit, one line per bad parameter) overrides of the wrong type or that
    the stage's configuration rejects; `notebooks` as for `field_map`."""
    mapping = field_map(notebooks)
    errors, by_stage = [], {}
    for name, value in overrides.items():
        if value is None:  # None: the profile's value, as in every parameters cell
            continue
        for stage, field in sorted(mapping.get(name, ())):
            hint = typing.get_type_hints(presets.STAGES[stage])[field]
            if not _matches(value, hint):
                errors.append(f"-p {name} {value!r}: sets {stage}.{field}, which takes {_describe(hint)}")
            elif field.endswith("seed") and isinstance(value, int) and value < 0:
                # numpy's SeedSequence, and with it every seeded draw here, needs seeds >= 0.
                errors.append(f"-p {name} {value!r}: sets {stage}.{field}, a seed: a whole number >= 0")
            else:
                by_stage.setdefault(stage, {})[field] = (name, tuple(value) if isinstance(value, list) else value)
    for stage, fields in by_stage.items():
        try:
            presets.stage_config(stage, profile, **{field: v for field, (_, v) in fields.items()})
        except (TypeError, ValueError) as err:
            shown = ", ".join(f"-p {name} {v!r}" for name, v in fields.values())
            errors.append(f"{shown}: {err}")
    if errors:
        raise SystemExit("bad parameter(s); nothing was run:\n  " + "\n  ".join(errors))
