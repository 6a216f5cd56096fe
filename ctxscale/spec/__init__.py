"""Sweep specs: YAML files validated against one typed schema per experiment.

`load_spec(path)` returns the spec object or raises `SpecError` with one message that names the
file and the offending field. Nothing is written and Ray is not started while loading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import yaml
from pydantic import ValidationError

from .common import Grid, Resources, SpecError
from .gpt import GPTSpec
from .measure import MeasureSpec
from .parity import ParitySpec
from .synthetic import SyntheticSpec

EXPERIMENTS: dict[str, type] = {"synthetic": SyntheticSpec, "gpt": GPTSpec, "measure": MeasureSpec,
                               "parity": ParitySpec}

AnySpec = Union[SyntheticSpec, GPTSpec, MeasureSpec, ParitySpec]

__all__ = ["AnySpec", "EXPERIMENTS", "Grid", "Resources", "SpecError", "load_spec", "parse_spec"]


def _field_path(loc: tuple) -> str:
    # pydantic puts the model name of tagged unions / validators in loc; keep only real keys
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


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
            message = "unknown key"
        # cross-field checks have no location of their own; their message names the fields
        where = _field_path(first["loc"])
        raise SpecError(f"{source}: {where + ': ' if where else ''}{message}{more}") from None


def load_spec(path: str | Path) -> AnySpec:
    """Read and validate a sweep spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_spec(raw, str(path))
