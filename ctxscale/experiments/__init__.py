"""The experiments as the sweep runner sees them: one small `Experiment` object each.

An experiment says, for its kind of spec, what happens before Ray starts (`prepare`), which grid
points the spec has (`points`), how pending points are grouped into Ray Tune trials (`group`), the
Ray-free function that runs one group (`run`) and the rows each finished point stores (`rows`).
`ctxscale.sweep.runner` applies the same scheduling and storage policy to all of them. The
columns an experiment reports are declared with it (`reported`), so the store writes every
row in its experiment's schema (`schemas`).

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

from .base import Experiment, Report, provenance_keys
from ..spec.point import Point

__all__ = ["Experiment", "Point", "Report", "experiment_of", "provenance_keys"]


def experiment_of(spec) -> Experiment:
    """The experiment object of a loaded spec."""
    from .measure import MEASURE
    from .parity import PARITY
    from .gpt import GPT
    from .synthetic import SYNTHETIC

    for experiment in (SYNTHETIC, GPT, MEASURE, PARITY):
        if isinstance(spec, experiment.spec_type):
            return experiment
    raise TypeError(f"not a sweep spec: {type(spec).__name__}")
