"""The spec reference (docs/specs.md), generated from the pydantic models so it cannot drift.

`python -m ctxscale.spec_reference > docs/specs.md` writes it: for each experiment, its spec's
sections and, in each section, every field's type, constraints, default and description.
tests/test_docs.py regenerates it and fails when the file in the repository differs.
"""
from __future__ import annotations

import json
import sys
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .spec import EXPERIMENTS

COMMAND = "python -m ctxscale.spec_reference > docs/specs.md"

HEADER = f"""# Spec reference

Generated from the pydantic models in `ctxscale/spec/` by `{COMMAND}`;
do not edit it by hand (`tests/test_docs.py` fails when it is out of date).

A spec is a YAML file with `name`, `experiment` and a `grid` whose cross product is the sweep's
grid points, plus the experiment's sections. Every key below may be left out unless its default
says *required*. Dotted overrides after the spec on the command line
(`ctxscale sweep sweeps/synthetic.yaml training.lr=2e-3 'grid.seed=[0,1,2]'`) are merged before
validation. An unknown key, a wrong type or a value out of range is one line naming the file and
the field, exit status 2, before anything runs. How to choose the settings:
[experiments.md](experiments.md); `resources` on a cluster: [gpu-and-clusters.md](gpu-and-clusters.md).
"""

_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section_of(annotation):
    """The section class a field holds (also through Optional), or None for a plain value."""
    if _is_section(annotation):
        return annotation
    inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(inner) == 1 and _is_section(inner[0]):
        return inner[0]
    return None


def type_name(annotation) -> str:
    """A YAML reader's name for a field's type: `int`, `list of float`, `'a' or 'b'`, `null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(f"'{value}'" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if _is_section(annotation):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field) -> str:
    """Bounds and patterns pydantic enforces on a field, in words (`≥ 1`, `pattern ^[a-z]+$`)."""
    parts = []
    for item in field.metadata:
        for attr, sign in _BOUNDS:
            if getattr(item, attr, None) is not None:
                parts.append(f"{sign} {getattr(item, attr)}")
        if getattr(item, "pattern", None):
            parts.append(f"pattern `{item.pattern}`")
    return ", ".join(parts)


def default_text(field) -> str:
    if field.is_required():
        return "*required*"
    if field.default_factory is not None:
        return "(section defaults)"
    if field.default is PydanticUndefined:
        return ""
    value = field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(cls) -> str:
    # a class's own docstring only: Section's would otherwise stand for every section without one
    return " ".join((cls.__dict__.get("__doc__") or "").split())


def section_table(cls, path: str) -> tuple[list[str], list[tuple[type, str]]]:
    """The markdown table of one section's plain fields, and the (class, dotted path) of its sub-sections."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    subsections = []
    for name, field in cls.model_fields.items():
        key = f"{path}.{name}" if path else name
        section = _section_of(field.annotation)
        if section is not None:
            subsections.append((section, key))
            continue
        kind = type_name(field.annotation)
        bounds = constraints(field)
        kind = f"{kind}, {bounds}" if bounds else kind
        description = field.description or ("the experiment's name" if name == "experiment" else "")
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default_text(field))} | {_cell(description)} |")
    return lines, subsections


def _github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.strip().replace(" ", "-")


def experiment_reference(experiment: str, spec_cls, anchors: dict) -> list[str]:
    """One experiment's part: its top-level keys, then each section (depth first) under its dotted path.

    A section class already documented under an earlier experiment (`resources`, `tracking`) is a
    link to it, so a shared section is read in one place; `anchors` maps each documented class to
    its heading's fragment.
    """
    out = [f"## `experiment: {experiment}`", ""]
    if _doc(spec_cls):
        out += [_doc(spec_cls), ""]
    pending = [(spec_cls, "")]
    while pending:
        cls, path = pending.pop(0)
        if path and cls in anchors:
            out += [f"`{path}`: the same section as [above](#{anchors[cls]}).", ""]
            continue
        table, subsections = section_table(cls, path)
        if path:
            heading = f"{experiment}: `{path}`"
            anchors[cls] = _github_anchor(heading)
            out += [f"### {heading}", ""]
            if _doc(cls):
                out += [_doc(cls), ""]
        if len(table) > 2:
            out += table + [""]
        pending = subsections + pending
    return out


def reference() -> str:
    lines = HEADER.splitlines() + [""]
    lines += ["Experiments: " + ", ".join(f"[`{name}`](#experiment-{name})" for name in EXPERIMENTS) + ".", ""]
    anchors: dict = {}
    for experiment, spec_cls in EXPERIMENTS.items():
        lines += experiment_reference(experiment, spec_cls, anchors)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
