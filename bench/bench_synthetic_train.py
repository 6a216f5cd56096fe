"""Throughput of the synthetic training loop, and a packed fractional-GPU sweep.

Part 1 runs the Ray-free loop at the study's sizes (2M training rows, 2M validation rows, batch
10,000, the 512-wide MLP) for a few epochs per context length and prints samples/s and seconds per
epoch. Part 2 (``--sweep``) runs a small grid through the real `ctxscale sweep` path on the local
Ray with four trials sharing each GPU, and prints its wall time and the stored rows.

    python bench/bench_synthetic_train.py [--epochs 5] [--device cuda] [--sweep]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ctxscale.data.synthetic import generate
from ctxscale.spec import parse_spec
from ctxscale.spec.synthetic import load_task_list
from ctxscale.spec.point import Point
from ctxscale.train.synthetic import run_synthetic_trial


def loop_throughput(device: str, epochs: int, data_size: int, val_rows: int) -> None:
    started = time.perf_counter()
    data = generate(data_size, val_rows, load_task_list("study50"), 100, seed=0)
    print(f"generated {data_size + val_rows:,} rows in {time.perf_counter() - started:.1f} s")
    spec = parse_spec({
        "name": "bench", "experiment": "synthetic",
        "grid": {"context_length": [27, 94], "data_size": [data_size]},
        "data": {"val_rows": val_rows}, "model": {"hidden": 512},
        "training": {"batch_size": 10_000, "max_epochs": epochs, "patience": epochs, "device": device},
    })
    print(f"{'context':>8} {'rows':>10} {'epochs':>6} {'samples/s':>12} {'s/epoch':>8} {'best val':>9}")
    for context_length in spec.grid.context_length:
        trial = Point("bench", "", spec, context_length=context_length, data_size=data_size, seed=0)
        result = run_synthetic_trial(trial, lambda m, checkpoint_dir=None: None, data)
        print(f"{context_length:>8} {data_size:>10,} {result['epoch']:>6} {result['samples_per_s']:>12,.0f} "
              f"{result['wall_s'] / result['epoch']:>8.2f} {result['best_val_loss']:>9.4f}")


def packed_sweep(device: str) -> None:
    spec = {
        "name": "bench-packed", "experiment": "synthetic",
        "grid": {"context_length": [27, 40, 60, 94], "data_size": [200_000, 1_000_000], "seed": [0]},
        "data": {"val_rows": 200_000, "train_rows": 1_000_000},
        "model": {"hidden": 512},
        "training": {"batch_size": 10_000, "max_epochs": 30, "patience": 10, "device": device},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.25 if device == "cuda" else 0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ctxscale.cli", "sweep", str(path), "--quiet",
                               "--results", str(Path(tmp) / "results")], capture_output=True, text=True)
        print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "")
        print(f"packed sweep: 8 trials, 4 per GPU, exit {proc.returncode}, wall {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-size", type=int, default=2_000_000)
    parser.add_argument("--val-rows", type=int, default=2_000_000)
    parser.add_argument("--sweep", action="store_true", help="also run the packed fractional-GPU sweep")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, torch {torch.__version__}")
    loop_throughput(args.device, args.epochs, args.data_size, args.val_rows)
    if args.sweep:
        packed_sweep(args.device)


if __name__ == "__main__":
    main()
