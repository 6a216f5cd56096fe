"""A test stuck in C code, holding the GIL, cannot outlive its timeout (conftest's hard stop).

pytest-timeout's alarm (and its timer thread) need the stuck thread to get back to Python; a
thread that waits on a lock while holding the GIL (as a driver can inside a Ray call) never does.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STUCK = '''
import ctypes


def test_stuck_in_c_holding_the_gil():
    libc = ctypes.PyDLL(None)  # PyDLL: the call keeps the GIL
    mutex = ctypes.create_string_buffer(64)  # zeroed: an unlocked default pthread mutex
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # waits for itself, forever; signals do not end the wait
'''


def test_a_test_stuck_in_c_is_stopped_with_its_stack(tmp_path):
    (tmp_path / "test_stuck.py").write_text(STUCK)
    tests = Path(__file__).parent
    env = os.environ | {"CTXSCALE_TEST_HARD_STOP_GRACE_S": "1",
                        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           "--timeout", "2", "--rootdir", str(tmp_path), str(tmp_path / "test_stuck.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the watchdog's dump names the stuck test's frame; the alarm alone would have waited forever
    assert "test_stuck_in_c_holding_the_gil" in proc.stderr and "most recent call first" in proc.stderr, proc.stderr
    assert took < 60
