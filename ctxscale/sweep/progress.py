"""What a sweep shows while it runs, and where its live curves go: Tune callbacks on the driver.

- `SweepProgress` prints one line per point as it finishes, with its best loss, and at most every
  `every_s` seconds, when something moved, one compact table (`tables.progress_table`): the points
  by status, then a row per data size with how many are done, the best loss so far and the
  running points' latest evaluation.
  Ray Tune's own console output (a config box and a result box per trial) stays off unless the
  sweep runs with `--verbose`; the full detail of every point is in the store either way.
- `TensorBoardCurves` writes each point's reports as TensorBoard scalars under
  `<results>/<sweep>/tensorboard/<trial id>/`, as they arrive.
- `trial_name` names each Tune trial (and its folder under `_ray/`) by the ctxscale id of its group.

A packed trial's reports name their point (`point_reports`).
"""
from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from ..spec.point import Point

FINISHED = ("ok", "diverged")
METRICS = ("epoch", "step", "val_loss")  # what the table shows of a running point
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


def trial_label(name: str, group: list[Point]) -> dict:
    """The group's name, then its coordinates (one value, or the list of its points' values): Tune
    shows the end of it where the column is narrow."""
    values = {k: [point.coordinates()[k] for point in group] for k in group[0].coordinates()}
    return {"id": name, **{k: v[0] if len(set(map(str, v))) == 1 else v for k, v in values.items()}}


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
        self.points: dict[str, dict] = {}  # point id -> its coordinates, status and latest metrics
        for group in groups.values():
            for point in group:
                coordinates = point.coordinates()
                self.points[point.trial_id] = {**coordinates, "status": "pending"}
        self.started = time.monotonic()
        self.last_table = self.started  # the first table after `every_s`: a short sweep needs none
        self.changed = False  # a table only when something moved since the last one

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def _finished(self) -> int:
        return sum(point["status"] not in ("pending", "running") for point in self.points.values())

    def on_trial_start(self, iteration, trials, trial, **info):
        for point in self.groups[trial_name(trial)]:
            if self.points[point.trial_id]["status"] == "pending":
                self.points[point.trial_id]["status"] = "running"
                self.changed = True

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for point_id, metrics in point_reports(self.groups[trial_name(trial)], result):
            self._point_result(point_id, metrics)

    def _point_result(self, point_id: str, result: dict) -> None:
        point = self.points[point_id]
        self.changed = True
        point.update({key: result[key] for key in METRICS if isinstance(result.get(key), (int, float))})
        loss = best_loss(result)
        if loss is not None:
            point["best"] = loss
        status = result.get("status")
        if status in FINISHED and point["status"] not in FINISHED:
            point["status"] = status
            at = next((f" at {key.removeprefix('best_')} {result[key]:g}" for key in ("best_step", "best_epoch")
                       if isinstance(result.get(key), (int, float))), "")
            self._line(point_id, status, f"{loss[0]} {loss[1]:.4f}{at}" if loss else "")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "failed")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "failed (no final report)")

    def _close(self, trial, status: str) -> None:
        for point in self.groups[trial_name(trial)]:
            if self.points[point.trial_id]["status"] in ("pending", "running"):
                self.points[point.trial_id]["status"] = "failed"
                self.changed = True
                self._line(point.trial_id, status, "its error is in the store")

    def _line(self, point_id: str, status: str, detail: str) -> None:
        self._print(f"[{_clock(time.monotonic() - self.started)}] {self._finished()}/{len(self.points)} "
                    f"{point_id} {status}{': ' + detail if detail else ''}")

    def on_step_end(self, iteration, trials, **info):
        if self.changed and time.monotonic() - self.last_table >= self.every_s:
            self.last_table, self.changed = time.monotonic(), False
            self._print(self.table())

    def table(self) -> str:
        """The progress table: a line of counts by status, then one row per data size (or model)."""
        from ..tables import progress_table

        return progress_table(list(self.points.values()), _clock(time.monotonic() - self.started))


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
    A point's writer (a file and a thread) is closed as soon as the point is done.

    The writing runs on a thread of its own, fed by a queue: a Tune trial waits at each report until
    the driver has handled it, so work done here holds the trial. tensorboardX's first import (it
    imports torch: seconds on a GPU machine) and its per-scalar work (84 scalars a report of a
    12-point synthetic group) stay off that path. The experiment's end waits for what is queued."""

    def __init__(self, folder: Path, groups: dict[str, list[Point]]):
        self.folder, self.groups = Path(folder), groups
        self.writers: dict = {}
        self._queue: Optional[queue.SimpleQueue] = None  # made in setup: Tune pickles its callbacks first
        self._thread: Optional[threading.Thread] = None
        self._failed = False

    def setup(self, **info):
        # started with the experiment: the import overlaps the trials' own start-up
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="ctxscale-tensorboard", daemon=True)
        self._thread.start()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for point_id, metrics in point_reports(self.groups[trial_name(trial)], result):
            self._queue.put((self._write, point_id, metrics))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._queue.put((self._close, [point.trial_id for point in self.groups[trial_name(trial)]]))

    on_trial_error = on_trial_complete  # either way the trial's points are done

    def on_experiment_end(self, trials, **info):
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _drain(self) -> None:
        with contextlib.suppress(ImportError):  # now, while the trials start (a failure shows at the first write)
            import tensorboardX  # noqa: F401
        while (item := self._queue.get()) is not None:
            self._safely(*item)
        self._safely(self._close, list(self.writers))

    def _safely(self, action, *args) -> None:
        try:
            action(*args)
        except Exception as err:  # the curves are a view: a failed write must not stop the sweep
            if not self._failed:
                print(f"ctxscale: TensorBoard curves in {self.folder}: {err!r}; the results store is "
                      "not affected", file=sys.stderr, flush=True)
            self._failed = True

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

    def _close(self, point_ids) -> None:
        for point_id in point_ids:
            if point_id in self.writers:
                self.writers.pop(point_id).close()
