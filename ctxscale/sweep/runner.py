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
- order: a point's own tables first, its trials row last: the trials row is the commit marker
  (`storing.StoreCallback`); its history is written as it is reported too, whole each time;
- leases: a launch claims the points it runs (`lease.Launch`); points held by another live launch
  are left to it, and a launch that ends compacts the sweep's finished rows unless another is live;
- Ctrl-C: Tune stops its trials, nothing running is stored, and `run` raises `SweepInterrupted`.

The caller (the CLI, a test, a notebook) starts or connects to Ray; this module never calls `ray.init`.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from .. import store
from ..errors import UserError
from ..experiments import Experiment, experiment_of
from ..spec.point import Point
from .adapters import ddp_trial, plain_trial
from .lease import Launch
from .progress import trial_label
from .storing import FINISHED, StoreCallback

COMPACTION = "compaction"  # the claim a launch takes to compact its sweep


class SweepError(UserError, RuntimeError):
    """The sweep cannot run as asked (e.g. one trial needs more than the cluster has)."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the sweep: finished points are stored, running ones are not."""


@dataclass
class SweepOutcome:
    name: str
    results_dir: Path
    trial_ids: list[str]
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    held: list[str] = field(default_factory=list)  # pending points another live launch is running

    def summary(self) -> str:
        return f"ran {len(self.ran)}, skipped {len(self.skipped)} stored, {len(self.held)} held by another launch"


def worker_bundle(resources) -> dict:
    """What one trial needs on one node: a plain trial, or one DDP worker of it."""
    if resources.use_ddp:
        return {"CPU": resources.cpus_per_trial, "GPU": 1.0 if resources.gpus_per_trial > 0 else 0.0}
    return {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial}


def node_types() -> list[dict]:
    """The resources of every kind of node the cluster has or may add: the live nodes, and the node
    groups an autoscaler (the cluster launcher, KubeRay) has declared to Ray."""
    types = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
    try:
        from ray._private.state import state  # the autoscaler's declared node groups (as Ray Data reads them)

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 -- an older GCS or a Ray client: the live nodes only
        config = None
    for group in getattr(config, "node_group_configs", []):
        if group.max_count != 0:
            types.append(dict(group.resources))
    return types


def check_fits(resources, types: list[dict]) -> None:
    """Refuse a sweep whose trials can never run: one trial (or one DDP worker) fits no node type.
    A trial that fits a node type but not the cluster as it is now waits for Tune and the autoscaler."""
    need = {kind: amount for kind, amount in worker_bundle(resources).items() if amount > 0}
    if not any(all(node.get(kind, 0.0) + 1e-9 >= amount for kind, amount in need.items()) for node in types):
        want = ", ".join(f"{v:g} {k}" for k, v in need.items())
        per = f"each of its {resources.num_workers} DDP workers needs" if resources.use_ddp else "one trial needs"
        largest = "; ".join(sorted({", ".join(f"{node.get(k, 0):g} {k}" for k in need) for node in types})) or "none"
        raise SweepError(f"resources: {per} {want} on one node, and no node type of the Ray cluster has that "
                         f"(node types: {largest})")


