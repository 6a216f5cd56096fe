"""The explicit Arrow schema of the stored tables: every row has every column, null where unknown
(a trial that failed before its first report included), so a reader that takes its schema from
one file (`pyarrow.dataset`, DuckDB, polars) gets the same columns as pandas.

The store knows the columns every trials row has (keys, outcome, provenance); an experiment
declares the rest (`ctxscale.experiments`): the columns its loop reports, and its spec's model,
whose fields become one column each, `config.<section>.<field>` (lists and mixed unions as JSON
text), as Ray Tune's own DataFrames do with `config/...`; `trials_schema` and `history_schema`
make the schemas from them, and the writers take them. Columns a row has that are not declared
are kept with the type their values have (a column of nulls as text), after the declared ones.
Every file carries its schema, so a reader needs nothing but the files.
"""
from __future__ import annotations

import json
import types
import typing
from typing import Any, Iterable, Optional

import pyarrow as pa

from ..provenance import VERSION_KEYS

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
TIME = pa.timestamp("us", tz="UTC")

# where a row ran: what `ctxscale.provenance.provenance()` reports (tests hold the two together)
PROVENANCE = {key: STR for key in VERSION_KEYS} | {
    "host": STR, "platform": STR, "cpu_count": I64, "gpu_name": STR, "gpu_count": I64}
_KEYS = {"sweep": STR, "trial_id": STR}
_OUTCOME = {"experiment": STR, "status": STR, "error": STR, "config_hash": STR, "config": STR, "finished_at": TIME}

# the history has no grid coordinates of its own (the trials row has them): only the evaluation's numbers
_NOT_IN_HISTORY = ("context_length", "data_size", "seed", "model")


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


def trials_schema(reported: dict[str, pa.DataType], config_model: Optional[type] = None) -> pa.Schema:
    """The declared columns of a trials row: keys, outcome, what the experiment reports, provenance,
    then one column per field of `config_model` (a pydantic model: the experiment's spec)."""
    config = _config_fields(config_model) if config_model is not None else {}
    return pa.schema(list((_KEYS | _OUTCOME | reported | PROVENANCE | config).items()))


def history_schema(reported: dict[str, pa.DataType]) -> pa.Schema:
    """The declared columns of a history row: keys, config hash, what the experiment reports per
    evaluation (its coordinates are in the trials row)."""
    columns = _KEYS | {"config_hash": STR} | {k: v for k, v in reported.items() if k not in _NOT_IN_HISTORY}
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


def to_table(rows: list[dict], declared: Optional[pa.Schema] = None) -> pa.Table:
    """Rows as an Arrow table in the `declared` schema, then any columns not declared, in the
    order they first appear."""
    schema = declared if declared is not None else pa.schema([])
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
    """One schema for files written at different times: every column any of them has, in the order
    they first appear (the first non-null type wins; a column only of nulls so far stays of null
    type). A file written with a declared schema has all of its columns, typed."""
    out: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema:
            if out.get(field.name) is None or pa.types.is_null(out[field.name]):
                out[field.name] = field.type
    return pa.schema(list(out.items()))  # still null: the reader takes the type the rows have


def with_metadata(data: pa.Table, table: str, experiment: Optional[str]) -> pa.Table:
    """Name the table and experiment in the file, so a reader can tell what it holds without
    reading any row."""
    meta = {b"ctxscale.table": table.encode()}
    if experiment:
        meta[b"ctxscale.experiment"] = experiment.encode()
    return data.replace_schema_metadata(meta)

