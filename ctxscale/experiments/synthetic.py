"""The synthetic experiment (MLP / Bi-MLP on the XOR tasks): a point is one (context length, data
size, seed) model. Points of one (data size, seed) are packed into one Tune trial
(`resources.pack`) and trained as one stacked model (`ctxscale.train.synthetic`).
"""
from __future__ import annotations

from typing import Optional

from ..identity import packed_group_name
from ..spec.point import Point
from ..spec.synthetic import SyntheticSpec
from ..store.schema import F64, I64, STR
from .base import Experiment
from .grid import TRAINING_REPORTS, best_loss_table, expand_grid, trial_rows

SYNTHETIC_REPORTS = TRAINING_REPORTS | {"epoch": I64, "best_epoch": I64, "bayes_risk": F64, "string_length": I64,
                                        "tasks": STR, "task_val_loss": STR}


def prepare_synthetic(spec: SyntheticSpec, source: Optional[str] = None):
    """The generated set every trial trains on: made once (cached on disk) and shared through Ray's
    object store."""
    from ..data.synthetic import cached
    from ..spec.synthetic import load_task_list

    return cached(spec.train_rows, spec.data.val_rows, load_task_list(spec.data.tasks),
                  spec.data.string_length, spec.data.seed)


def pack_synthetic(points: list[Point]) -> list[list[Point]]:
    """The pending points in groups that share (data size, seed), hence the batch order, each in
    increasing context length and at most `resources.pack` long (one group per pair for 'auto').
    (Dealing a large pair into parts, so that more trial slots share it, was measured on the 2-core
    CPU: three 2-point parts of the largest pair used about 1.6 times the slot time of its 6-point
    group, a step's fixed cost being shared by fewer members, and the sweep was no faster than
    `pack: 1`.)

    The groups come largest first (rows trained and evaluated per epoch, times members), so that
    Tune starts the longest ones first and the last groups to finish are short ones that fill the
    remaining slots."""
    if not points:
        return []
    spec = points[0].spec
    limit = spec.resources.points_per_trial
    pairs: dict[tuple, list[Point]] = {}
    for point in points:
        pairs.setdefault((point.data_size, point.seed), []).append(point)
    groups = []
    for pair in pairs.values():
        pair.sort(key=lambda point: point.context_length)
        size = limit or len(pair)
        groups += [pair[start:start + size] for start in range(0, len(pair), size)]
    # an epoch trains on data_size rows (forward and backward: about 3 forward passes) and evaluates val_rows
    return sorted(groups, key=lambda group: -len(group) * (3 * group[0].data_size + spec.data.val_rows))


def synthetic_group_name(group: list[Point]) -> str:
    """A point's own trial id; for a group 'd<data size>_s<seed>_l<shortest>-<longest>_<config hash>'."""
    if len(group) == 1:
        return group[0].trial_id
    first = group[0]
    return packed_group_name(first.data_size, first.seed, [point.context_length for point in group],
                             first.config_hash)


def _run_synthetic(group: list[Point], report, data, resume_dir: Optional[str] = None) -> None:
    from ..train.synthetic import run_synthetic_group

    def report_epoch(epoch_metrics: list[dict]) -> None:
        # one report per epoch for the whole group: each is a round trip to Tune's driver
        report(epoch_metrics[0] if len(group) == 1 else {"epoch": epoch_metrics[0]["epoch"], "points": epoch_metrics})

    run_synthetic_group(group, report_epoch, data)


SYNTHETIC = Experiment("synthetic", SyntheticSpec, SYNTHETIC_REPORTS, prepare=prepare_synthetic,
                       points=expand_grid, run=_run_synthetic, rows=trial_rows, table=best_loss_table,
                       group=pack_synthetic, group_name=synthetic_group_name)
