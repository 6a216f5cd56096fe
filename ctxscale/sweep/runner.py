"""Run a sweep's grid on Ray Tune and store every trial in the results store.

The caller (the CLI, a test, a notebook) starts or connects to Ray; this module never calls
`ray.init`. Trials already stored as ok or diverged are skipped; failed and missing ones run.
Rows are written on the driver by a Tune callback, so the results folder only has to exist
where the sweep was launched, not on every node.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from .. import store
from ..errors import UserError
from ..provenance import provenance, versions
from .adapters import ddp_trial, plain_trial
from .grid import expand_grid

FINISHED = ("ok", "diverged")  # stored trials in these states are not run again
_TUNE_KEYS = set(AUTO_RESULT_KEYS) | {"trial_id", "done", "should_checkpoint", "experiment_tag",
                                      "checkpoint_dir_name", "training_iteration"}
_PROVENANCE_KEYS = set(provenance())


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
    """What the training loop reported, without the keys Tune adds to every result."""
    return {k: v for k, v in result.items() if k not in _TUNE_KEYS and not k.startswith("config")}


def _history_row(result: dict) -> dict:
    # the evaluation's own numbers; provenance goes once into the trial row, not into every evaluation
    return {k: v for k, v in _loop_metrics(result).items()
            if k not in _PROVENANCE_KEYS and isinstance(v, (int, float, str, bool))}


class StoreCallback(tune.Callback):
    """Writes each finished or failed trial to the results store, atomically, from the driver."""

    def __init__(self, results_dir: Path, trials: dict):
        self.results_dir, self.trials = results_dir, trials
        self.history: dict[str, list[dict]] = defaultdict(list)
        self.last: dict[str, dict] = {}

    def _trial(self, tune_trial) -> dict:
        return self.trials[tune_trial.config["trial"]["trial_id"]]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = self._trial(trial)["trial_id"]
        self.last[tid] = result
        self.history[tid].append(_history_row(result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        spec_trial = self._trial(trial)
        last = self.last.get(spec_trial["trial_id"], {})
        status = last.get("status", "failed")
        error = "" if status in FINISHED else "the trial ended without its final report"
        self._write(spec_trial, last, "failed" if status not in FINISHED else status, error)

    def on_trial_error(self, iteration, trials, trial, **info):
        spec_trial = self._trial(trial)
        # Tune has written the error to the trial's local folder by now (storage syncs later)
        path = trial.error_file
        text = Path(path).read_text() if path and Path(path).is_file() else "unknown error (see Ray's logs)"
        self._write(spec_trial, self.last.get(spec_trial["trial_id"], {}), "failed", text[-4000:])

    def _write(self, spec_trial: dict, last: dict, status: str, error: str) -> None:
        spec = spec_trial["spec"]
        row = {
            "experiment": spec["experiment"],
            "context_length": spec_trial["context_length"],
            "data_size": spec_trial["data_size"],
            "seed": spec_trial["seed"],
            "best_val_loss": math.nan, "best_epoch": -1, "final_train_loss": math.nan,
            "wall_s": math.nan, "samples_per_s": math.nan,
            **versions(),  # the driver's; the final report overrides them with the worker's
            **_loop_metrics(last),
            "status": status,
            "error": error,
            "config_hash": spec_trial["config_hash"],
            "config": json.dumps(spec, sort_keys=True),
            # which configuration is a sweep's most recent: `ctxscale analyze` picks it by this
            "finished_at": datetime.now(timezone.utc),
        }
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()}
        history = _one_row_per_evaluation(self.history.get(spec_trial["trial_id"], []))
        store.write_trial(self.results_dir, spec["name"], spec_trial["trial_id"], row, history)


def _one_row_per_evaluation(history: list[dict]) -> list[dict]:
    """A retried trial resumes from its checkpoint and reports some evaluations again: keep the
    latest report of each step (GPT) or epoch (synthetic), in order."""
    key = "step" if any("step" in h for h in history) else "epoch"
    latest = {h.get(key, i): h for i, h in enumerate(history)}
    return [latest[k] for k in sorted(latest)]


def pending_trials(spec, results_dir: str | Path) -> list[dict]:
    """The trials of `spec` that are not stored as finished under `results_dir` (no Ray needed)."""
    stored = store.stored_trials(results_dir, spec.name)
    return [t for t in expand_grid(spec) if stored.get(t["trial_id"]) not in FINISHED]


def run_sweep(spec, results_dir: str | Path, *, data: Any = None, verbose: int = 1) -> SweepOutcome:
    """Run every trial of `spec` not yet stored under `results_dir`.

    Ray must be initialised by the caller when any trial is pending."""
    results_dir = Path(results_dir).absolute()
    started = time.perf_counter()
    trials = expand_grid(spec)
    pending = pending_trials(spec, results_dir)
    outcome = SweepOutcome(spec.name, results_dir, [t["trial_id"] for t in trials],
                           skipped=[t["trial_id"] for t in trials if t not in pending])
    if not pending:
        return outcome
    if not ray.is_initialized():
        raise SweepError("Ray is not initialised: call ray.init() (or use the ctxscale CLI) first")

    resources = spec.resources
    storage = resources.storage_path or str(results_dir / spec.name / "_ray")
    if "://" not in storage:  # s3://, gs://, ... stay as they are; local paths must be absolute for Ray
        storage = str(Path(storage).absolute())
    by_id = {t["trial_id"]: t for t in pending}
    if resources.use_ddp:
        trainable = tune.with_parameters(ddp_trial, trials=by_id, storage_path=storage, data=data)
        # the trial itself only drives the TorchTrainer; its workers hold the CPUs and GPUs.
        # (Tune refuses an empty request, and a CPU share would starve the workers on small machines)
        trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 256 * 1024**2})
    else:
        trainable = tune.with_parameters(plain_trial, trials=by_id, data=data)
        trainable = tune.with_resources(
            trainable, {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial})

    tuner = tune.Tuner(
        trainable,
        # the grid point is shown in Tune's progress tables; the full trial travels by id
        param_space={"trial": tune.grid_search([
            {k: t[k] for k in ("context_length", "data_size", "seed", "trial_id")} for t in pending])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency(resources, ray.cluster_resources(), len(pending))),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage, verbose=verbose,
            callbacks=[StoreCallback(results_dir, by_id)],
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    tuner.fit()
    outcome.ran = list(by_id)
    outcome.wall_s = time.perf_counter() - started
    return outcome
