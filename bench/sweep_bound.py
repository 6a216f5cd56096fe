"""How long a stored sweep's work takes the GPU alone: a lower bound on its wall time.

`gpt`: for every stored trial, the steps it trained and the evaluations it ran, priced at the step time
`bench/bench_gpt.py` measured for that context length with the GPU to itself (the same model
shape and tokens per step as the sweep: `--shape` and `--tokens-per-step`):

    bound = sum over trials of  steps * step_s(l)  +  evaluations * eval_tokens / tokens_per_step * step_s(l) / 3

An evaluation is priced as a third of a training step per token (a forward pass without the
backward's two products); a length the benchmark did not time is priced by log-log interpolation
between the nearest timed ones. Compiling, start-up and the idle tail are left out, so no schedule
of these trials on this GPU can finish in less, whatever the sharing, unless a step gets faster.

    python bench/bench_gpt.py --shape 4:4:256 --tokens-per-step 16384 --steps 100 --out small.jsonl \\
        --variants 64:auto:16384 256:auto:16384 1024:auto:16384 4096:auto:16384
    python bench/sweep_bound.py gpt RESULTS_DIR --sweep gpt2-gpu --rates small.jsonl --wall 300

`synthetic`: every stored point trained `epoch` epochs of ceil(D / batch_size) steps, each epoch
followed by a validation pass; a packed group's step and pass cost about its member count times
a member's share of a 12-member group's (bench/bench_packed_group.py prints the kernel times of
10 steps and of one pass). Pricing a member at a twelfth of a 12-member group's kernel time leaves
out the per-step costs that do not grow with the members, so this too is a lower bound:

    python bench/sweep_bound.py synthetic RESULTS_DIR --sweep synthetic-paper --step-ms 1.90 --val-ms 48.7 --wall 213
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from ctxscale import load_results


def step_seconds(rates: list[dict]) -> callable:
    """context length -> seconds a step, from bench_gpt rows (the fastest row per length)."""
    best: dict[int, float] = {}
    for row in rates:
        if "error" not in row:
            best[row["context_length"]] = min(best.get(row["context_length"], np.inf), row["step_s"])
    lengths = np.array(sorted(best), dtype=float)
    log_times = np.log([best[int(length)] for length in lengths])
    return lambda length: float(np.exp(np.interp(np.log(length), np.log(lengths), log_times)))


def sweep_bound(trials, step_s) -> list[dict]:
    """Per trial: training steps, evaluations and their GPU-alone seconds."""
    rows = []
    for trial in trials.to_dict("records"):
        steps, length = int(trial["step"]), int(trial["context_length"])
        eval_every = int(trial["config.training.eval_every"])
        evaluations = steps // eval_every + 1  # one before the first step
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
    gpt.add_argument("--rates", required=True, help="bench_gpt.py --out JSON lines of the sweep's model shape")
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
    with open(args.rates) as f:
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
