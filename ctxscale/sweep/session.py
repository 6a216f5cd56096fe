"""Where a sweep launched from the command line runs: the results folder, checked before any work,
and the Ray it joins or starts, with Ray's console kept to what needs the user.

Ray's and Tune's own switches (documented environment variables) do the quieting; each is set
with `setdefault`, so a user's own setting wins, and before Ray is imported, where Ray reads it:

- `TUNE_WARN_THRESHOLD_S`: Tune warns when one step of its loop takes longer ("... may be a
  performance bottleneck"); ctxscale's store callback writes Parquet inside that step by design.
- `TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S`: keeping one checkpoint per trial
  makes Tune snapshot its state often, and warn each time.
- `RAY_AUTH_MODE=token` for a Ray started here: the default Ray would choose anyway, stated, so
  that Ray does not announce it (a cluster's own mode is `cluster_auth`'s affair).
Ray's INFO lines from the trial processes are kept out by the trials themselves
(`sweep.adapters`), and Tune's TensorBoard logger, which warns about every packed report, is left
out in `sweep.runner`. On Ctrl-C Tune warns that it stopped, advises `Tuner.restore` and lists
every trial that had not reported yet; ctxscale answers a stop with its own line (running the same
command resumes), so `HandledByCtxscale` drops those three.

Library callers (a notebook, a test) start Ray themselves: `sweep.runner` never calls `ray.init`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from ..errors import UserError

QUIET_TUNE = {"TUNE_WARN_THRESHOLD_S": "60", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


class ClusterError(UserError):
    pass


def cluster_address(address: str | None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


class HandledByCtxscale(logging.Filter):
    """Drops the warnings Tune gives on Ctrl-C (see the module docstring): they advise
    `Tuner.restore`, where ctxscale's way to resume is the same command again."""

    STARTS = ("Stop signal received", "Experiment has been interrupted", "Training has been interrupted",
              "Failed to fetch metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.STARTS)


def quiet_ray_console(address: str | None) -> None:
    """Set Ray's console switches (see the module docstring); call before Ray is imported."""
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, HandledByCtxscale) for f in logger.filters):
            logger.addFilter(HandledByCtxscale())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for key, value in QUIET_TUNE.items():
        os.environ.setdefault(key, value)
    cluster_auth(address)
    if cluster_address(address) is None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def cluster_auth(address: str | None) -> None:
    """Ray >= 2.59 clusters from `ray start` want a token, and read RAY_AUTH_MODE when Ray is
    imported: where a cluster address and a token are at hand, say so before anything imports Ray."""
    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        Path("~/.ray/auth_token").expanduser().is_file()
    if cluster_address(address) and has_token:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _resources_line(resources: dict) -> str:
    """'2 CPUs, 1 GPU, 14.8 GiB memory': what trials can ask for, as a reader counts it."""
    parts = [f"{resources.get('CPU', 0):g} CPUs"]
    if resources.get("GPU"):
        parts.append(f"{resources['GPU']:g} GPU{'s' if resources['GPU'] != 1 else ''}")
    if resources.get("memory"):
        parts.append(f"{resources['memory'] / 1024**3:.1f} GiB memory")
    return ", ".join(parts)


