"""Coverage of the l* intervals on simulated sweeps with a known optimum (figures, not a test).

    python bench/calibrate_optimum.py            # the full table (a few minutes on 2 cores)
    python bench/calibrate_optimum.py --reps 10  # quicker, noisier

Step families go through the synthetic (step) estimator, 'smooth' through the smooth one; both
are what `analysis.optimal_context_length` picks for such trials. Targets at nominal 95 %:
coverage >= 90 % on every family, median width <= 1/4 of the grid's span on the step families,
exact point estimates in >= 80 % of cases on the estimator's own form ('own').
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from analysis.calibration import STEP_FAMILIES, coverage
from analysis.optimum import optimal_context_length as smooth_optimal_context_length
from analysis.step_optimum import step_optimum

GRIDS = {
    "issue": ([20, 24, 32, 48, 64, 80], [50_000, 100_000, 200_000]),
    "study": ([27, 32, 36, 43, 50, 55, 63, 71, 84, 94], [50_000, 100_000, 200_000, 400_000]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40, help="simulated sweeps per row")
    parser.add_argument("--boot", type=int, default=300, help="bootstrap refits per sweep")
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    args = parser.parse_args()
    step = lambda trials, n_boot, seed: step_optimum(trials, n_boot=n_boot, seed=seed).table
    smooth = lambda trials, n_boot, seed: smooth_optimal_context_length(trials, n_boot=n_boot, seed=seed).table
    rows = []
    started = time.perf_counter()
    for name in args.grids:
        grid, sizes = GRIDS[name]
        span = grid[-1] - grid[0]
        for family in STEP_FAMILIES + ("smooth",):
            for seeds in (1, 3):
                for noise in (0.002, 0.01):
                    smooth_grid = [16, 32, 64, 128, 256, 512, 1024]
                    res = coverage(smooth if family == "smooth" else step, family,
                                   smooth_grid if family == "smooth" else grid, sizes, seeds, noise,
                                   args.reps, seed=hash((name, family, seeds, noise)) % 2**32, n_boot=args.boot)
                    res["grid"] = name
                    res["width/span"] = res["median_width"] / span if family != "smooth" else float("nan")
                    rows.append(res)
                    print(pd.DataFrame([res]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{len(table)} rows in {time.perf_counter() - started:.0f} s; nominal 95 %")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    step_rows = table[table.family != "smooth"]
    print(f"min coverage {table.coverage.min():.3f} (target >= 0.90); "
          f"max median width/span (step) {step_rows['width/span'].max():.3f} (target <= 0.25); "
          f"exact on 'own' {table[table.family == 'own'].exact.min():.3f} (target >= 0.80)")


if __name__ == "__main__":
    main()
