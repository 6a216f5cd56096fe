"""What the two training experiments (synthetic, gpt) share: their grid points, one per
(context_length, data_size, seed), each a model trained by a loop of `ctxscale.train`; the columns
the loops report; and the rows a point stores, one `trials` row (the loop's final report) and one
`history` row per evaluation."""
from __future__ import annotations

import itertools
import math

from ..identity import grid_trial_id, science_hash
from ..spec.point import Point
from ..store.schema import F64, I64, STR
from .base import provenance_keys


def expand_grid(spec, prepared=None) -> list[Point]:
    """Every point of the spec's grid, in grid order (context length slowest), all of one config hash
    (an experiment's `points`: the prepared data changes no point)."""
    digest = science_hash(spec)
    return [Point(grid_trial_id(length, size, seed, digest), digest, spec, context_length=length, data_size=size,
                  seed=seed)
            for length, size, seed in itertools.product(spec.grid.context_length, spec.grid.data_size, spec.grid.seed)]


# what the training loops report per evaluation (history) and in their final report (trials)
TRAINING_REPORTS = {"context_length": I64, "data_size": I64, "seed": I64, "status": STR, "best_val_loss": F64,
                    "final_train_loss": F64, "train_loss": F64, "val_loss": F64, "wall_s": F64,
                    "samples_per_s": F64, "world_size": I64}
# the trials row of a point that never reported: these columns are there all the same
_NOT_REPORTED = {"best_val_loss": math.nan, "best_epoch": -1, "final_train_loss": math.nan,
                 "wall_s": math.nan, "samples_per_s": math.nan}


def trial_rows(point: Point, reports: list[dict]) -> tuple[dict, dict[str, list[dict]]]:
    """The trials row holds the loop's last report (a failed trial's last progress); the history
    one row per report, with the evaluation's own numbers only: where it ran goes once into the
    trials row."""
    columns = {**_NOT_REPORTED, **(reports[-1] if reports else {})}
    where = provenance_keys()
    history = [{k: v for k, v in report.items() if k not in where and isinstance(v, (int, float, str, bool))}
               for report in reports]
    return columns, {"history": history}


def best_loss_table(results_dir, spec, trials) -> str:
    """The best validation loss per context length and data size, after a sweep."""
    from ..tables import best_loss_table

    return best_loss_table(trials)
