"""The README's cluster recipe on a real `ray start` cluster: `ray job submit --working-dir`."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from ctxscale import store

from conftest import TINY_SPEC

REPO = Path(__file__).resolve().parents[1]


def _console_script(name: str) -> str:
    """The `name` command of the Python running the tests: beside its interpreter (a venv's bin,
    which need not be on PATH when the venv's python is run by its path), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:  # Ray's package unpacked onto sys.path without its console scripts
        pytest.skip(f"no `{name}` command beside {sys.executable} or on PATH: install Ray with pip to run this test")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_of(marker: str) -> list[int]:
    """The processes whose command line names `marker` (this test's own Ray temp folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def head_node():
    """A `ray start --head` cluster with its dashboard (jobs need it) on free ports. Its own temp
    folder keeps it out of /tmp/ray, so `ray.init()` elsewhere on the machine never joins it; it is
    stopped by the ids of its own processes (`ray stop` would stop every Ray on the machine)."""
    temp = tempfile.mkdtemp(prefix="ctxr", dir="/tmp")  # short: Ray's socket paths live under it
    dashboard = _free_port()
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    command = [_console_script("ray"), "start", "--head", "--port", str(_free_port()), "--dashboard-port", str(dashboard),
               "--include-dashboard", "true", "--dashboard-agent-listen-port", str(_free_port()),
               "--ray-client-server-port", str(_free_port()), "--num-cpus", "2", "--temp-dir", temp,
               "--disable-usage-stats"]
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for pid in _pids_of(temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_writes_results_where_the_user_asked(head_node, tmp_path):
    address, env = head_node
    job_dir = tmp_path / "job"  # what `--working-dir .` uploads: here, only the spec
    job_dir.mkdir()
    spec = TINY_SPEC | {"name": "submitted", "grid": {"context_length": [8, 16], "data_size": [1000], "seed": [0]},
                        "training": {"batch_size": 500, "max_epochs": 2, "patience": 2}}
    (job_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    submit = [_console_script("ray"), "job", "submit", "--address", address, "--working-dir", str(job_dir), "--",
              sys.executable, "-m", "ctxscale.cli", "sweep", "spec.yaml", "--quiet"]

    # a relative results folder would land in the job's temporary copy: refused, nothing run
    proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert "ctxscale: error: results folder results: a relative path inside a Ray job" in output, output[-3000:]

    results = tmp_path / "results"  # the recipe's --results "$PWD/results", as the submitting shell expands it
    proc = subprocess.run(submit + ["--results", str(results)], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0 and "succeeded" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    trials = store.load_results(results, sweep="submitted")
    assert sorted(trials["context_length"]) == [8, 16] and set(trials["status"]) == {"ok"}
