"""The `Experiment` object the sweep runner drives (see the package's docstring), and what it shares."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import pyarrow as pa

from ..spec.point import Point
from ..store import schema

Report = Callable[..., None]


def one_point_each(points: list[Point]) -> list[list[Point]]:
    """One Tune trial per point: a training run is one model."""
    return [[point] for point in points]


def first_trial_id(group: list[Point]) -> str:
    return group[0].trial_id


@dataclass(frozen=True)
class Experiment:
    name: str
    spec_type: type
    # the columns its run function reports ({name: Arrow type}), in its final report (trials) or per
    # evaluation (history); the trials row adds one column per field of spec_type
    reported: dict[str, pa.DataType] = field(repr=False)
    # (spec, source) -> what every point shares (a data set, a corpus path, or None); raises
    # SpecError naming `source` (the spec file) when the data cannot serve the spec
    prepare: Callable[[Any, Optional[str]], Any]
    # (spec, prepared) -> every grid point of the spec, in grid order
    points: Callable[[Any, Any], list[Point]]
    # (group of points, report, prepared, resume_dir) -> None; Ray-free
    run: Callable[[list[Point], Report, Any, Optional[str]], None]
    # (point, its reports, oldest first) -> (columns of its `trials` row besides its coordinates,
    # {table: rows} of the experiment's own tables, written before the trials row); reports is
    # empty when it failed early
    rows: Callable[[Point, list[dict]], tuple[dict, dict[str, list[dict]]]]
    # (results folder, spec, its stored trials rows) -> the text table printed after a sweep
    table: Callable[[Path, Any, pd.DataFrame], str]
    group: Callable[[list[Point]], list[list[Point]]] = one_point_each
    # (group) -> the Tune trial's name, unique among the sweep's groups and readable in Tune's progress
    group_name: Callable[[list[Point]], str] = first_trial_id
    # (spec, results folder, stored points) -> None: brings stored rows up to date with settings
    # that do not change a measurement (measure's spectrum thresholds), without running anything
    refresh: Optional[Callable[[Any, Path, list[Point]], None]] = None

    @functools.cached_property
    def schemas(self) -> dict[str, pa.Schema]:
        """The declared schema of each table the store writes for this experiment."""
        return {"trials": schema.trials_schema(self.reported, self.spec_type),
                "history": schema.history_schema(self.reported)}


def provenance_keys() -> frozenset:
    """The columns a final report carries about where it ran (added by the Ray adapters): the
    schema's, not computed, since `provenance()` in the driver would start a CUDA context there,
    holding GPU memory the trials could use."""
    return frozenset(schema.PROVENANCE)
