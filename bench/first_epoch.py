"""What a synthetic trial's first epoch costs beyond a steady one: N processes start at once, as the
trials sharing a GPU do, and each trains one packed group (`sweeps/synthetic-paper.yaml`'s model, 12
context lengths, one data size) for two epochs, Ray-free, and prints one row of seconds per process:

    import: torch and the trainer | cuda: CUDA's context | rows: the group's rows onto the device |
    set-up: the whole of the group's set-up (rows included) | first step: the first training step
    (torch.compile's epilogue compiles here) | first pass: the first validation pass (the fused
    kernel is built here) | epoch 1, epoch 2: each epoch, its pass included | process: start to end

    python bench/first_epoch.py [--procs 4] [--data-size 2000000] [--cache DIR] [--config I]

`--cache DIR`: Triton's and Inductor's on-disk caches in DIR (a fresh folder: a cold start, as on a
new machine; run again with the same folder for a warm one); default: the user's own caches.
`--config I`: the fused kernel in the I-th of the six configurations below (default: the one
`fused_eval.CONFIG` names); `--configs`: time each one's pass over the validation rows, in one
process, and print them.
"""
import argparse
import json
import os
import subprocess
import sys
import time

STARTED = time.time()
parser = argparse.ArgumentParser()
parser.add_argument("--procs", type=int, default=4)
parser.add_argument("--data-size", type=int, default=2_000_000)
parser.add_argument("--cache", help="Triton's and Inductor's cache folder (default: the user's)")
parser.add_argument("--config", type=int, help="the fused kernel in the I-th configuration of CANDIDATES")
parser.add_argument("--configs", action="store_true", help="time each configuration's validation pass")
parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
args = parser.parse_args()

if not args.child and not args.configs:  # the parent: start the processes together, then tabulate
    env = dict(os.environ)
    if args.cache:
        env.update(TRITON_CACHE_DIR=os.path.join(args.cache, "triton"),
                   TORCHINDUCTOR_CACHE_DIR=os.path.join(args.cache, "inductor"))
    command = [sys.executable, __file__, "--child", "--data-size", str(args.data_size)]
    command += ["--config", str(args.config)] if args.config is not None else []
    started = time.time()
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        sys.exit(f"a process failed (exit codes {[child.returncode for child in children]}); its error is above")
    rows = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    print(f"{args.procs} processes, D = {args.data_size:,}, caches: {args.cache or 'the user’s'}, "
          f"kernel configuration: {'fused_eval.CONFIG' if args.config is None else args.config}; seconds:")
    keys = list(rows[0])
    print(" | ".join(f"{key:>12}" for key in keys))
    for row in rows:
        print(" | ".join(f"{row[key]:12.2f}" for key in keys))
    print(f"all done in {time.time() - started:.1f} s")
    sys.exit(0)

import torch  # noqa: E402
import yaml  # noqa: E402

from ctxscale.experiments.grid import expand_grid  # noqa: E402
from ctxscale.spec import parse_spec  # noqa: E402
from ctxscale.sweep.prepare import prepare_data  # noqa: E402
from ctxscale.train import fused_eval, synthetic as loop  # noqa: E402

imported = time.time()
# (tile, launch options): rows per program and hidden-slice width; warps and pipeline stages
CANDIDATES = [({"ROWS": rows, "SLICE": width}, {"num_warps": warps, "num_stages": stages})
              for rows, width, warps, stages in ((64, 32, 4, 2), (64, 64, 4, 2), (128, 32, 8, 2),
                                                 (128, 64, 8, 2), (128, 32, 8, 3), (64, 64, 8, 3))]
raw = yaml.safe_load(open("sweeps/synthetic-paper.yaml"))
raw["grid"] = dict(raw["grid"], data_size=[args.data_size], seed=[0])
raw["data"] = dict(raw["data"], train_rows=max(args.data_size, 100_000))  # the pool the group needs, no more
raw["training"] = dict(raw["training"], max_epochs=2, patience=2,
                       device=raw["training"].get("device") if torch.cuda.is_available() else "cpu")
spec = parse_spec(raw)
data = prepare_data(spec)
points = expand_grid(spec)

if args.configs:  # each configuration's pass over the validation rows, warm
    import triton.testing

    run = loop.setup_synthetic(points, data)
    for index, config in enumerate(CANDIDATES):
        fused_eval.CONFIG = config
        call = lambda: fused_eval.member_losses(run.model, run.val.bits, run.val.task_index, run.val.labels,  # noqa: E731
                                                rows, run.val.signed)
        call()
        print(f"configuration {index} {config}: {triton.testing.do_bench(call, warmup=100, rep=500):.2f} ms a pass "
              f"({len(points)} members x {len(rows):,} rows)", flush=True)
    sys.exit(0)

if args.config is not None:
    fused_eval.CONFIG = CANDIDATES[args.config]

stamps = {"import": imported - STARTED}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_first(module, name, key):
    """Wrap module.name: its first call's seconds, synchronised, into stamps[key]."""
    original, calls = getattr(module, name), []

    def wrapper(*a, **k):
        if calls:
            return original(*a, **k)
        calls.append(1)
        sync()
        t = time.perf_counter()
        out = original(*a, **k)
        sync()
        stamps[key] = time.perf_counter() - t
        return out

    setattr(module, name, wrapper)


t = time.perf_counter()
loop.pick_device(spec.training.device)
if torch.cuda.is_available():
    torch.zeros(1, device="cuda")
stamps["cuda"] = time.perf_counter() - t
t = time.perf_counter()
original_on_device = loop._on_device


def on_device(*a, **k):  # the rows unpacked and sent, inside the set-up
    start = time.perf_counter()
    split = original_on_device(*a, **k)
    sync()
    stamps["rows"] = stamps.get("rows", 0.0) + time.perf_counter() - start
    return split


loop._on_device = on_device
run = loop.setup_synthetic(points, data)
sync()
stamps["set-up"] = time.perf_counter() - t
timed_first(loop, "train_step", "first step")
timed_first(loop, "_evaluate", "first pass")
epochs = []
t = time.perf_counter()
loop.train_synthetic(run, lambda metrics: epochs.append(time.perf_counter() - t), data)
stamps["epoch 1"], stamps["epoch 2"] = epochs[0], epochs[1] - epochs[0]
stamps["process"] = time.time() - STARTED
print(json.dumps(stamps))
