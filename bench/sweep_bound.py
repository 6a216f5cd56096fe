"""How long a stored sweep's work keeps the GPU's kernels busy: a lower bound on its wall time.

Trials that share a GPU in the default way take turns on it: one process's kernels run at a time.
So the sum of the kernel time of every step and evaluation the sweep ran is a floor under its wall
time, whatever the schedule, the compile caching or the start-up, while the kernels stay as they
are. (Under NVIDIA's MPS several processes' kernels can run at once, and this floor does not hold.)

`gpt`: for every stored trial, the steps it trained and the evaluations it ran, priced at the GPU
time of one step's kernels, profiled by `bench/bench_gpt.py --profile` for that context length
(the same model shape and tokens per step as the sweep: `--shape` and `--tokens-per-step`):

    bound = sum over trials of  steps * step_s(l)  +  evaluations * eval_tokens / tokens_per_step * step_s(l) / 3

An evaluation is priced as a third of a training step per token (a forward pass without the
backward's two products); a length the benchmark did not profile is priced by log-log
interpolation between the nearest profiled ones.

    python bench/bench_gpt.py --shape 4:4:256 --tokens-per-step 16384 --steps 100 --profile small.txt \
        --variants 64:auto:16384 256:auto:16384 1024:auto:16384 4096:auto:16384
    python bench/sweep_bound.py gpt RESULTS_DIR --sweep gpt2-gpu --profile small.txt.jsonl --wall 300

`synthetic`: every stored point trained `epoch` epochs of ceil(D / batch_size) steps, each epoch
followed by a validation pass; a packed group's step and pass cost about its member count times
a member's share of a 12-member group's (bench/bench_packed_group.py prints the kernel times of
10 steps and of one pass). Pricing a member at a twelfth of a 12-member group's kernel time leaves
out the per-step costs that do not grow with the members, so this too is a lower bound:

    python bench/sweep_bound.py synthetic RESULTS_DIR --sweep synthetic-paper --step-ms 2.14 --val-ms 44.3 --wall 198.1
"""
from __future__ import annotations

import argparse
import json
from typing import Callable

import numpy as np

from ctxscale import load_results


def step_seconds(profile: list[dict]) -> Callable[[int], float]:
    """context length -> GPU seconds of one step's kernels, from bench_gpt's --profile JSON lines
    (one profiled step per variant; the fastest variant per length)."""
    per_variant: dict[str, float] = {}
    for row in profile:
        per_variant[row["variant"]] = per_variant.get(row["variant"], 0.0) + row["gpu_us"] / 1e6
    best: dict[int, float] = {}
    for variant, seconds in per_variant.items():
        length = int(variant.split(":")[0])
        best[length] = min(best.get(length, np.inf), seconds)
    lengths = np.array(sorted(best), dtype=float)
    log_times = np.log([best[int(length)] for length in lengths])
    return lambda length: float(np.exp(np.interp(np.log(length), np.log(lengths), log_times)))


def sweep_bound(trials, step_s) -> list[dict]:
    """Per trial: training steps, evaluations and their seconds of kernels."""
    rows = []
    for trial in trials.to_dict("records"):
        steps, length = int(trial["step"]), int(trial["context_length"])
        eval_every = int(trial["config.training.eval_every"])
        evaluations = -(-steps // eval_every)  # after every eval_every steps, and after the last
        eval_share = int(trial["config.training.eval_tokens"]) / int(trial["tokens_per_step"]) / 3
        train_s = steps * step_s(length)
        eval_s = evaluations * eval_share * step_s(length)
        rows.append({"context_length": length, "data_size": int(trial["data_size"]), "steps": steps,
                     "evaluations": evaluations, "train_s": train_s, "eval_s": eval_s})
    return rows


def synthetic_bound(trials, step_ms: float, val_ms: float, members: int = 12) -> tuple[float, float]:
    """(training, validation) GPU seconds of the stored points, a member priced at 1/members of a
    `members`-member group's step and validation pass."""
    steps = np.ceil(trials["data_size"] / trials["config.training.batch_size"])
    epochs = trials["epoch"].astype(float)
    return (float((epochs * steps).sum() * step_ms / members / 1e3),
            float(epochs.sum() * val_ms / members / 1e3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    experiments = parser.add_subparsers(dest="experiment", required=True)
    gpt = experiments.add_parser("gpt")
    gpt.add_argument("--profile", required=True, help="the JSON lines bench_gpt.py --profile P writes to P.jsonl, for the sweep's model shape")
    synthetic = experiments.add_parser("synthetic")
    synthetic.add_argument("--step-ms", type=float, required=True, help="GPU ms of one step of a 12-member group")
    synthetic.add_argument("--val-ms", type=float, required=True, help="GPU ms of one validation pass of a 12-member group")
    for sub in (gpt, synthetic):
        sub.add_argument("results", help="a results folder or one sweep's folder")
        sub.add_argument("--sweep", default=None)
        sub.add_argument("--wall", type=float, default=None, help="the sweep's measured wall seconds, to compare")
    args = parser.parse_args()
    trials = load_results(args.results, sweep=args.sweep)
    trials = trials[trials["status"] == "ok"]
    if args.experiment == "synthetic":
        train, evaluation = synthetic_bound(trials, args.step_ms, args.val_ms)
        report(len(trials), train, evaluation, args.wall, "points")
        return
    with open(args.profile) as f:
        step_s = step_seconds([json.loads(line) for line in f if line.strip()])
    rows = sweep_bound(trials, step_s)
    print(f"{'D':>10} {'l':>6} {'steps':>6} {'evals':>5} {'train_s':>8} {'eval_s':>7}")
    for row in sorted(rows, key=lambda row: (row["data_size"], row["context_length"])):
        print(f"{row['data_size']:>10,} {row['context_length']:>6} {row['steps']:>6} {row['evaluations']:>5} "
              f"{row['train_s']:>8.1f} {row['eval_s']:>7.1f}")
    report(len(rows), sum(row["train_s"] for row in rows), sum(row["eval_s"] for row in rows), args.wall, "trials")


def report(count: int, train: float, evaluation: float, wall: float | None, what: str) -> None:
    print(f"{count} {what}: {train:.1f} s training + {evaluation:.1f} s evaluation = "
          f"{train + evaluation:.1f} s of GPU work at the measured kernel times")
    if wall:
        print(f"measured wall {wall:.1f} s: the bound is {(train + evaluation) / wall:.0%} of it")


if __name__ == "__main__":
    main()
