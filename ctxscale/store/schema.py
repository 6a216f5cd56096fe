"""The explicit Arrow schema of every stored table, per experiment: every row has every column,
null where unknown (a trial that failed before its first report included), so a reader that takes
its schema from one file (`pyarrow.dataset`, DuckDB, polars) gets the same columns as pandas.

Beside the resolved spec as JSON (`config`), a trials row carries the spec flat, one column per
field, `config.<section>.<field>`, typed from the spec's pydantic model (lists and mixed unions as
JSON text), as Ray Tune's own DataFrames do with `config/...`. Columns an experiment reports that
are not listed here are kept with the type their values have (a column of nulls as text), after
the listed ones.
"""
from __future__ import annotations

import functools
import json
import types
import typing
from typing import Any, Iterable, Optional

import pyarrow as pa

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
TIME = pa.timestamp("us", tz="UTC")

_PROVENANCE = {f"{name}_version": STR for name in ("ctxscale", "ray", "torch", "numpy", "pandas", "pyarrow", "python")} | {
    "host": STR, "platform": STR, "cpu_count": I64, "gpu_name": STR, "gpu_count": I64}
_KEYS = {"sweep": STR, "trial_id": STR}
_OUTCOME = {"experiment": STR, "status": STR, "error": STR, "config_hash": STR, "config": STR, "finished_at": TIME}

# what the training loops report per evaluation (history) and in their final report (trials)
_TRAINING = {"context_length": I64, "data_size": I64, "seed": I64, "status": STR, "best_val_loss": F64,
             "final_train_loss": F64, "train_loss": F64, "val_loss": F64, "wall_s": F64, "samples_per_s": F64,
             "world_size": I64}
_REPORTS = {
    "synthetic": _TRAINING | {"epoch": I64, "best_epoch": I64, "bayes_risk": F64, "string_length": I64,
                              "tasks": STR, "task_val_loss": STR},
    "gpt": _TRAINING | {"step": I64, "epoch": F64, "best_epoch": F64, "best_step": I64, "tokens_seen": I64,
                        "lr": F64, "tokens_per_s": F64, "mfu": F64, "tokens_per_step": I64, "micro_batch": I64,
                        "accumulation": I64, "num_params": I64},
    "measure": {"model": STR, "context_length": I64, "wall_s": F64},
    # one model per (data size, seed); its context lengths are rows of `ce` and `spectra`
    "parity": {"data_size": I64, "seed": I64, "status": STR, "epoch": I64, "train_loss": F64, "lr": F64,
               "elapsed_s": F64, "final_train_loss": F64, "mean_abs_gap": F64, "max_abs_gap": F64, "steps": I64,
               "wall_s": F64, "train_wall_s": F64, "samples_per_s": F64, "n_params": I64},
}
# the history has no grid coordinates of its own (the trials row has them): only the evaluation's numbers
_NOT_IN_HISTORY = ("context_length", "data_size", "seed", "model")


def _spec_type(experiment: str) -> Optional[type]:
    from ..spec.gpt import GPTSpec
    from ..spec.measure import MeasureSpec
    from ..spec.parity import ParitySpec
    from ..spec.synthetic import SyntheticSpec

    return {"synthetic": SyntheticSpec, "gpt": GPTSpec, "measure": MeasureSpec, "parity": ParitySpec}.get(experiment)


def _arrow_type(annotation) -> pa.DataType:
    """A spec field's column type: Optional[X] is X; bool, int, float are themselves; everything
    else (str, Literal, lists, unions of different kinds) is text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _arrow_type(args[0])
    return {bool: BOOL, int: I64, float: F64}.get(annotation, STR)


def _config_fields(model, prefix: str = "config.") -> dict[str, pa.DataType]:
    from pydantic import BaseModel

    fields = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            fields |= _config_fields(kind, f"{prefix}{name}.")
        else:
            fields[prefix + name] = _arrow_type(kind)
    return fields


@functools.cache
def declared(table: str, experiment: Optional[str]) -> pa.Schema:
    """The listed columns of `table` for rows of `experiment` (None: the columns every table has)."""
    reports = _REPORTS.get(experiment, {})
    if table == "trials":
        spec_type = _spec_type(experiment) if experiment else None
        config = _config_fields(spec_type) if spec_type is not None else {}
        columns = _KEYS | _OUTCOME | reports | _PROVENANCE | config
    elif table == "history":
        columns = _KEYS | {"config_hash": STR} | {k: v for k, v in reports.items() if k not in _NOT_IN_HISTORY}
    else:
        columns = {}
    return pa.schema(list(columns.items()))


def flat_config(config: dict, prefix: str = "config.") -> dict[str, Any]:
    """A resolved spec as flat columns: nested sections joined by dots, lists as JSON text."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat_config(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _column(values: list, kind: pa.DataType, name: str) -> pa.Array:
    if kind == STR:
        values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    try:
        return pa.array(values, type=kind, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        try:  # an integral float for an int column, an int for a float one: exact casts only
            return pa.array(values, from_pandas=True).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            raise TypeError(f"stored column {name!r}: values {values[:3]} are not {kind} ({err})") from None


def to_table(rows: list[dict], table: str, experiment: Optional[str] = None) -> pa.Table:
    """Rows as an Arrow table in the declared schema of their table and experiment (default: the
    one the rows name), then any columns not declared, in the order they first appear."""
    experiment = experiment or next((r.get("experiment") for r in rows if r.get("experiment")), None)
    schema = declared(table, experiment)
    extra: dict[str, None] = {}
    for row in rows:
        extra |= dict.fromkeys(k for k in row if schema.get_field_index(k) < 0)
    arrays, fields = [], []
    for field in schema:
        arrays.append(_column([row.get(field.name) for row in rows], field.type, field.name))
        fields.append(field)
    for name in extra:
        # a column of nulls keeps Arrow's null type: a reader promotes it to the type that other
        # files give the column (text would not merge with their numbers)
        array = pa.array([row.get(name) for row in rows], from_pandas=True)
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def reading_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for files written at different times: the declared columns of the experiments
    named in the files' metadata, then every other column any of them has (first type wins; a
    column only of nulls so far stays of null type)."""
    schemas = list(schemas)
    out: dict[str, pa.DataType] = {}
    for schema in schemas:
        meta = schema.metadata or {}
        table, experiment = meta.get(b"ctxscale.table"), meta.get(b"ctxscale.experiment")
        if table:
            for field in declared(table.decode(), experiment.decode() if experiment else None):
                out.setdefault(field.name, field.type)
    for schema in schemas:
        for field in schema:
            if out.get(field.name) is None or pa.types.is_null(out[field.name]):
                out[field.name] = field.type
    return pa.schema(list(out.items()))  # still null: the reader takes the type the rows have


def with_metadata(data: pa.Table, table: str, experiment: Optional[str]) -> pa.Table:
    """Name the table and experiment in the file, so a reader finds the declared schema without
    reading any row."""
    meta = {b"ctxscale.table": table.encode()}
    if experiment:
        meta[b"ctxscale.experiment"] = experiment.encode()
    return data.replace_schema_metadata(meta)

