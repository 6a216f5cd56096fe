"""Where a packed group's GPU time goes, Ray-free, with `sweeps/synthetic-paper.yaml`'s model and data.

Part 1: one group of 12 members at 2M rows, seconds per training epoch and per validation pass,
full float32 (the anchor) against TF32 and bfloat16 autocast (`training.precision`), then a table
of the GPU kernels of 10 steps and one validation pass in the fastest setting.
Part 2: whole groups (100k, 400k, 2M rows, seed 0) in each of `--whole` (TF32 by default),
time-limited: epochs, when each member stopped, best losses, wall time. Writes
$OUT/probe_log.json (every epoch's members).

    python bench/bench_packed_group.py [--whole tf32 bf16]      # on a CUDA machine
"""
import argparse
import json
import os
import time

import torch
import yaml

from ctxscale.spec import parse_spec
from ctxscale.experiments.grid import expand_grid
from ctxscale.sweep.prepare import prepare_data
from ctxscale.train import synthetic as loop

parser = argparse.ArgumentParser()
parser.add_argument("--whole", nargs="*", default=["tf32"], choices=["fp32", "tf32", "bf16"],
                    help="settings to train whole groups in (part 2)")
args = parser.parse_args()
out = os.environ.get("OUT", "/tmp")
# setting -> (training.tf32, training.precision)
SETTINGS = {"fp32": (False, "float32"), "tf32": (True, "float32"), "bf16": (True, "bfloat16")}
raw = yaml.safe_load(open("sweeps/synthetic-paper.yaml"))
t = time.perf_counter()
spec = parse_spec(raw)
data = prepare_data(spec)
print(f"data ready in {time.perf_counter() - t:.1f} s", flush=True)

def points(D, setting="tf32", seed=0, epochs=200):
    tf32, precision = SETTINGS[setting]
    r = dict(raw, training=dict(raw["training"], max_epochs=epochs, tf32=tf32, precision=precision))
    r["grid"] = dict(raw["grid"], data_size=[D], seed=[seed])
    return expand_grid(parse_spec(r))

def sync():
    torch.cuda.synchronize()

def flops_per_row(width=94 + 50):
    return 2 * (width * 400 + 400 * 200 + 200 * 400 + 400 * 2)

def train_steps(run, perm, steps):
    for step in range(steps):
        loop.train_step(run, perm[step * 10_000:(step + 1) * 10_000])

# 1. one group of 12 at D = 2M: seconds per training epoch and per evaluation in each setting
for setting in SETTINGS:
    run = loop.setup_synthetic(points(2_000_000, setting), data)
    M = len(run.points)
    for rep in range(2):
        sync(); t0 = time.perf_counter()
        perm = torch.randperm(len(run.train), generator=run.order).to(run.device)
        steps = len(run.train) // 10_000
        train_steps(run, perm, steps)
        sync(); t1 = time.perf_counter()
        loop._evaluate(run.model, run.val, 0, 1, run.device, bf16=run.bf16)
        sync(); t2 = time.perf_counter()
        tr = 3 * M * len(run.train) * flops_per_row() / (t1 - t0) / 1e12
        ev = M * len(run.val) * flops_per_row() / (t2 - t1) / 1e12
        print(f"{setting} M={M} train epoch {t1 - t0:.3f} s ({tr:.0f} TFLOP/s, {(t1-t0)/steps*1e3:.2f} ms/step), "
              f"eval {t2 - t1:.3f} s ({ev:.0f} TFLOP/s)", flush=True)
    if setting == "bf16":  # where the GPU time goes: 10 training steps and one validation pass, per kernel
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            train_steps(run, perm, 10)
            loop._evaluate(run.model, run.val, 0, 1, run.device, bf16=True)
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)
    del run
torch.cuda.empty_cache()

# 2. whole groups in each --whole setting, time-limited: epochs, members left, time per epoch
class Stop(Exception):
    pass
log = []
for setting, D, limit in [(s, D, limit) for s in args.whole for D, limit in ((100_000, 30), (400_000, 25), (2_000_000, 35))]:
    t0 = time.perf_counter()
    def report(epoch_metrics, D=D, t0=t0, limit=limit, setting=setting):
        now = time.perf_counter() - t0
        log.append({"setting": setting, "D": D, "t": now, "epoch": epoch_metrics[0]["epoch"],
                    "members": [(m["point"].split("_")[0], round(m["val_loss"], 5), m["best_epoch"], m["status"],
                                 round(m["best_val_loss"], 5)) for m in epoch_metrics]})
        if now > limit:
            raise Stop
    try:
        loop.run_synthetic_group(points(D, setting), report, data)
        print(f"{setting} D={D}: finished at epoch {log[-1]['epoch']} in {time.perf_counter() - t0:.1f} s", flush=True)
    except Stop:
        print(f"{setting} D={D}: stopped at epoch {log[-1]['epoch']} after {time.perf_counter() - t0:.1f} s, "
              f"{len(log[-1]['members'])} members left", flush=True)
    mine = [e for e in log if (e["setting"], e["D"]) == (setting, D)]
    ends = [(e["epoch"], m[0], m[2], m[4]) for e in mine for m in e["members"] if m[3] != "running"]
    print("  stopped (epoch, member, best epoch, best val loss):", ends, flush=True)
    last = mine[-1]
    print("  last epoch:", last["epoch"], last["members"], flush=True)
json.dump(log, open(f"{out}/probe_log.json", "w"))
