"""The Tune callback that writes each point's rows to the results store, from the driver.

A point's own tables first (`history`, or `ce` and `spectra`), its trials row last: the trials row
is the commit marker. A running point's history is written as it is reported too (at most every
`LIVE_HISTORY_S`), whole each time, and when a sweep stops, so that the next launch goes on from it.
Every write is atomic (`ctxscale.files`); a storage error stops the sweep and is reported by
`runner.SweepPlan.run`.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from .. import files, store
from ..experiments import Experiment
from ..provenance import versions
from ..spec.point import Point
from .adapters import EARLIER_REPORTS
from .progress import point_reports

FINISHED = ("ok", "diverged")  # stored points in these states are not run again
_TUNE_KEYS = set(AUTO_RESULT_KEYS) | {"trial_id", "done", "should_checkpoint", "experiment_tag",
                                      "checkpoint_dir_name", "training_iteration"}
LIVE_HISTORY_S = 2.0  # a running point's history file is rewritten at most this often


def _reports_before(earlier: list[dict], group: list[Point], point_id: str, first: dict) -> list[dict]:
    """The point's reports from before a resumed trial's checkpoint (sent by the launches before
    this one): those whose step (GPT) or epoch (parity) precedes the first report of this launch."""
    key = "step" if "step" in first else "epoch"
    mine = [metrics for report in earlier for pid, metrics in point_reports(group, report) if pid == point_id]
    return [{k: v for k, v in m.items() if k != "point"} for m in mine if key in first and m.get(key, math.inf) < first[key]]


def _loop_metrics(result: dict) -> dict:
    """What the experiment's function reported, without the keys Tune adds to every result."""
    return {k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith("config")}


def _one_row_per_evaluation(history: list[dict]) -> list[dict]:
    """A retried trial resumes from its checkpoint and reports some evaluations again: keep the
    latest report of each step (GPT) or epoch (synthetic), in order; reports with neither (one
    per point, as measure's) are all kept."""
    key = "step" if any("step" in h for h in history) else "epoch"
    latest = {h.get(key, i): h for i, h in enumerate(history)}
    return [latest[k] for k in sorted(latest)]


def _publish_files(checkpoint, sweep_dir: Path) -> None:
    """Copy a checkpoint's `store/` folder (files a point stores besides rows) into the sweep's folder."""
    import pyarrow.fs as pafs

    root = f"{checkpoint.path.rstrip('/')}/store"
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    for info in checkpoint.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File:
            with checkpoint.filesystem.open_input_stream(info.path) as stream:
                files.write_bytes(sweep_dir / info.path[len(root) + 1:], stream.read())


class StoreCallback(tune.Callback):
    """Writes each point's rows to the results store, atomically, from the driver, as soon as its
    final report (and the checkpoint that comes with it) arrives."""

    def __init__(self, results_dir: Path, name: str, experiment: Experiment, groups: dict[str, list[Point]]):
        self.results_dir, self.name, self.experiment, self.groups = results_dir, name, experiment, groups
        self.points = {point.trial_id: point for group in groups.values() for point in group}
        self.reports: dict[str, list[dict]] = defaultdict(list)  # point id -> its reports so far
        self.finished: dict[str, list[str]] = defaultdict(list)  # Tune trial -> points to store
        self.stored: set[str] = set()
        self.closed: set[str] = set()  # Tune trials that completed or failed (the rest were interrupted)
        self.live_written: dict[str, float] = {}  # point id -> when its history file was last written
        self.storage_error: Optional[OSError] = None

    def _group(self, tune_trial) -> list[Point]:
        return self.groups[tune_trial.config["trial"]["id"]]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = _loop_metrics(result)
        earlier = json.loads(metrics.pop(EARLIER_REPORTS, None) or "[]")
        group = self._group(trial)
        for point_id, point_metrics in point_reports(group, metrics):
            point_metrics.pop("point", None)
            if earlier and not self.reports[point_id]:  # went on from a checkpoint of a stopped launch
                self.reports[point_id] = _reports_before(earlier, group, point_id, point_metrics)
            self.reports[point_id].append(point_metrics)
            if point_metrics.get("status") in FINISHED:
                self.finished[trial.trial_id].append(point_id)
            elif time.monotonic() - self.live_written.get(point_id, -math.inf) >= LIVE_HISTORY_S:
                self._guarded(self._write_live_history, self.points[point_id])
        if self.finished.get(trial.trial_id) and not result.get("should_checkpoint"):
            self._store_finished(trial)  # else stored once its checkpoint's files are

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        _publish_files(checkpoint, store.sweep_dir(self.results_dir, self.name))
        self._store_finished(trial)

    def on_experiment_end(self, trials, **info):
        # stopped (Ctrl-C, a time limit): what the unfinished points reported is on disk for the next launch
        for point in self.points.values():
            if point.trial_id not in self.stored and self.reports.get(point.trial_id):
                self._guarded(self._write_live_history, point)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.closed.add(trial.trial_id)
        self._close(trial, "the trial ended without its final report")

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune has written the error to the trial's local folder by now (storage syncs later)
        self.closed.add(trial.trial_id)
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else "unknown error (see Ray's logs)"
        self._close(trial, text[-4000:])

    def _close(self, trial, error: str) -> None:
        self._store_finished(trial)
        for point in self._group(trial):
            if point.trial_id not in self.stored:
                self._store(point, "failed", error)

    def _store_finished(self, trial) -> None:
        for point_id in self.finished.pop(trial.trial_id, []):
            self._store(self.points[point_id], self.reports[point_id][-1]["status"], "")

    def _guarded(self, write, *args) -> None:
        """A storage error (a full disk, a folder gone) is kept for `SweepPlan.run` to report and
        re-raised, which makes Tune stop the sweep; the failed write left nothing behind."""
        try:
            write(*args)
        except OSError as err:
            self.storage_error = self.storage_error or err
            raise

    def _write_live_history(self, point: dict) -> None:
        point_id = point.trial_id
        _, tables = self.experiment.rows(point, _one_row_per_evaluation(self.reports[point_id]))
        if "history" in tables:
            store.write_history(self.results_dir, self.name, point_id, tables["history"], point.config_hash,
                                self.experiment.name, self.experiment.schemas)
        self.live_written[point_id] = time.monotonic()

    def _store(self, point: dict, status: str, error: str) -> None:
        self._guarded(self._store_point, point, status, error)

    def _store_point(self, point: dict, status: str, error: str) -> None:
        point_id = point.trial_id
        columns, tables = self.experiment.rows(point, _one_row_per_evaluation(self.reports.get(point_id, [])))
        row = {
            "experiment": self.experiment.name,
            **versions(),  # the driver's; a final report overrides them with the worker's
            **columns,
            **point.coordinates(),  # from the point, whatever a report says
            "status": status,
            "error": error,
            "config_hash": point.config_hash,
            "config": json.dumps(point.spec.model_dump(mode="json"), sort_keys=True),
            # which configuration is a sweep's most recent: `ctxscale analyze` picks it by this
            "finished_at": datetime.now(timezone.utc),
        }
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}
        history = tables.pop("history", [])
        for table, rows in tables.items():
            store.write_rows(self.results_dir, self.name, table, point_id, rows, self.experiment.schemas)
        store.write_trial(self.results_dir, self.name, point_id, row, history, self.experiment.schemas)
        self.stored.add(point_id)
