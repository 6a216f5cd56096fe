"""The two training experiments: `synthetic` (MLP / Bi-MLP on the XOR tasks) and `gpt` (GPT-2 on a
corpus). A point is one (context length, data size, seed) model, trained by the loops of
`ctxscale.train`; it stores one `trials` row (the loop's final report) and one `history` row per
evaluation. Synthetic points of one (data size, seed) are packed into one Tune trial
(`resources.pack`) and trained as one stacked model; GPT points train one per trial.
"""
from __future__ import annotations

import math
from typing import Optional

from ..spec.common import LOCAL_CORPUS, SpecError
from ..spec.gpt import GPTSpec
from ..spec.synthetic import SyntheticSpec
from ..spec.point import Point
from .grid import expand_grid
from ..identity import packed_group_name
from ..store.schema import F64, I64, STR
from .base import Experiment, provenance_keys

# what the training loops report per evaluation (history) and in their final report (trials)
_TRAINING = {"context_length": I64, "data_size": I64, "seed": I64, "status": STR, "best_val_loss": F64,
             "final_train_loss": F64, "train_loss": F64, "val_loss": F64, "wall_s": F64, "samples_per_s": F64,
             "world_size": I64}
SYNTHETIC_REPORTS = _TRAINING | {"epoch": I64, "best_epoch": I64, "bayes_risk": F64, "string_length": I64,
                                 "tasks": STR, "task_val_loss": STR}
GPT_REPORTS = _TRAINING | {"step": I64, "epoch": F64, "best_epoch": F64, "best_step": I64, "tokens_seen": I64,
                           "lr": F64, "tokens_per_s": F64, "mfu": F64, "tokens_per_step": I64, "micro_batch": I64,
                           "accumulation": I64, "num_params": I64}
# the trials row of a point that never reported: these columns are there all the same
_NOT_REPORTED = {"best_val_loss": math.nan, "best_epoch": -1, "final_train_loss": math.nan,
                 "wall_s": math.nan, "samples_per_s": math.nan}


def prepare_synthetic(spec: SyntheticSpec, source: Optional[str] = None):
    """The generated set every trial trains on: made once (cached on disk) and shared through Ray's
    object store."""
    from ..data.synthetic import cached
    from ..spec.synthetic import load_task_list

    return cached(spec.train_rows, spec.data.val_rows, load_task_list(spec.data.tasks),
                  spec.data.string_length, spec.data.seed)


def prepare_gpt(spec: GPTSpec, source: Optional[str] = None) -> str:
    """The corpus exists (preparing 'local' once) and can supply the spec's data sizes and context
    lengths. Returns where trials find it: its absolute folder as seen from where the sweep was
    launched, or 'local' (each node prepares its own copy once). Trials read the corpus memmaps
    themselves: no tokens travel through Ray."""
    from ..data.corpus import CorpusError, corpus_folder, load_corpus
    from ..spec.gpt import check_against_corpus

    try:
        folder = corpus_folder(spec.data.corpus)
        corpus = load_corpus(folder)
    except (CorpusError, OSError, ValueError) as err:
        raise SpecError(f"{source or f'spec {spec.name!r}'}: data.corpus: {err}") from None
    check_against_corpus(spec, corpus, source)
    return spec.data.corpus if spec.data.corpus == LOCAL_CORPUS else str(folder)


def _grid_points(spec, prepared) -> list[Point]:
    return expand_grid(spec)


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


def _run_gpt(group: list[Point], report, data, resume_dir: Optional[str] = None) -> None:
    from ..train.gpt import run_gpt_trial

    (point,) = group
    run_gpt_trial(point, report, corpus=data, resume_dir=resume_dir)


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
    from ..tables import best_loss_table

    return best_loss_table(trials)


SYNTHETIC = Experiment("synthetic", SyntheticSpec, SYNTHETIC_REPORTS, prepare=prepare_synthetic,
                       points=_grid_points, run=_run_synthetic, rows=trial_rows, table=best_loss_table,
                       group=pack_synthetic, group_name=synthetic_group_name)
GPT = Experiment("gpt", GPTSpec, GPT_REPORTS, prepare=prepare_gpt, points=_grid_points, run=_run_gpt,
                 rows=trial_rows, table=best_loss_table)
