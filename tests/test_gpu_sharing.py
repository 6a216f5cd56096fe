"""The CLI's line about trials sharing a GPU: whether an NVIDIA MPS daemon runs their kernels side
by side. The daemon is stood in for by what the check looks at: an entry named `control` in its
pipe folder (a socket there; a FIFO here, which the check takes alike) and a live process named like
it (a Python process that renames itself)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctxscale.spec.common import Resources
from ctxscale.sweep.session import gpu_sharing_line, mps_process_alive


@pytest.fixture
def pipes(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    folder = tmp_path / "pipe"
    folder.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(folder))
    return folder


def test_no_line_where_no_gpu_is_shared_or_the_cluster_is_remote(pipes):
    shared = Resources(gpus_per_trial=0.25)
    assert gpu_sharing_line(None, Resources(gpus_per_trial=1), cluster_gpus=1) is None
    assert gpu_sharing_line(None, Resources(gpus_per_trial=0), cluster_gpus=1) is None
    assert gpu_sharing_line(None, shared, cluster_gpus=0) is None
    assert gpu_sharing_line("ray://head:10001", shared, cluster_gpus=8) is None


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="needs Linux's /proc")
def test_trials_sharing_a_gpu_without_mps_get_the_hint(pipes):
    if mps_process_alive():
        pytest.skip("an NVIDIA MPS daemon runs on this machine")
    line = gpu_sharing_line(None, Resources(gpus_per_trial=0.3), cluster_gpus=1)
    assert line.startswith("ctxscale: 3 trials share each GPU and take turns on it"), line
    assert "docs/gpu-and-clusters.md" in line
    os.mkfifo(pipes / "control")  # a daemon killed outright leaves its socket: still no daemon
    assert "take turns" in gpu_sharing_line(None, Resources(gpus_per_trial=0.25), cluster_gpus=1)


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="needs Linux's /proc")
def test_a_running_daemon_is_found(pipes):
    os.mkfifo(pipes / "control")
    # a process that names itself as the kernel shows the daemon (prctl PR_SET_NAME = 15)
    stand_in = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'nvidia-cuda-mps', 0, 0, 0); "
                "print('named', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", stand_in], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "named"
        line = gpu_sharing_line(None, Resources(gpus_per_trial=0.25), cluster_gpus=2)
    finally:
        process.kill()
        process.wait()
    assert line == (f"ctxscale: NVIDIA MPS daemon found ({pipes}): the 4 trials on each GPU run their "
                    "kernels side by side"), line
