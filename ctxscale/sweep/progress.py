"""What a sweep shows while it runs, and where its live curves go: Tune callbacks on the driver.

- `SweepProgress` prints, at most every `every_s` seconds and only when something moved, one table with one row per grid point (its
  trial id, flat `context_length`, `data_size`, `seed`, its packed group when points share a
  trial, and the latest metrics), and one line per point as it finishes, with its best loss.
  Ray Tune's own console output (a config box and a result box per trial) stays off unless the
  sweep runs with `--verbose`; the full detail of every point is in the store either way.
- `TensorBoardCurves` writes each point's reports as TensorBoard scalars under
  `<results>/<sweep>/tensorboard/<trial id>/`, as they arrive.
- `trial_name` names each Tune trial (and its folder under `_ray/`) by the ctxscale id of its group.

A packed trial's reports name their point (`point_reports`).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from ..spec.point import Point

FINISHED = ("ok", "diverged")
# the metrics a row of the table shows, in this order, where a sweep's reports carry them
METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "best_val_loss")
BEST_LOSS = ("best_val_loss", "ce")  # what a finished point's line reports, the first present


def trial_name(trial) -> str:
    """A Tune trial's name and folder name: its ctxscale group id (unique within the sweep)."""
    return trial.config["trial"]["id"]


def point_reports(group: list[Point], result: dict) -> list[tuple[str, dict]]:
    """(point id, its metrics) for each point a report is about. A trial of one point reports it
    alone; a packed trial names the point in `result["point"]`, or reports several at once as a list
    in `result["points"]` (each then keeps the report's other keys, Tune's among them)."""
    if "points" in result:
        rest = {k: v for k, v in result.items() if k != "points"}
        return [(metrics["point"], {**rest, **metrics}) for metrics in result["points"]]
    if "point" in result:
        return [(result["point"], dict(result))]
    (only,) = group
    return [(only.trial_id, dict(result))]


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def best_loss(metrics: dict) -> Optional[tuple[str, float]]:
    """(name, value) of the loss a finished point's line shows; measure's `ce` is a row of its own."""
    for key in BEST_LOSS:
        value = metrics.get(key)
        if isinstance(value, dict):
            value = value.get(key)
        if isinstance(value, (int, float)):
            return key, float(value)
    return None


class SweepProgress(tune.Callback):
    """The readable console of a sweep (see the module docstring); prints to `out`."""

    def __init__(self, groups: dict[str, list[Point]], every_s: float = 30.0, out=None):
        self.groups, self.every_s, self.out = groups, every_s, out
        self.rows: dict[str, dict] = {}
        packed = any(len(group) > 1 for group in groups.values())
        for name, group in groups.items():
            for point in group:
                self.rows[point.trial_id] = {"trial_id": point.trial_id, **point.coordinates(),
                                                **({"group": name} if packed else {}), "status": "pending"}
        self.metrics: list[str] = []
        self.started = time.monotonic()
        self.last_table = self.started  # the first table after `every_s`: a short sweep needs none
        self.changed = False  # a table only when something moved since the last one

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def _finished(self) -> int:
        return sum(row["status"] not in ("pending", "running") for row in self.rows.values())

    def on_trial_start(self, iteration, trials, trial, **info):
        for point in self.groups[trial_name(trial)]:
            if self.rows[point.trial_id]["status"] == "pending":
                self.rows[point.trial_id]["status"] = "running"
                self.changed = True

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for point_id, metrics in point_reports(self.groups[trial_name(trial)], result):
            self._point_result(point_id, metrics)

    def _point_result(self, point_id: str, result: dict) -> None:
        row = self.rows[point_id]
        self.changed = True
        for key in METRIC_COLUMNS:
            if isinstance(result.get(key), (int, float)):
                row[key] = result[key]
                if key not in self.metrics:
                    self.metrics.append(key)
        status = result.get("status")
        if status in FINISHED and row["status"] not in FINISHED:
            row["status"] = status
            loss = best_loss(result)
            at = next((f" at {key.removeprefix('best_')} {result[key]:g}" for key in ("best_step", "best_epoch")
                       if isinstance(result.get(key), (int, float))), "")
            self._line(point_id, status, f"{loss[0]} {loss[1]:.4f}{at}" if loss else "")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "failed")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "failed (no final report)")

    def _close(self, trial, status: str) -> None:
        for point in self.groups[trial_name(trial)]:
            if self.rows[point.trial_id]["status"] in ("pending", "running"):
                self.rows[point.trial_id]["status"] = "failed"
                self.changed = True
                self._line(point.trial_id, status, "its error is in the store")

    def _line(self, point_id: str, status: str, detail: str) -> None:
        self._print(f"[{_clock(time.monotonic() - self.started)}] {self._finished()}/{len(self.rows)} "
                    f"{point_id} {status}{': ' + detail if detail else ''}")

    def on_step_end(self, iteration, trials, **info):
        if self.changed and time.monotonic() - self.last_table >= self.every_s:
            self.last_table, self.changed = time.monotonic(), False
            self._print(self.table())

    def table(self) -> str:
        """The progress table: a status line, then one row per point."""
        frame = pd.DataFrame(list(self.rows.values()))
        for key in self.metrics:
            values = pd.to_numeric(frame[key], errors="coerce") if key in frame else pd.Series(math.nan, frame.index)
            whole = bool((values.dropna() % 1 == 0).all())  # epochs and steps without ".0000"
            frame[key] = values.astype("Int64") if whole else values
        counts = frame["status"].value_counts()
        summary = ", ".join(f"{counts[s]} {s}" for s in ("running", "pending", "ok", "diverged", "failed") if s in counts)
        frame = frame[[c for c in frame.columns if c not in METRIC_COLUMNS] + self.metrics]
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 1000,
                               "display.float_format", "{:.4f}".format):
            body = frame.to_string(index=False, na_rep="")
        return f"\n== {_clock(time.monotonic() - self.started)} elapsed: {len(frame)} points, {summary}\n{body}"


def _scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a report, nested rows (measure's `ce`, `spectra`) as `ce/ce`."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


class TensorBoardCurves(tune.Callback):
    """Each point's reports as TensorBoard scalars in `<folder>/<trial id>/`, step = its step or epoch.
    A point's writer (a file and a thread) is closed as soon as the point is done."""

    def __init__(self, folder: Path, groups: dict[str, list[Point]]):
        self.folder, self.groups = Path(folder), groups
        self.writers: dict = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for point_id, metrics in point_reports(self.groups[trial_name(trial)], result):
            self._write(point_id, metrics)

    def _write(self, point_id: str, result: dict) -> None:
        from tensorboardX import SummaryWriter  # a dependency of ray[tune]

        if point_id not in self.writers:
            self.writers[point_id] = SummaryWriter(str(self.folder / point_id), flush_secs=10)
        step = next((result[k] for k in ("step", "epoch") if isinstance(result.get(k), (int, float))),
                    result.get("training_iteration", 0))
        reported = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS and k not in ("config", "point")}
        for key, value in _scalars(reported).items():
            self.writers[point_id].add_scalar(key, value, global_step=int(step))
        if result.get("status") in FINISHED:
            self.writers.pop(point_id).close()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(point.trial_id for point in self.groups[trial_name(trial)])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(point.trial_id for point in self.groups[trial_name(trial)])

    def on_experiment_end(self, trials, **info):
        self._close(list(self.writers))

    def _close(self, point_ids) -> None:
        for point_id in point_ids:
            if point_id in self.writers:
                self.writers.pop(point_id).close()
