"""Run any sweep spec on Ray Tune and store every grid point in the results store.

One path for every experiment (`ctxscale.experiments`): `plan_sweep` prepares the data, lists the
spec's grid points and reads which are stored, all before Ray starts, so every error the user can
cause is raised before anything runs or is written. `SweepPlan.run` groups the pending points into
Tune trials, each running the experiment's Ray-free function, and a Tune callback on the driver
writes each point's rows as its final report arrives: the results folder only has to exist where
the sweep was launched. One policy for all experiments:

- ids: a point's trial id ends in its `config_hash` (what changes its numbers), and every row it
  stores is keyed by that id, so an edited spec stores new rows beside the old ones, never over them;
- skip: a point whose trials row is stored as ok or diverged does not run again;
- retry: a failed Tune trial runs again up to `resources.max_failures` times within the run; an
  evaluation it reports twice keeps its latest report;
- failure: a point whose trial ends without its final report is stored as failed, with the error,
  and runs again next time;
- order: a point's own tables first, its trials row last: the trials row is the commit marker.

The caller (the CLI, a test, a notebook) starts or connects to Ray; this module never calls `ray.init`.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import ray
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from .. import files, store
from ..errors import UserError
from ..experiments import Experiment, experiment_of
from ..provenance import versions
from .adapters import ddp_trial, plain_trial

FINISHED = ("ok", "diverged")  # stored points in these states are not run again
_TUNE_KEYS = set(AUTO_RESULT_KEYS) | {"trial_id", "done", "should_checkpoint", "experiment_tag",
                                      "checkpoint_dir_name", "training_iteration"}
# grid coordinates: shown in Tune's progress tables; the points themselves travel by group id
_NOT_COORDINATES = ("trial_id", "config_hash", "spec")


class SweepError(UserError, RuntimeError):
    """The sweep cannot run as asked (e.g. one trial needs more than the cluster has)."""


@dataclass
class SweepOutcome:
    name: str
    results_dir: Path
    trial_ids: list[str]
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def trial_resources(resources) -> dict:
    """What one trial holds while it runs, summed over its DDP workers."""
    if resources.use_ddp:
        return {"CPU": resources.num_workers * resources.cpus_per_trial,
                "GPU": resources.num_workers * (1.0 if resources.gpus_per_trial > 0 else 0.0)}
    return {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial}


def concurrency(resources, cluster: dict, pending: int) -> int:
    """How many trials may run at once so that none waits forever on resources."""
    need = trial_resources(resources)
    fits = math.inf
    for kind, amount in need.items():
        if amount > 0:
            fits = min(fits, math.floor(cluster.get(kind, 0.0) / amount + 1e-9))
    if fits < 1:
        have = ", ".join(f"{cluster.get(k, 0):g} {k}" for k in need)
        want = ", ".join(f"{v:g} {k}" for k, v in need.items() if v > 0)
        raise SweepError(f"resources: one trial needs {want} but the Ray cluster has {have}")
    if resources.max_concurrent_trials is not None:
        fits = min(fits, resources.max_concurrent_trials)
    return int(max(1, min(fits, pending)))


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


def _label(name: str, group: list[dict]) -> dict:
    """The group's name, then its coordinates (one value, or the list of its points' values): Tune
    shows the end of it where the column is narrow."""
    keys = [k for k in group[0] if k not in _NOT_COORDINATES]
    values = {k: [point[k] for point in group] for k in keys}
    return {"id": name, **{k: v[0] if len(set(map(str, v))) == 1 else v for k, v in values.items()}}


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

    def __init__(self, results_dir: Path, name: str, experiment: Experiment, groups: dict[str, list[dict]]):
        self.results_dir, self.name, self.experiment, self.groups = results_dir, name, experiment, groups
        self.points = {point["trial_id"]: point for group in groups.values() for point in group}
        self.reports: dict[str, list[dict]] = defaultdict(list)  # point id -> its reports so far
        self.finished: dict[str, list[str]] = defaultdict(list)  # Tune trial -> points to store
        self.stored: set[str] = set()

    def _group(self, tune_trial) -> list[dict]:
        return self.groups[tune_trial.config["trial"]["id"]]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = _loop_metrics(result)
        group = self._group(trial)
        # a group of several points names the point of each report, or reports several at once
        for point_metrics in metrics.get("points") or [metrics]:
            point_metrics = dict(point_metrics)
            point_id = point_metrics.pop("point", None)
            if point_id is None:
                (only,) = group
                point_id = only["trial_id"]
            self.reports[point_id].append(point_metrics)
            if point_metrics.get("status") in FINISHED:
                self.finished[trial.trial_id].append(point_id)
        if self.finished.get(trial.trial_id) and not result.get("should_checkpoint"):
            self._store_finished(trial)  # else stored once its checkpoint's files are

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        _publish_files(checkpoint, store.sweep_dir(self.results_dir, self.name))
        self._store_finished(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial, "the trial ended without its final report")

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune has written the error to the trial's local folder by now (storage syncs later)
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else "unknown error (see Ray's logs)"
        self._close(trial, text[-4000:])

    def _close(self, trial, error: str) -> None:
        self._store_finished(trial)
        for point in self._group(trial):
            if point["trial_id"] not in self.stored:
                self._store(point, "failed", error)

    def _store_finished(self, trial) -> None:
        for point_id in self.finished.pop(trial.trial_id, []):
            self._store(self.points[point_id], self.reports[point_id][-1]["status"], "")

    def _store(self, point: dict, status: str, error: str) -> None:
        point_id = point["trial_id"]
        columns, tables = self.experiment.rows(point, _one_row_per_evaluation(self.reports.get(point_id, [])))
        row = {
            "experiment": self.experiment.name,
            **versions(),  # the driver's; a final report overrides them with the worker's
            **columns,
            "status": status,
            "error": error,
            "config_hash": point["config_hash"],
            "config": json.dumps(point["spec"], sort_keys=True),
            # which configuration is a sweep's most recent: `ctxscale analyze` picks it by this
            "finished_at": datetime.now(timezone.utc),
        }
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}
        history = tables.pop("history", [])
        for table, rows in tables.items():
            store.write_rows(self.results_dir, self.name, table, point_id, rows)
        store.write_trial(self.results_dir, self.name, point_id, row, history)
        self.stored.add(point_id)


@dataclass
class SweepPlan:
    """A spec's grid points and which of them are stored; nothing has run or been written yet."""

    spec: Any
    experiment: Experiment
    results_dir: Path
    data: Any  # what the experiment's prepare step returned, shared by every point
    points: list[dict]
    pending: list[dict]

    def run(self, verbose: int = 1) -> SweepOutcome:
        """Run the pending points; Ray must be initialised by the caller when any is pending."""
        started = time.perf_counter()
        pending_ids = {point["trial_id"] for point in self.pending}
        stored = [point for point in self.points if point["trial_id"] not in pending_ids]
        tuner = self._tuner(verbose) if self.pending else None  # refusals come before any write
        if self.experiment.refresh is not None:
            self.experiment.refresh(self.spec, self.results_dir, stored)
        if tuner is not None:
            tuner.fit()
        return SweepOutcome(self.spec.name, self.results_dir, [point["trial_id"] for point in self.points],
                            skipped=[point["trial_id"] for point in stored],
                            ran=[point["trial_id"] for point in self.pending], wall_s=time.perf_counter() - started)

    def _tuner(self, verbose: int) -> tune.Tuner:
        if not ray.is_initialized():
            raise SweepError("Ray is not initialised: call ray.init() (or use the ctxscale CLI) first")
        spec, resources = self.spec, self.spec.resources
        storage = resources.storage_path or str(self.results_dir / spec.name / "_ray")
        if "://" not in storage:  # s3://, gs://, ... stay as they are; local paths must be absolute for Ray
            storage = str(Path(storage).absolute())
        groups = {self.experiment.group_name(group): group for group in self.experiment.group(self.pending)}
        run = self.experiment.run
        if resources.use_ddp:
            trainable = tune.with_parameters(ddp_trial, groups=groups, run=run, storage_path=storage, data=self.data)
            # the trial itself only drives the TorchTrainer; its workers hold the CPUs and GPUs.
            # (Tune refuses an empty request, and a CPU share would starve the workers on small machines)
            trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 256 * 1024**2})
        else:
            trainable = tune.with_parameters(plain_trial, groups=groups, run=run, data=self.data)
            trainable = tune.with_resources(
                trainable, {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial})
        return tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([_label(name, group) for name, group in groups.items()])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrency(resources, ray.cluster_resources(), len(groups)),
                # a finished trial's worker process runs the next one: no new process, torch import or
                # CUDA context per trial, and what it moved to the device stays there (train.synthetic)
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=storage, verbose=verbose,
                callbacks=[StoreCallback(self.results_dir, spec.name, self.experiment, groups)],
                failure_config=tune.FailureConfig(max_failures=resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )


def plan_sweep(spec, results_dir: str | Path, *, data: Any = None, source: Optional[str] = None) -> SweepPlan:
    """Prepare `spec`'s data (unless `data` is given) and find its points not stored as finished.

    Needs no Ray. Raises UserError (SpecError naming `source`, StoreError) when the spec cannot run."""
    results_dir = Path(results_dir).absolute()
    experiment = experiment_of(spec)
    if data is None:
        data = experiment.prepare(spec, source)
    points = experiment.points(spec, data)
    stored = store.stored_trials(results_dir, spec.name)
    pending = [point for point in points if stored.get(point["trial_id"]) not in FINISHED]
    return SweepPlan(spec, experiment, results_dir, data, points, pending)


def run_sweep(spec, results_dir: str | Path, *, data: Any = None, verbose: int = 1) -> SweepOutcome:
    """Run every point of `spec` not yet stored under `results_dir` (`plan_sweep`, then `SweepPlan.run`).

    Ray must be initialised by the caller when any point is pending."""
    return plan_sweep(spec, results_dir, data=data).run(verbose)
