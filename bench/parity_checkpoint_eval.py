"""Evaluate a parity trial's newest checkpoint at every context length of its spec, as the trial
does after its last epoch (`ctxscale.train.parity.evaluate`): CE beside the exact Bayes risk.

For a run stopped before its last epoch (a time limit on a GPU machine): the trial stores its
table only when it finishes, and a checkpoint holds the weights at the end of an epoch. Nothing is
written to the results store; the table is printed, and written as JSON to $OUT when it is set.

    python bench/parity_checkpoint_eval.py sweeps/parity-paper.yaml [KEY=VALUE ...] [--results results]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from ctxscale.device import pick_device
from ctxscale.spec import load_spec
from ctxscale.train.checkpoint import read_checkpoint
from ctxscale.train.parity import CHECKPOINT_FILE, build_model, evaluate, spec_tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("overrides", nargs="*", help="the sweep's KEY=VALUE overrides")
    ap.add_argument("--results", default="results", help="the sweep's results folder")
    args = ap.parse_args()
    spec = load_spec(args.spec, args.overrides)
    found = sorted(Path(args.results, spec.name, "_ray").rglob(CHECKPOINT_FILE), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no {CHECKPOINT_FILE} under {Path(args.results, spec.name, '_ray')}")
    state = read_checkpoint(found[-1])
    if state is None:
        raise SystemExit(f"{found[-1]}: cannot be read")
    tasks = spec_tasks(spec)
    device = pick_device(spec.training.device)
    model = build_model(spec, tasks).to(device)
    model.load_state_dict(state["model"])
    print(f"{found[-1]}: step {state['step']}, epoch {state['epoch']} of {spec.training.epochs}", flush=True)
    fixed = {"sweep": spec.name, "model": found[-1].parent.parent.name, "data_size": spec.grid.data_size[0],
             "seed": spec.grid.seed[0]}
    ce_rows, _ = evaluate(model, spec, tasks, device, fixed)
    gaps = [abs(r["gap"]) for r in ce_rows]
    print(f"\nstep {state['step']}: mean |CE - Bayes| {np.mean(gaps):.4f}, max {np.max(gaps):.4f}")
    print("| l | " + " | ".join(str(r["context_length"]) for r in ce_rows) + " |")
    print("| Bayes | " + " | ".join(f"{r['bayes_risk']:.4f}" for r in ce_rows) + " |")
    print("| CE | " + " | ".join(f"{r['ce']:.4f}" for r in ce_rows) + " |")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "parity_eval.json").write_text(
            json.dumps({"step": state["step"], "epoch": state["epoch"], "checkpoint": str(found[-1]), "ce": ce_rows}))


if __name__ == "__main__":
    main()
