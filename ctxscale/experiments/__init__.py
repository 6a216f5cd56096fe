"""The experiments as the sweep runner sees them: one small `Experiment` object each.

An experiment says, for its kind of spec, what happens before Ray starts (`prepare`), which grid
points the spec has (`points`), how pending points are grouped into Ray Tune trials (`group`), the
Ray-free function that runs one group (`run`) and the rows each finished point stores (`rows`).
`ctxscale.sweep.runner` applies the same scheduling and storage policy to all of them.

A point is a `ctxscale.spec.point.Point`: the typed spec, its coordinates (`context_length`, and
`data_size` and `seed` or `model`; a parity point is `data_size` and `seed`, its context lengths
evaluated inside), `config_hash` and `trial_id`. It travels to Ray as it is, and the runner stores
its coordinates from it. `run(group, report, data, resume_dir)` calls
`report(metrics, checkpoint_dir=None)` one or more times per point; a group of several points names
the point of each report in `metrics["point"]` (its trial id), or reports several points at once
as a list of such metrics in `metrics["points"]`. The final report of a point has `status` ok or
diverged. A checkpoint folder may hold a `store/` folder whose files the runner
copies into the sweep's results folder (measure's hidden states).

Nothing here imports Ray; torch is imported only by the run functions.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from ..spec.point import Point

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


@functools.cache
def provenance_keys() -> frozenset:
    """The columns a final report carries about where it ran (added by the Ray adapters)."""
    from ..provenance import provenance

    return frozenset(provenance())


def experiment_of(spec) -> Experiment:
    """The experiment object of a loaded spec."""
    from .measure import MEASURE
    from .parity import PARITY
    from .training import GPT, SYNTHETIC

    for experiment in (SYNTHETIC, GPT, MEASURE, PARITY):
        if isinstance(spec, experiment.spec_type):
            return experiment
    raise TypeError(f"not a sweep spec: {type(spec).__name__}")
