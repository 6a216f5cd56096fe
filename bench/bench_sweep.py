"""A whole synthetic sweep with `resources.pack: 1` and with `pack: auto`: wall times, speed-up, and
whether the two best-loss tables agree.

Each run is `ctxscale sweep` in a fresh process (a local Ray started by the CLI, as a user runs
it) into its own temporary results folder. Where `nvidia-smi` finds a GPU, the GPU's SM use is
sampled every 500 ms during each run and its mean printed.

    python bench/bench_sweep.py [--spec sweeps/synthetic.yaml] [--packs 1,auto]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ctxscale import load_results
from ctxscale.tables import best_loss_table


def _gpu_sampler():
    """A running `nvidia-smi` that prints SM use (%) every 500 ms, or None without a GPU."""
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        return None
    return subprocess.Popen(
        ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
        stdout=subprocess.PIPE, text=True)


def run_once(spec: dict, pack, folder: Path) -> tuple[float, str, float | None]:
    """(wall seconds, best-loss table, mean SM use % or None) of one `ctxscale sweep` run."""
    spec = {**spec, "resources": {**spec.get("resources", {}), "pack": pack}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    sampler = _gpu_sampler()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ctxscale.cli", "sweep", str(path), "--quiet",
                           "--results", str(folder / "results")], capture_output=True, text=True)
    wall = time.perf_counter() - started
    sm_use = None
    if sampler is not None:
        sampler.terminate()
        samples = [float(v) for line in sampler.communicate()[0].splitlines() for v in line.split(",") if v.strip()]
        sm_use = sum(samples) / len(samples) if samples else None
    if proc.returncode:
        sys.exit(f"pack {pack}: ctxscale sweep exited {proc.returncode}\n{proc.stderr[-3000:]}")
    trials = load_results(folder / "results", sweep=spec["name"])
    failed = trials[trials["status"] != "ok"]
    if len(failed):
        sys.exit(f"pack {pack}: {len(failed)} trials not ok: {failed['error'].iloc[0][-2000:]}")
    return wall, best_loss_table(trials), sm_use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="sweeps/synthetic.yaml", help="the sweep spec to run twice")
    parser.add_argument("--packs", default="1,auto",
                        help="comma-separated pack settings to run (e.g. 'auto' alone where pack 1 takes too long)")
    args = parser.parse_args()
    spec = yaml.safe_load(Path(args.spec).read_text())
    packs = [p if p == "auto" else int(p) for p in args.packs.split(",")]
    results = {}
    for pack in packs:
        with tempfile.TemporaryDirectory() as tmp:
            results[pack] = run_once(spec, pack, Path(tmp))
        wall, table, sm_use = results[pack]
        use = f", mean GPU SM use {sm_use:.0f} %" if sm_use is not None else ""
        print(f"pack {pack}: {wall:.1f} s wall{use}\n{table}\n", flush=True)
    if not {1, "auto"} <= set(results):
        return
    (unpacked, table_1, _), (packed, table_auto, _) = results[1], results["auto"]
    print(f"{args.spec}: pack 1 {unpacked:.1f} s, pack auto {packed:.1f} s, speed-up {unpacked / packed:.2f}x, "
          f"best-loss tables {'agree' if table_1 == table_auto else 'DIFFER'}")


if __name__ == "__main__":
    main()