def ddp_trials_that_fit(resources, cluster: dict) -> int:
    """How many DDP trials' worker groups the cluster holds at once (at least 1). A DDP trial holds
    only its driver in Tune; its workers ask Ray Train for theirs once it has started. Uncapped, Tune
    starts every trial at once and their worker groups wait on one another: on 2 GPUs, 22 of 24
    gpt2-gpu trials timed out starting their workers, again and again, and 2 finished in 4 minutes."""
    need = {kind: amount * resources.num_workers for kind, amount in worker_bundle(resources).items() if amount > 0}
    return max(1, int(min(cluster.get(kind, 0.0) // amount for kind, amount in need.items())))


def _earlier_launches(storage: str, name: str, groups) -> dict[str, str]:
    """Tune trial name -> its folder in Ray's storage, where an earlier launch that was stopped, or
    whose trial failed, may have left a checkpoint to go on from (local storage only; within a run,
    Tune's own restore covers retries; Ray Train restores a DDP trial's run, named after the trial)."""
    if "://" in storage:
        return {}
    return {group: str(Path(storage) / name / group) for group in groups}




@dataclass
class SweepPlan:
    """A spec's grid points and which of them are stored; nothing has run or been written yet."""

    spec: Any
    experiment: Experiment
    results_dir: Path
    data: Any  # what the experiment's prepare step returned, shared by every point
    points: list[Point]
    pending: list[Point]
    held: list[Point] = field(default_factory=list)  # pending, but another live launch runs them
    launch: Optional[Launch] = None
    store_callback: Optional[StoreCallback] = None
    search: Any = None  # an adaptive search (ctxscale.search) decides which of `points` run; None: all

    @contextlib.contextmanager
    def leased(self):
        """Claim the pending points for this launch (see `lease`): those another live launch holds,
        and those stored since the plan was made, leave `pending`. Released on exit, whatever happens."""
        if self.launch is not None or not self.pending:  # nothing to claim: nothing is written
            yield self
            return
        store.check_writable(self.results_dir, self.spec.name)
        with Launch(store.sweep_dir(self.results_dir, self.spec.name)) as launch:
            self.launch = launch
            try:
                mine, held = launch.claim(point.trial_id for point in self.pending)
                if mine:  # another launch may have stored some between the plan and the claim
                    now = store.stored_trials(self.results_dir, self.spec.name)
                    launch.release([i for i in mine if now.get(i) in FINISHED])
                held_ids = set(held)
                self.held = [point for point in self.pending if point.trial_id in held_ids]
                self.pending = [point for point in self.pending if point.trial_id in launch.claimed]
                yield self
            finally:
                self.launch = None

    def run(self, verbose: int = 1) -> SweepOutcome:
        """Run the pending points; Ray must be initialised by the caller when any is pending."""
        if self.launch is None and self.pending:
            with self.leased():
                return self.run(verbose)
        started = time.perf_counter()
        pending_ids = {point.trial_id for point in self.pending + self.held}
        stored = [point for point in self.points if point.trial_id not in pending_ids]
        tuner = self._tuner(verbose) if self.pending else None  # refusals come before any write
        if self.experiment.refresh is not None:
            self.experiment.refresh(self.spec, self.results_dir, stored)
        if tuner is not None:
            self._fit(tuner)
        if self.search is not None:  # adaptive search: l* per data size, and why it stopped
            self.search.finish(verbose)
        self._compact()
        ran = self.pending if self.search is None else [p for p in self.pending if p.trial_id in self.search.ran]
        return SweepOutcome(self.spec.name, self.results_dir, [point.trial_id for point in self.points],
                            skipped=[point.trial_id for point in stored],
                            ran=[point.trial_id for point in ran], wall_s=time.perf_counter() - started,
                            held=[point.trial_id for point in self.held])

    def _fit(self, tuner: tune.Tuner) -> None:
        callback = self.store_callback
        try:
            with _tune_logs_without_tensorboard():
                tuner.fit()
        except Exception as err:
            if callback.storage_error is None:
                raise
            error = callback.storage_error
            raise store.StoreError(
                f"{store.sweep_dir(self.results_dir, self.spec.name)}: a write failed ({error.strerror or error}); "
                "the sweep stopped. Rows stored before are kept; free the space and run the same command "
                "to run the rest") from err
        if callback.storage_error is not None:
            raise store.StoreError(f"{store.sweep_dir(self.results_dir, self.spec.name)}: a write failed "
                                   f"({callback.storage_error.strerror or callback.storage_error}); the sweep stopped")
        if len(callback.closed) < len(callback.groups):  # Tune stopped on SIGINT (or SIGUSR1)
            raise SweepInterrupted()

    def _compact(self) -> None:
        """Fold the sweep's finished rows into its parts, unless another launch is running on it."""
        if self.launch is None or self.launch.others_alive() or not (store.sweep_dir(self.results_dir, self.spec.name) / "trials").is_dir():
            return
        mine, _ = self.launch.claim([COMPACTION])
        if mine:
            store.compact(self.results_dir, self.spec.name)
            self.launch.release(mine)

    def _new_store_callback(self, groups: dict[str, list[Point]]) -> StoreCallback:
        self.store_callback = StoreCallback(self.results_dir, self.spec.name, self.experiment, groups)
        return self.store_callback

    def _tuner(self, verbose: int) -> tune.Tuner:
        """verbose 0: silent; 1: ctxscale's progress table and one line per finished point; 2: also
        Ray Tune's own output (its config and result boxes per trial)."""
        from .progress import SweepProgress, TensorBoardCurves, trial_name
        from .tracking import tracking_callbacks

        if not ray.is_initialized():
            raise SweepError("Ray is not initialised: call ray.init() (or use the ctxscale CLI) first")
        spec, resources = self.spec, self.spec.resources
        storage = resources.storage_path or str(self.results_dir / spec.name / "_ray")
        if "://" not in storage:  # s3://, gs://, ... stay as they are; local paths must be absolute for Ray
            storage = str(Path(storage).absolute())
        check_fits(resources, node_types())  # what never fits is refused; the rest waits for the autoscaler
        groups = {self.experiment.group_name(group): group for group in self.experiment.group(self.pending)}
        trial_groups = groups  # where a trial finds its points (adapters.group_of)
        if self.search is not None:  # adaptive search: it registers each group in `groups` as it hands it out
            groups, trial_groups = self.search.groups, self.search.universe
        run = self.experiment.run
        max_concurrent = resources.max_concurrent_trials
        if resources.use_ddp:
            if max_concurrent is None:  # the cluster as it is now; a spec for an autoscaling cluster sets it
                max_concurrent = ddp_trials_that_fit(resources, ray.cluster_resources())
            trainable = tune.with_parameters(ddp_trial, groups=trial_groups, run=run, storage_path=storage,
                                             data=self.data, quiet_ray_logs=verbose < 2)
            # the trial itself only drives the TorchTrainer; its workers hold the CPUs and GPUs.
            # (Tune refuses an empty request, and a CPU share would starve the workers on small machines)
            trainable = tune.with_resources(trainable, {"CPU": 0, "memory": 256 * 1024**2})
        else:
            trainable = tune.with_parameters(plain_trial, groups=trial_groups, run=run, data=self.data,
                                             earlier_launches=_earlier_launches(storage, spec.name, trial_groups),
                                             quiet_ray_logs=verbose < 2)
            trainable = tune.with_resources(
                trainable, {"CPU": resources.cpus_per_trial, "GPU": resources.gpus_per_trial})
        tensorboard = self.results_dir / spec.name / "tensorboard"
        callbacks = [self._new_store_callback(groups),
                     TensorBoardCurves(tensorboard, groups), JsonLoggerCallback(), CSVLoggerCallback(),
                     *tracking_callbacks(spec, groups, self.results_dir / spec.name)]
        search_alg = {}
        if self.search is not None:  # adaptive search (ctxscale.search): Tune asks it for each trial
            from ..search.searcher import AdaptiveSearcher, SearchProgress

            self.store_callback.points.update({pid: group[0] for pid, group in trial_groups.items()})
            search_alg = {"search_alg": AdaptiveSearcher(self.search), "num_samples": -1}
        if verbose:
            callbacks.append(SweepProgress(groups) if self.search is None else SearchProgress(groups))
            trials = f"in {_counted(len(groups), 'Ray Tune trial')}" if self.search is None else "the adaptive search may run"
            print(f"ctxscale: {_counted(len(self.pending), 'point')} {trials}; live curves: tensorboard --logdir {tensorboard}",
                  flush=True)
        # Tune's console: its new output prints an experiment box even when told to be silent, its
        # legacy output is silent at verbosity 0; with --verbose, the new output in full
        os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if verbose >= 2 else "0"
        return tune.Tuner(
            trainable,
            param_space=_param_space(groups) if self.search is None else None,
            tune_config=tune.TuneConfig(**search_alg,
                # the spec caps concurrency (DDP trials: the worker groups the cluster holds); Tune and
                # the autoscaler schedule the rest
                max_concurrent_trials=max_concurrent,
                trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                # a finished trial's worker process runs the next one: no new process, torch import or
                # CUDA context per trial, and what it moved to the device stays there (train.synthetic)
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=storage, verbose=2 if verbose >= 2 else 0,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@contextlib.contextmanager
def _tune_logs_without_tensorboard():
    """Tune's JSON and CSV logs of each trial (passed as callbacks), without the TensorBoard logger
    Tune adds by default: it warns at every report of a packed trial (its points, a list), and
    `TensorBoardCurves` writes each point's curves instead. Tune reads the switch when `fit` starts."""
    before = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = before


def _param_space(groups: dict[str, list[Point]]) -> dict:
    """One Tune trial per group, found by `trial.id`, with its grid coordinates as flat config keys
    (one value, or the list of its points' values) for Tune's table and the tracking callbacks."""
    labels = {name: trial_label(name, group) for name, group in groups.items()}
    keys = [k for k in next(iter(labels.values())) if k != "id"]

    def coordinate(key):
        return tune.sample_from(lambda config: labels[config["trial"]["id"]][key])

    return {"trial": tune.grid_search([{"id": name} for name in groups]), **{k: coordinate(k) for k in keys}}


def plan_sweep(spec, results_dir: str | Path, *, data: Any = None, source: Optional[str] = None) -> SweepPlan:
    """Prepare `spec`'s data (unless `data` is given) and find its points not stored as finished.

    Needs no Ray. Raises UserError (SpecError naming `source`, StoreError) when the spec cannot run."""
    results_dir = Path(results_dir).absolute()
    experiment = experiment_of(spec)
    if data is None:
        data = experiment.prepare(spec, source)
    points = experiment.points(spec, data)
    search = None
    if getattr(getattr(spec, "search", None), "method", "grid") == "adaptive":  # the points it may run
        from ..search.searcher import build_search

        search = build_search(spec, experiment, results_dir)
        points = search.points
    stored = store.stored_trials(results_dir, spec.name)
    pending = [point for point in points if stored.get(point.trial_id) not in FINISHED]
    return SweepPlan(spec, experiment, results_dir, data, points, pending, search=search)


def run_sweep(spec, results_dir: str | Path, *, data: Any = None, verbose: int = 1) -> SweepOutcome:
    """Run every point of `spec` not yet stored under `results_dir` (`plan_sweep`, then `SweepPlan.run`).

    Ray must be initialised by the caller when any point is pending."""
    return plan_sweep(spec, results_dir, data=data).run(verbose)
