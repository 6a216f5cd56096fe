"""Thin bindings of an experiment's Ray-free run function to Ray: a plain Tune trial, or a Tune
trial that drives a Ray Train `TorchTrainer` running the same function under DDP (Ray 2.60, Train V2).

A Tune trial runs one group of points (`ctxscale.experiments`), found by the id in its config.
The per-worker function calls `run` with `report` bound to `ray.train.report`; the per-trial
driver builds the TorchTrainer; `runner.SweepPlan` builds the Tuner. Ray calls stay in here.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import ray
import ray.train
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from ..provenance import provenance
from ..spec.point import Point


def _with_provenance(metrics: dict) -> dict:
    # the final report carries where and with what the trial ran (the worker knows, the driver doesn't)
    if "points" in metrics:  # several points reported at once
        return {**metrics, "points": [_with_provenance(point) for point in metrics["points"]]}
    if metrics.get("status") == "running":
        return metrics
    return {**metrics, **provenance()}


def _restored_dir(checkpoint) -> Optional[str]:
    return checkpoint.to_directory() if checkpoint is not None else None


REPORTS_FILE = "ctxscale-reports.json"  # in every plain trial's checkpoint: the reports sent before it
EARLIER_REPORTS = "earlier_reports"  # the first report after a resume: those reports, as JSON text


def _reports_in(resume_dir: Optional[str]) -> list[dict]:
    path = Path(resume_dir, REPORTS_FILE) if resume_dir else None
    try:
        return json.loads(path.read_text()) if path and path.is_file() else []
    except (OSError, ValueError):  # unreadable: the store keeps what it has
        return []


def _earlier_checkpoint(trial_dir: Optional[str]) -> Optional[str]:
    """A copy of the newest checkpoint an earlier launch left in this trial's folder of Ray's
    storage (the folder is named after the group, whose id holds the config hash), or None."""
    folders = [p for p in Path(trial_dir).glob("checkpoint_*") if p.is_dir()] if trial_dir else []
    newest = max(((max(f.stat().st_mtime for f in files), folder) for folder in folders
                  if (files := [f for f in folder.rglob("*") if f.is_file()])), default=None)
    if newest is None:
        return None
    copy = tempfile.mkdtemp(prefix="ctxscale-resume-")
    shutil.copytree(newest[1], copy, dirs_exist_ok=True)  # this launch's checkpoints may replace the folder
    print(f"ctxscale: resuming from {newest[1]}, left by an earlier launch", flush=True)
    return copy


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _reporter(send: Callable, resume_dir: Optional[str], keeps_history: bool = True) -> Callable:
    """The run function's `report(metrics, checkpoint_dir=None)`, sending through `send(metrics,
    checkpoint_dir)`. The reporting process (a plain trial; a DDP trial's rank 0) adds provenance and
    writes the reports sent so far into every checkpoint (REPORTS_FILE); after a resume its first
    report hands back those of the checkpoint it went on from, under EARLIER_REPORTS, so the store
    keeps the evaluations before it even when a stopped launch's driver never saw the last of them."""
    sent = _reports_in(resume_dir) if keeps_history else []
    earlier = json.dumps(sent) if sent else None

    def report(metrics: dict, checkpoint_dir: Optional[str] = None) -> None:
        nonlocal earlier
        if keeps_history:
            metrics = _with_provenance(metrics)
            sent.append(_scalars(metrics))
            if checkpoint_dir:
                Path(checkpoint_dir, REPORTS_FILE).write_text(json.dumps(sent))
            if earlier is not None:
                metrics, earlier = {**metrics, EARLIER_REPORTS: earlier}, None
        send(metrics, checkpoint_dir)

    return report


def group_of(config: dict, groups: dict) -> list[Point]:
    """A trial's points: an adaptive search's trial names them (`trial.points`, each a group of its
    own in `groups`), a grid's trial its group."""
    trial = config["trial"]
    return [groups[point_id][0] for point_id in trial["points"]] if "points" in trial else groups[trial["id"]]


NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}


def _only_the_gpus_given() -> None:
    """Hide every GPU from a plain trial that Ray gave none. Ray 2.60 leaves CUDA_VISIBLE_DEVICES as
    it was for a task that asks for 0 GPUs, so `device: auto` would put a CPU trial on a GPU the
    scheduler never handed it, beside the trials that hold it. A trial's actor is a fresh process
    that has not touched CUDA yet. A Ray Train worker that changed it this late failed on an H100
    machine inside torch.compile (an IndexError from the device list), so DDP workers get the same
    setting in their runtime environment, as they start (`ddp_trial`)."""
    if not ray.get_gpu_ids():
        os.environ.update(NO_GPU_ENV)


def _quiet_ray_logs(everything: bool = False) -> None:
    """Ray Tune's and Ray Train's INFO lines in this process ("Checkpoint successfully created at:
    ...", one per checkpoint) stay out of the driver's console; warnings and the run's own prints
    still reach it. Set by the trial itself: a reused actor runs it again, to the same effect.
    `everything`: every logger's INFO lines (a Ray Train worker, whose root logger Ray Train sets
    to INFO, logs each report under a logger named after its source file)."""
    for name in ("ray.train", "ray.tune") + (("",) if everything else ()):
        logging.getLogger(name or None).setLevel(logging.WARNING)


def plain_trial(config: dict, groups: dict, run: Callable, data: Any = None,
                earlier_launches: Optional[dict] = None, quiet_ray_logs: bool = True) -> None:
    """One trial as a plain Ray Tune function trainable (cheap; can share a GPU). `earlier_launches`
    names the folders (by group) where a stopped launch may have left a checkpoint to go on from.
    `quiet_ray_logs`: keep Ray's INFO lines out of the console (`_quiet_ray_logs`)."""
    _only_the_gpus_given()
    if quiet_ray_logs:
        _quiet_ray_logs()
    group = group_of(config, groups)
    resume_dir = _restored_dir(ray.tune.get_checkpoint())  # a retry within this run
    if resume_dir is None:
        resume_dir = _earlier_checkpoint((earlier_launches or {}).get(config["trial"]["id"]))

    def send(metrics: dict, checkpoint_dir: Optional[str]) -> None:
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    try:
        run(group, _reporter(send, resume_dir), data, resume_dir)
    finally:
        if resume_dir:
            shutil.rmtree(resume_dir, ignore_errors=True)


def _ddp_worker(loop_config: dict) -> None:
    """What every Ray Train worker runs: the same run function, with the process group already set up.
    Ray Train restores the run's newest checkpoint, within a run and in a later launch alike (the
    TorchTrainer is named after the trial)."""
    if loop_config["quiet_ray_logs"]:
        _quiet_ray_logs(everything=True)
    data = ray.get(loop_config["data"]) if loop_config["data"] is not None else None
    rank = ray.train.get_context().get_world_rank()

    def send(metrics: dict, checkpoint_dir: Optional[str]) -> None:
        # every rank must call ray.train.report the same number of times (it is a barrier);
        # the loop has already all-reduced the metrics, and only rank 0 passes a checkpoint
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    resume_dir = _restored_dir(ray.train.get_checkpoint())
    try:
        loop_config["run"](loop_config["group"], _reporter(send, resume_dir, keeps_history=rank == 0), data, resume_dir)
    finally:
        if resume_dir:
            shutil.rmtree(resume_dir, ignore_errors=True)


def ddp_trial(config: dict, groups: dict, run: Callable, storage_path: str, data: Any = None,
              quiet_ray_logs: bool = True) -> None:
    """One trial whose training runs as a Ray Train TorchTrainer with N DDP workers. `quiet_ray_logs`:
    Ray's INFO lines stay out of the console, here and (by its logging config) in Ray Train's
    controller and workers."""
    # imported here: ray.train.torch imports torch, which costs a driver whose trials are all
    # plain ones seconds before its first trial starts (this function runs in a trial's process)
    from ray.train.torch import TorchConfig, TorchTrainer

    if quiet_ray_logs:
        _quiet_ray_logs()
    group = group_of(config, groups)
    resources = group[0].spec.resources
    use_gpu = resources.gpus_per_trial > 0
    per_worker = {"CPU": resources.cpus_per_trial} | ({"GPU": 1} if use_gpu else {})
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"group": group, "run": run, "data": ray.put(data) if data is not None else None,
                           "quiet_ray_logs": quiet_ray_logs},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        # named after the trial so that a retried trial resumes from its own checkpoint
        run_config=ray.train.RunConfig(
            name=config["trial"]["id"], storage_path=storage_path, callbacks=[TuneReportCallback()],
            # resuming needs only the latest checkpoint (the study model's is ~1 GB)
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            logging_config=ray.train.LoggingConfig(log_level="WARNING" if quiet_ray_logs else "INFO"),
            worker_runtime_env={} if use_gpu else {"env_vars": NO_GPU_ENV}),
    )
    trainer.fit()
