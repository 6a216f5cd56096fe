"""Sweep specs: YAML files validated against one typed schema per experiment.

`load_spec(path, overrides)` returns the spec object or raises `SpecError` with one message that
names the file and the offending field; dotted overrides (`training.lr=1e-3`) are merged first. Nothing is written and Ray is not started while loading.
"""
from __future__ import annotations

import copy
import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Sequence, Union

import yaml
from pydantic import BaseModel, ValidationError

from .common import Grid, Resources, SpecError
from .gpt import GPTSpec
from .measure import MeasureSpec
from .parity import ParitySpec
from .synthetic import SyntheticSpec

EXPERIMENTS: dict[str, type] = {"synthetic": SyntheticSpec, "gpt": GPTSpec, "measure": MeasureSpec,
                               "parity": ParitySpec}

AnySpec = Union[SyntheticSpec, GPTSpec, MeasureSpec, ParitySpec]

__all__ = ["AnySpec", "EXPERIMENTS", "Grid", "Resources", "SpecError", "apply_overrides", "load_spec", "parse_spec"]


def _field_path(loc: tuple) -> str:
    # pydantic puts the model name of tagged unions / validators in loc; keep only real keys
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def _did_you_mean(model: type, loc: tuple) -> str:
    """' (did you mean `lr`?)' where an unknown key at `loc` is a near miss of a field of its section."""
    *sections, key = [str(part) for part in loc]
    for part in sections:  # parts that name no field (a union member's tag) leave the model as it is
        field = getattr(model, "model_fields", {}).get(part)
        if field is not None:
            model = next((t for t in (field.annotation, *typing.get_args(field.annotation))
                          if isinstance(t, type) and issubclass(t, BaseModel)), None)
    close = difflib.get_close_matches(key, list(getattr(model, "model_fields", {})), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def parse_spec(raw: object, source: str = "spec") -> AnySpec:
    """Validate an already-parsed mapping (e.g. from YAML) and return the typed spec."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping, got {type(raw).__name__}")
    experiment = raw.get("experiment")
    if experiment is None:
        raise SpecError(f"{source}: experiment: required (one of {sorted(EXPERIMENTS)})")
    if experiment not in EXPERIMENTS:
        raise SpecError(f"{source}: experiment: unknown experiment {experiment!r} (one of {sorted(EXPERIMENTS)})")
    try:
        return EXPERIMENTS[experiment].model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        if first["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(EXPERIMENTS[experiment], first["loc"])
        # cross-field checks have no location of their own; their message names the fields
        where = _field_path(first["loc"])
        raise SpecError(f"{source}: {where + ': ' if where else ''}{message}{more}") from None


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(raw: object, overrides: Sequence[str], source: str = "spec") -> object:
    """`raw` with dotted `key=value` overrides merged in (values read as YAML), before validation.

    >>> apply_overrides({"training": {"lr": 0.01}}, ["training.lr=1e-3", "grid.seed=[0, 1]", "name=x"])
    {'training': {'lr': 0.001}, 'grid': {'seed': [0, 1]}, 'name': 'x'}
    """
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        return raw  # parse_spec says what is wrong with it
    merged = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"{source}: override {override!r}: expected key=value with a dotted key, "
                            "e.g. training.lr=1e-3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"{source}: override {override!r}: not a YAML value ({str(err).splitlines()[0]})") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as text; a user means the number
        *parents, leaf = key.split(".")
        section = merged
        for depth, part in enumerate(parents):
            section = section.setdefault(part, {}) if isinstance(section, dict) else None
            if not isinstance(section, dict):
                where = ".".join(parents[:depth + 1])
                raise SpecError(f"{source}: override {override!r}: {where} is not a section")
        section[leaf] = value
    return merged


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> AnySpec:
    """Read and validate a sweep spec file (`-`: from standard input), with dotted `key=value`
    overrides merged in before validation, so the stored config and `config_hash` reflect them."""
    if str(path) == "-":
        source, text = "<stdin>", sys.stdin.read()
    else:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: spec file not found")
        source, text = str(path), path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    if overrides:
        raw = apply_overrides(raw, overrides, source)
        source = f"{source} with {' '.join(overrides)}"
    return parse_spec(raw, source)