def start_ray(address: str | None, quiet: bool = False) -> list[str]:
    """Connect to `address` (or RAY_ADDRESS), else start a local Ray in this process; where this
    process has Ray already (a notebook or a test calling the CLI's `main`), use that. Returns the
    lines that say where the sweep runs."""
    quiet_ray_console(address)
    import ray

    if ray.is_initialized():
        return []
    # NVLink multicast off in every process, Ray workers included (see the GPU notes)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    cluster = cluster_address(address)
    # The driver imports torch once the sweep runs (tensorboardX does, for the live curves). Begun
    # here, on a thread of its own, the import overlaps Ray's start, in which this thread mostly
    # waits, instead of holding the first trials back: on an H100 machine the driver's torch
    # import ended 2.2 s after the trials were submitted, and their processes started after it.
    threading.Thread(target=_import_torch, name="ctxscale-import-torch").start()
    try:
        # A Ray started here serves its dashboard on this machine only (a cluster's is its own
        # affair), and none under --quiet, which would not print its address: starting it held
        # ray.init 1-2.6 s longer on the 2-core CPU.
        # A local Ray's workers inherit this process's environment. A cluster's get the variable
        # through the job's runtime environment, which a local Ray goes without: with one, an
        # actor's process starts through Ray's runtime-environment agent (on a 16-core H100
        # machine four actors of a bare Ray answered 2.1 s after their submission with one, 0.5 s
        # without; bench/startup_probe.py)
        local = {"dashboard_host": "127.0.0.1", "include_dashboard": False if quiet else None}
        context = ray.init(address=cluster, **({} if cluster else local),
                           runtime_env={"env_vars": {"NCCL_NVLS_ENABLE": "0"}} if cluster else None,
                           # --quiet: not even Tune's warnings (Ctrl-C's advice to call Tuner.restore is not
                           # ctxscale's way: running the same command again is)
                           logging_level="ERROR" if quiet else "WARNING", configure_logging=True,
                           log_to_driver=not quiet)  # failed trials keep their error in the store either way
    except (ConnectionError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[-1][:300]
        raise ClusterError(f"--address {cluster}: cannot connect to the Ray cluster ({detail}). A cluster "
                           "started with `ray start` uses token authentication: set RAY_AUTH_MODE=token and "
                           "give its token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
    where = f"cluster at {context.address_info.get('gcs_address', cluster)}" if cluster else \
        "local Ray started in this process"
    lines = [f"ctxscale: running on {where} ({_resources_line(ray.cluster_resources())})"]
    if context.dashboard_url and not quiet:
        lines.append(f"ctxscale: Ray dashboard at http://{context.dashboard_url}")
    return lines


def _import_torch() -> None:
    with contextlib.suppress(ImportError):  # a failure shows where torch is used
        import torch  # noqa: F401


def mps_process_alive() -> bool:
    """Whether a process of NVIDIA's MPS (its control daemon or server) runs on this machine."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "nvidia-cuda-mps":  # the kernel cuts names to 15 characters
                return True
        except OSError:  # the process ended while we looked
            continue
    return False


def _mps_daemon_running() -> Path | None:
    """The pipe folder of an NVIDIA MPS control daemon this process's CUDA would join, if one runs:
    its `control` socket in CUDA_MPS_PIPE_DIRECTORY (NVIDIA's default /tmp/nvidia-mps) and a process
    of that name alive (a daemon killed outright leaves the socket behind)."""
    pipes = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps")
    return pipes if (pipes / "control").exists() and mps_process_alive() else None


def gpu_sharing_line(address: str | None, resources, cluster_gpus: float) -> str | None:
    """One line where trials share a GPU of a Ray started here: whether NVIDIA's MPS runs their
    kernels side by side, or they take turns (on one H100, the study's synthetic grid took 154 s
    under MPS against 197 s without). A cluster's nodes are not visible from here: no line."""
    if cluster_address(address) or not cluster_gpus or not 0 < resources.gpus_per_trial < 1:
        return None
    sharing = int(1 / resources.gpus_per_trial + 1e-9)  # Ray fits this many on one GPU
    pipes = _mps_daemon_running()
    if pipes is not None:
        return f"ctxscale: NVIDIA MPS daemon found ({pipes}): the {sharing} trials on each GPU run their kernels side by side"
    return (f"ctxscale: {sharing} trials share each GPU and take turns on it; start NVIDIA's MPS daemon "
            "to run their kernels side by side (docs/gpu-and-clusters.md, 'Trials sharing a GPU')")


def _job_working_dir() -> str | None:
    """The temporary working directory of a `ray job submit --working-dir` job this process runs as."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    return (job.get("runtime_env") or {}).get("working_dir")


def results_folder(spec, results: str | None) -> Path:
    """The results folder (`results` over the spec's), absolute, checked readable before any work."""
    from .. import store
    from ..spec.common import results_root

    folder = results_root(spec.resources, results)
    storage = spec.resources.storage_path
    for what, path in (("results folder", str(folder)), ("resources.storage_path", storage)):
        if path and "://" not in path and not Path(path).is_absolute() and _job_working_dir():
            # `ray job submit --working-dir` runs us in a temporary copy that Ray deletes: files there are lost
            raise ClusterError(f"{what} {path}: a relative path inside a Ray job runs in the job's temporary "
                               f"working directory ({Path.cwd()}); give an absolute one, e.g. --results \"$PWD/results\"")
    folder = folder.absolute()  # made absolute at launch: trials and callbacks write where the user asked
    if folder.exists() and not folder.is_dir():
        raise ClusterError(f"--results {folder}: exists and is not a folder")
    store.check_readable(folder, spec.name)  # a corrupt store stops us before any work
    return folder
