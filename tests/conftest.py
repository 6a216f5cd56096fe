"""Shared fixtures: one real local Ray for the session, and one real tiny synthetic sweep."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only test cluster

TINY_SPEC = {
    "name": "tiny",
    "experiment": "synthetic",
    "grid": {"context_length": [8, 16, 24], "data_size": [2000, 4000], "seed": [0, 1]},
    "data": {"val_rows": 1000, "string_length": 32, "tasks": "study50"},
    "model": {"hidden": 16},
    "training": {"batch_size": 500, "max_epochs": 4, "patience": 2},
}


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep generated data out of the user's cache."""
    os.environ["CTXSCALE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray with 2 CPUs (a small object store, as the CI machine is small)."""
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_results(ray_cluster, tmp_path_factory) -> Path:
    """Results root of a real tiny synthetic sweep named 'tiny' (12 trials) run on Ray Tune."""
    from ctxscale.spec import parse_spec
    from ctxscale.sweep.prepare import prepare_data
    from ctxscale.sweep.runner import run_sweep

    root = tmp_path_factory.mktemp("results")
    spec = parse_spec(TINY_SPEC)
    run_sweep(spec, root, data=prepare_data(spec), verbose=0)
    return root
