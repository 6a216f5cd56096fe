"""The gpt experiment (GPT-2 on a corpus): a point is one (context length, data size, seed) model,
trained one per Tune trial (`ctxscale.train.gpt`), alone or under Ray Train DDP.
"""
from __future__ import annotations

from typing import Optional

from ..spec.common import LOCAL_CORPUS, SpecError
from ..spec.gpt import GPTSpec
from ..spec.point import Point
from ..store.schema import F64, I64
from .base import Experiment
from .grid import TRAINING_REPORTS, best_loss_table, expand_grid, trial_rows

GPT_REPORTS = TRAINING_REPORTS | {"step": I64, "epoch": F64, "best_epoch": F64, "best_step": I64, "tokens_seen": I64,
                                  "lr": F64, "tokens_per_s": F64, "mfu": F64, "tokens_per_step": I64,
                                  "micro_batch": I64, "accumulation": I64, "num_params": I64}


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


def _run_gpt(group: list[Point], report, data, resume_dir: Optional[str] = None) -> None:
    from ..train.gpt import run_gpt_trial

    (point,) = group
    run_gpt_trial(point, report, corpus=data, resume_dir=resume_dir)


GPT = Experiment("gpt", GPTSpec, GPT_REPORTS, prepare=prepare_gpt, points=expand_grid, run=_run_gpt,
                 rows=trial_rows, table=best_loss_table)
