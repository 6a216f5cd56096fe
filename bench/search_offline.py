"""The adaptive search run offline, on known losses: no training, a few seconds a sweep.

Two uses, both with a spec's own `search:` section (and KEY=VALUE overrides):

- simulated study grids with a known l* (`analysis.calibration.simulate_gpu_like_sweep`: 3 % seed
  spread where the model learns, a 30 % chance that a seed stays at ln 2 just past l*), a few
  draws per family; prints, per target ratio, the median interval width, the points spent and how
  many intervals hold the truth:
      python bench/search_offline.py --targets 1.15 1.25 --draws 8
- a replay of a stored grid run (`--replay RESULTS`): the search asks for points, and each is
  answered from the store: the stored loss where that (length, data size, seed) ran, else the
  same seed's stored losses at that data size interpolated in log l. It shows what the search would
  have spent and answered on those very losses (interpolated losses are smoother than trained
  ones, and their chance failures are those of the lengths that ran):
      python bench/search_offline.py --replay results --targets 1.25
  (several folders pool their rows: a grid run and a search run of the same spec, say).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.calibration import simulate_gpu_like_sweep  # noqa: E402
from ctxscale import load_results  # noqa: E402
from ctxscale.search.plan import replay  # noqa: E402
from ctxscale.search.searcher import search_settings  # noqa: E402
from ctxscale.spec import load_spec  # noqa: E402

FAMILIES = ("collapse", "power", "own")


def summary(planner, table: pd.DataFrame, launched: set, truth: dict | None = None) -> dict:
    bracketed = table[table["status"] == "bracketed"]
    widths = bracketed["l_star_high"] - bracketed["l_star_low"]
    out = {"points": len(launched), "bracketed": len(bracketed),
           "median_width": float(widths.median()) if len(widths) else math.nan,
           "stops": ",".join(sorted(set(planner.stopped.values())))}
    if truth is not None:
        out["covered"] = sum(bool(r.l_star_low - 1e-9 <= truth[float(r.data_size)] <= r.l_star_high + 1e-9)
                             for r in table.itertuples())
        out["sizes"] = len(table)
    return out


def stored_losses(stored: pd.DataFrame, lengths) -> pd.DataFrame:
    """A row for every (length, stored data size, stored seed): the stored mean, else interpolated."""
    stored = stored[stored["status"] == "ok"]
    keep = [c for c in ("tasks", "string_length") if c in stored.columns]
    rows = []
    for (size, seed), group in stored.groupby(["data_size", "seed"]):
        curve = group.groupby("context_length")["best_val_loss"].mean()
        x = np.log(curve.index.to_numpy(dtype=float))
        for length in lengths:
            loss = curve[length] if length in curve.index else float(np.interp(math.log(length), x, curve.to_numpy()))
            rows.append({"context_length": length, "data_size": size, "seed": seed, "best_val_loss": loss,
                         "status": "ok", **{c: group[c].iloc[0] for c in keep}})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="sweeps/synthetic-paper.yaml")
    parser.add_argument("--targets", type=float, nargs="+", default=[1.25])
    parser.add_argument("--draws", type=int, default=8, help="simulated sweeps per family")
    parser.add_argument("--replay", metavar="RESULTS", nargs="+",
                        help="results folders holding runs of --spec (their rows pooled)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the spec")
    args = parser.parse_args()
    stored = None
    if args.replay:  # read once: the targets differ in their search settings only
        name = load_spec(args.spec, args.overrides).name
        stored = pd.concat([load_results(folder, sweep=name) for folder in args.replay])
    for target in args.targets:
        spec = load_spec(args.spec, ["search.method=adaptive", f"search.target_ratio={target}", *args.overrides])
        settings = search_settings(spec)
        if stored is not None:
            lo, hi = stored["context_length"].min(), stored["context_length"].max()
            # no loss is made up beyond the lengths that ran
            settings = dataclasses.replace(settings, candidates=tuple(l for l in settings.candidates if lo <= l <= hi),
                                           data_sizes=tuple(s for s in settings.data_sizes
                                                            if s in set(stored["data_size"])))
            frame = stored_losses(stored, sorted(set(settings.candidates) | set(settings.start)))
            planner, table, launched = replay(settings, frame)
            print(f"target {target}: replay of {' + '.join(args.replay)} over lengths {lo}..{hi}: "
                  f"{summary(planner, table, launched)}")
            print(table[["data_size", "status", "l_star", "l_star_low", "l_star_high"]].to_string(index=False))
            continue
        rows = []
        for family in FAMILIES:
            for draw in range(args.draws):
                frame, truth = simulate_gpu_like_sweep(family, sorted(set(settings.candidates) | set(settings.start)),
                                                       settings.data_sizes, np.random.default_rng(draw))
                rows.append({"family": family, **summary(*replay(settings, frame), truth)})
        table = pd.DataFrame(rows)
        print(f"target {target}: {len(table)} simulated sweeps; median width per sweep: median "
              f"{table['median_width'].median():g}, max {table['median_width'].max():g}; points: median "
              f"{table['points'].median():g}, max {table['points'].max()}; intervals holding the truth: "
              f"{table['covered'].sum()} of {table['sizes'].sum()}")


if __name__ == "__main__":
    main()
