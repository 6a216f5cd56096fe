"""Where a packed group's GPU time goes, Ray-free, with `sweeps/synthetic-paper.yaml`'s model and data,
and the eager validation pass against the fused one (`ctxscale.train.fused_eval`) in the same call.

Part 1: one group of 12 members at 2M rows, seconds per training epoch and per validation pass in
each of `--settings` (full float32, TF32, bfloat16 autocast: `training.precision`); in bfloat16 each
of `--eval` (eager: layer by layer; lean: library kernels, fewer passes; fused: one kernel), with the largest difference between their
losses, then a table of the GPU kernels of 10 steps and one validation pass.
Part 2: whole groups (100k, 400k, 2M rows, seed 0) in each `--whole` setting and `--eval` way:
epochs, each member's stopping and best epoch and best loss side by side, wall time. Writes
$OUT/probe_log.json (every epoch's members).

    python bench/bench_packed_group.py [--settings bf16] [--whole bf16] [--eval eager lean fused]   # CUDA
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
from ctxscale.train import fused_eval, synthetic as loop

parser = argparse.ArgumentParser()
parser.add_argument("--settings", nargs="*", default=["fp32", "tf32", "bf16"], choices=["fp32", "tf32", "bf16"],
                    help="settings to time an epoch and a validation pass in (part 1)")
parser.add_argument("--whole", nargs="*", default=["tf32"], choices=["fp32", "tf32", "bf16"],
                    help="settings to train whole groups in (part 2)")
parser.add_argument("--eval", nargs="+", default=["eager", "lean", "fused"], choices=["eager", "lean", "fused"],
                    help="validation passes to compare, the first the reference (fused_eval.choose_pass)")
args = parser.parse_args()
out = os.environ.get("OUT", "/tmp")
# setting -> (training.tf32, training.precision)
SETTINGS = {"fp32": (False, "float32"), "tf32": (True, "float32"), "bf16": (True, "bfloat16")}
raw = yaml.safe_load(open("sweeps/synthetic-paper.yaml"))
t = time.perf_counter()
spec = parse_spec(raw)
data = prepare_data(spec)
print(f"data ready in {time.perf_counter() - t:.1f} s; {torch.cuda.get_device_name()}", flush=True)

def points(D, setting="tf32", seed=0, epochs=200):
    tf32, precision = SETTINGS[setting]
    r = dict(raw, training=dict(raw["training"], max_epochs=epochs, tf32=tf32, precision=precision))
    r["grid"] = dict(raw["grid"], data_size=[D], seed=[seed])
    return expand_grid(parse_spec(r))

def use(way):
    """Which validation pass `_evaluate` takes (fused_eval.choose_pass reads this on every call)."""
    os.environ["CTXSCALE_EVAL_PASS"] = way

def sync():
    torch.cuda.synchronize()

def flops_per_row(width=94 + 50):
    return 2 * (width * 400 + 400 * 200 + 200 * 400 + 400 * 2)

def train_steps(run, perm, steps):
    for step in range(steps):
        loop.train_step(run, perm[step * 10_000:(step + 1) * 10_000])

def timed_eval(run, way, reps=3):
    use(way)
    loop._evaluate(run.model, run.val, 0, 1, run.device, bf16=run.bf16)  # the fused kernel autotunes here
    seconds = []
    for _ in range(reps):
        sync(); t0 = time.perf_counter()
        result = loop._evaluate(run.model, run.val, 0, 1, run.device, bf16=run.bf16)
        sync(); seconds.append(time.perf_counter() - t0)
    return min(seconds), result

# 1. one group of 12 at D = 2M: seconds per training epoch and per validation pass
for setting in args.settings:
    run = loop.setup_synthetic(points(2_000_000, setting), data)
    M, steps = len(run.points), len(run.train) // 10_000
    ways = args.eval if setting == "bf16" else ["eager"]
    for way in ways:
        use(way)
        print(f"asked for the {way} pass, got {fused_eval.choose_pass(run.model, run.device, bf16=True)}", flush=True)
    for rep in range(2):
        sync(); t0 = time.perf_counter()
        perm = torch.randperm(len(run.train), generator=run.order).to(run.device)
        train_steps(run, perm, steps)
        sync(); t1 = time.perf_counter()
        tr = 3 * M * len(run.train) * flops_per_row() / (t1 - t0) / 1e12
        line = f"{setting} M={M} train epoch {t1 - t0:.3f} s ({tr:.0f} TFLOP/s, {(t1 - t0) / steps * 1e3:.2f} ms/step)"
        results = {}
        for way in ways:
            seconds, results[way] = timed_eval(run, way)
            if way == "fused" and fused_eval._FAILED:
                line += f" [the fused kernel FAILED, these are the eager pass's: {fused_eval._FAILED[0][:300]}]"
            line += f", eval {way} {seconds:.4f} s ({M * len(run.val) * flops_per_row() / seconds / 1e12:.0f} TFLOP/s)"
        a = results[ways[0]]
        for way, b in list(results.items())[1:]:
            line += (f"; {way} - {ways[0]}: max |d val loss| {max(abs(x[0] - y[0]) for x, y in zip(a, b)):.2e}, "
                     f"max |d task loss| {max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x[1], y[1])):.2e}")
        print(line, flush=True)
    if setting == "bf16":  # where the GPU time goes: 10 training steps, then one validation pass each way
        for way in ways:
            use(way)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                if way == ways[0]:
                    train_steps(run, perm, 10)
                loop._evaluate(run.model, run.val, 0, 1, run.device, bf16=True)
                sync()
            print(f"-- kernels: {'10 training steps and ' if way == ways[0] else ''}one {way} validation pass")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12), flush=True)
    del run
torch.cuda.empty_cache()

# 2. whole groups in each --whole setting and --eval way, time-limited
class Stop(Exception):
    pass
log, ends = [], {}
for setting, D, limit in [(s, D, limit) for s in args.whole for D, limit in ((100_000, 60), (400_000, 60), (2_000_000, 90))]:
    ways = args.eval if setting == "bf16" else ["eager"]
    for way in ways:
        use(way)
        t0 = time.perf_counter()
        def report(epoch_metrics, D=D, t0=t0, limit=limit, setting=setting, way=way):
            now = time.perf_counter() - t0
            log.append({"setting": setting, "eval": way, "D": D, "t": now, "epoch": epoch_metrics[0]["epoch"],
                        "members": [(m["point"].split("_")[0], m["val_loss"], m["best_epoch"], m["status"],
                                     m["best_val_loss"]) for m in epoch_metrics]})
            if now > limit:
                raise Stop
        try:
            loop.run_synthetic_group(points(D, setting), report, data)
            state = "finished"
        except Stop:
            state = "stopped (time limit)"
        mine = [e for e in log if (e["setting"], e["eval"], e["D"]) == (setting, way, D)]
        print(f"{setting} {way} D={D}: {state} at epoch {mine[-1]['epoch']} in {time.perf_counter() - t0:.1f} s", flush=True)
        # member -> (stopping epoch, best epoch, best val loss)
        ends[setting, way, D] = {m[0]: (e["epoch"], m[2], m[4]) for e in mine for m in e["members"] if m[3] != "running"}
    for way in ways[1:]:
        a, b = ends[setting, ways[0], D], ends[setting, way, D]
        print(f"  {'member':>6} | {ways[0]}: stop, best epoch, best loss | {way}: stop, best epoch, best loss | d best loss")
        for member in sorted(a, key=lambda name: int(name[1:])):
            x, y = a[member], b.get(member, (None, None, float("nan")))
            print(f"  {member:>6} | {x[0]} {x[1]} {x[2]:.6f} | {y[0]} {y[1]} {y[2]:.6f} | {y[2] - x[2]:+.2e}")
        print(f"  {way}: same stopping and best epochs as {ways[0]}: "
              f"{all(a[m][:2] == b.get(m, (None, None))[:2] for m in a)}", flush=True)
    if len(ways) == 1:
        print("  stopped (member: epoch, best epoch, best val loss):", ends[setting, ways[0], D], flush=True)
json.dump(log, open(f"{out}/probe_log.json", "w"))
