"""The results store at scale: reading 100,000 synthetic-sweep trial rows and 1,000,000 history
rows, and the launch's skip check of a 100,000-point spec with every point stored.

Three layouts of the same rows are timed:
- compacted: one part per table (after `ctxscale results DIR --compact`);
- parts: what 100 sweeps of 1,000 points each leave (every launch compacts its own rows at its end);
- loose: one file per trial and table, as a killed sweep leaves them (`--loose` trials; their cost
  is per file, so it is also given per 100,000).

Rows are built with the store's own schema (`ctxscale.store.schema`), with real synthetic-sweep
trial ids and configs; the loose files are written by `store.write_trial`, as the runner does.

    python bench/bench_store.py [--trials 100000] [--history-per-trial 10] [--loose 5000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ctxscale import store
from ctxscale.experiments.synthetic import SYNTHETIC
from ctxscale.spec import parse_spec
from ctxscale.store import schema
from ctxscale.store.compaction import _part_name
from ctxscale.sweep.runner import plan_sweep

SWEEP = "bench"


def _spec(trials: int):
    lengths = list(range(1, 101))
    sizes = [1000 * (i + 1) for i in range(max(1, trials // (len(lengths) * 10)))]
    return parse_spec({"name": SWEEP, "experiment": "synthetic",
                       "grid": {"context_length": lengths, "data_size": sizes, "seed": list(range(10))},
                       "data": {"string_length": 100}, "model": {"hidden": 16}})


def _trial_row(point, rng) -> dict:
    loss = float(rng.uniform(0.1, 0.7))
    return {"sweep": SWEEP, "trial_id": point.trial_id, "experiment": "synthetic", "status": "ok", "error": "",
            "config_hash": point.config_hash, "config": json.dumps(point.spec.model_dump(mode="json"), sort_keys=True),
            **point.coordinates(),
            "best_val_loss": loss, "best_epoch": 10, "final_train_loss": loss, "train_loss": loss, "val_loss": loss,
            "wall_s": 3.0, "samples_per_s": 1e5, "world_size": 1, "epoch": 10, "bayes_risk": 0.1,
            "string_length": 100, "host": "bench", "cpu_count": 2, "gpu_count": 0,
            **schema.flat_config(point.spec.model_dump(mode="json"))}


def _history(points: list, per_trial: int, rng) -> pa.Table:
    n = len(points) * per_trial
    columns = {"sweep": pa.array([SWEEP] * n), "trial_id": pa.array(np.repeat([p.trial_id for p in points], per_trial)),
               "config_hash": pa.array([points[0].config_hash] * n),
               "epoch": pa.array(np.tile(np.arange(1, per_trial + 1), len(points))),
               "val_loss": pa.array(rng.uniform(0.1, 0.7, n)), "train_loss": pa.array(rng.uniform(0.1, 0.7, n)),
               "status": pa.array(["running"] * n)}
    declared = SYNTHETIC.schemas["history"]
    arrays = [columns.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in declared]
    return schema.with_metadata(pa.Table.from_arrays(arrays, schema=declared), "history", "synthetic")


def _write_parts(folder: Path, points, per_trial, chunks: int, rng) -> None:
    for chunk in np.array_split(np.arange(len(points)), chunks):
        group = [points[i] for i in chunk]
        trials = schema.with_metadata(schema.to_table([_trial_row(p, rng) for p in group], SYNTHETIC.schemas["trials"]), "trials",
                                      "synthetic")
        store.write_table(folder / "history" / _part_name(), _history(group, per_trial, rng))
        store.write_table(folder / "trials" / _part_name(), trials)


def _timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    took = time.perf_counter() - start
    print(f"{label}: {took:.2f} s", flush=True)
    return result, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--history-per-trial", type=int, default=10)
    parser.add_argument("--loose", type=int, default=5_000, help="trials stored one file each (0: skip)")
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temporary folder)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    spec = _spec(args.trials)
    points = plan_sweep(spec, Path(tempfile.mkdtemp()), data=object()).points
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-store-"))
    print(f"{len(points):,} trials, {len(points) * args.history_per_trial:,} history rows, under {root}")
    try:
        for layout, chunks in (("compacted", 1), ("parts", 100)):
            folder = root / layout / SWEEP
            _timed(f"[{layout}] build ({chunks} part(s) per table)", _write_parts, folder, points,
                   args.history_per_trial, chunks, rng)
            trials, _ = _timed(f"[{layout}] load_results trials", store.load_results, folder.parent, sweep=SWEEP)
            history, _ = _timed(f"[{layout}] load_results history", store.load_results, folder.parent, "history",
                                sweep=SWEEP)
            assert len(trials) == len(points) and len(history) == len(points) * args.history_per_trial
            plan, _ = _timed(f"[{layout}] skip check of the {len(points):,}-point spec (plan_sweep)", plan_sweep,
                             spec, folder.parent, data=object())
            assert not plan.pending
        if args.loose:
            folder, few = root / "loose", points[:args.loose]
            start = time.perf_counter()
            for point in few:
                row = _trial_row(point, rng)
                history = [{"epoch": e, "val_loss": 0.5, "train_loss": 0.5, "status": "running"}
                           for e in range(1, args.history_per_trial + 1)]
                store.write_trial(folder, SWEEP, point.trial_id, row, history)
            print(f"[loose] build: {args.loose:,} trials written by store.write_trial in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            for label in ("first (builds the index)", "again (index warm)"):
                _, took = _timed(f"[loose] skip check, {label}", store.stored_trials, folder, SWEEP)
            _, took = _timed(f"[loose] load_results trials ({args.loose:,} files)", store.load_results, folder,
                             sweep=SWEEP)
            print(f"[loose] {1000 * took / args.loose:.2f} ms per file: {took / args.loose * 100_000:.0f} s "
                  "per 100,000 files", flush=True)
            _, took = _timed("[loose] ctxscale results --compact", store.compact, folder, SWEEP)
            _timed("[loose] load_results trials after compaction", store.load_results, folder, sweep=SWEEP)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
