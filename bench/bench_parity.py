"""Time per step and time to leave the ln 2 plateau of parity training, for a few settings.

Each setting is the sweep's spec with some fields overridden; its model trains on the spec's first
data_size (the same training set and loop as a trial: `ctxscale.train.parity.train`) for at most
`--seconds`, printing the mean loss every `--every` steps; no evaluation. The table gives ms per
step (compile excluded: timed from the second trace line) and the first step whose trace loss
fell below 0.9 and 0.5 of ln 2 ("-": not within the budget).

    python bench/bench_parity.py sweeps/parity-paper.yaml --seconds 60 \\
        --set training.lr=0.002 --set training.lr=0.005,model.n_head=13
"""
from __future__ import annotations

import argparse
import math

from ctxscale.device import pick_device
from ctxscale.spec import load_spec
from ctxscale.spec.point import Point
from ctxscale.train.parity import spec_tasks, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--set", action="append", default=[], help="overrides, e.g. training.lr=0.005,model.n_head=13 "
                    "(repeat for more settings; none: the spec as it is)")
    ap.add_argument("--seconds", type=float, default=60.0, help="training budget per setting")
    ap.add_argument("--every", type=int, default=100, help="steps per trace line")
    ap.add_argument("--data-size", type=int, default=None, help="training samples (default: the grid's first)")
    args = ap.parse_args()
    rows = []
    for assignments in args.set or [""]:
        spec = load_spec(args.spec, [item for item in assignments.split(",") if item])
        tasks = spec_tasks(spec)
        size = args.data_size or spec.grid.data_size[0]
        point = Point(assignments or "spec", "", spec, data_size=size, seed=spec.grid.seed[0])
        run = train(spec, tasks, point, pick_device(spec.training.device), trace_every=args.every,
                    max_seconds=args.seconds)
        trace = run.trace
        ms = (1e3 * (trace[-1][2] - trace[0][2]) / (trace[-1][0] - trace[0][0])) if len(trace) > 1 else math.nan
        first = [next((s for s, loss, _ in trace if loss < share * math.log(2)), None) for share in (0.9, 0.5)]
        rows.append((assignments or "(spec)", ms, *first, trace[-1][1] if trace else math.nan, run.step))
    print(f"\n{'setting':<50} {'ms/step':>8} {'<0.9 ln2':>9} {'<0.5 ln2':>9} {'last loss':>9} {'steps':>7}")
    for name, ms, a, b, last, steps in rows:
        print(f"{name:<50} {ms:8.2f} {a or '-':>9} {b or '-':>9} {last:9.4f} {steps:7d}")


if __name__ == "__main__":
    main()
