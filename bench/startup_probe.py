"""What a GPU sweep's start-up is made of, step by step in one process: torch's import, the synthetic
trainer's, CUDA's initialisation, the spec and its data set (from the cache after the first run),
Ray's start, the data set through Ray's object store, and the validation and training rows of the
largest group unpacked onto the device. Then, in fresh processes, how soon four actors of a bare
Ray answer after their submission, without and with a job runtime environment (the CLI's local Ray
has none). Prints one line per step.

    python bench/startup_probe.py [--spec sweeps/synthetic-paper.yaml] [--repeats 2]

Run it under an NVIDIA MPS daemon (see bench/gpu_sweep.sh's MPS=1) to time CUDA's start as the
trials of a shared GPU meet it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

ACTORS = r"""
import os, sys, time
import ray
kind = sys.argv[1]
runtime_env = {"env_vars": {"NCCL_NVLS_ENABLE": "0"}} if kind == "runtime_env" else None
# four logical CPUs whatever the machine has, so that the four actors fit
ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", runtime_env=runtime_env)
time.sleep(3)  # the driver's own work between Ray's start and the first trial


@ray.remote(num_cpus=1)
class Probe:
    def now(self):
        return time.time()


submitted = time.time()
probes = [Probe.remote() for _ in range(4)]
ready = max(ray.get([probe.now.remote() for probe in probes]))
print(f"four actors ready {ready - submitted:.2f} s after their submission ({kind})")
"""


class Laps:
    def __init__(self):
        self.last = time.perf_counter()

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        print(f"{what}: {now - self.last:.2f} s", flush=True)
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="sweeps/synthetic-paper.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the actor test, each way")
    args = parser.parse_args()

    lap = Laps()
    import torch
    lap("import torch")
    from ctxscale.train import synthetic
    lap("import the synthetic trainer")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.init()
        lap("CUDA initialised")
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        lap("first tensor on the device")
    from ctxscale.spec import load_spec
    from ctxscale.sweep.runner import plan_sweep

    spec = load_spec(args.spec, [])
    plan = plan_sweep(spec, tempfile.mkdtemp(prefix="startup_probe_"))  # an empty store: every point pending
    lap("the spec and its data set (cached after a first run)")
    import ray

    ray.init(include_dashboard=False, logging_level="ERROR")
    lap("ray.init, no dashboard")
    data = ray.get(ray.put(plan.data))
    lap("the data set through the object store")
    width, largest = max(spec.grid.context_length), max(spec.grid.data_size)
    synthetic._on_device(data, "val", data.val_rows, width, device, spec.data.encoding)
    synthetic._on_device(data, "train", largest, width, device, spec.data.encoding)
    if device.type == "cuda":
        torch.cuda.synchronize()
    lap(f"validation rows and {largest:,} training rows unpacked onto {device.type}")
    ray.shutdown()
    for _ in range(args.repeats):
        for kind in ("no runtime_env", "runtime_env"):
            subprocess.run([sys.executable, "-c", ACTORS, kind], check=True, stderr=subprocess.DEVNULL,
                           timeout=300)


if __name__ == "__main__":
    main()
