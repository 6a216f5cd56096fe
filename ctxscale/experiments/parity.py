"""The parity experiment (`experiment: parity`): one small causal Transformer per (data_size,
seed), trained on the position-weighted multitask sparse parity task and evaluated at every
context length of the grid, beside the exact Bayes risk.

A point is one trained model, with trial id `d<data_size>_s<seed>_<config hash>`; the hash covers
the data, model, training and spectra sections and the context lengths it is evaluated at. Beside
its trials row (training numbers, mean |CE - Bayes risk|) and its history (one row per epoch), a
finished point stores, with `model` = its trial id:

    <results>/<name>/ce/<trial_id>.parquet       context_length, ce, ce_se, bayes_risk, gap, accuracy, ...
    <results>/<name>/spectra/<trial_id>.parquet  context_length, eigenvalues, intrinsic_dim_<t>, sum_log_eig_<N>, kde_entropy

so `ctxscale analyze` reads it as it reads a measured model (plus the Bayes-risk comparison).
"""
from __future__ import annotations

import json
import math
from typing import Optional

from ..spec.parity import ParitySpec
from ..identity import parity_hash, parity_trial_id
from ..spec.point import Point
from ..store.schema import F64, I64, STR
from .base import Experiment, provenance_keys

# one model per (data size, seed); its context lengths are rows of `ce` and `spectra`
PARITY_REPORTS = {"data_size": I64, "seed": I64, "status": STR, "epoch": I64, "train_loss": F64, "lr": F64,
                  "elapsed_s": F64, "final_train_loss": F64, "mean_abs_gap": F64, "max_abs_gap": F64, "steps": I64,
                  "wall_s": F64, "train_wall_s": F64, "samples_per_s": F64, "n_params": I64}
_TABLES = ("ce_rows", "spectra_rows")  # JSON text in the final report: the point's own tables


def parity_points(spec: ParitySpec, prepared=None) -> list[Point]:
    digest = parity_hash(spec)
    return [Point(parity_trial_id(size, seed, digest), digest, spec, data_size=size, seed=seed)
            for size in spec.grid.data_size for seed in spec.grid.seed]


def _prepare(spec: ParitySpec, source: Optional[str] = None) -> None:
    return None  # each trial generates its own set from the spec's seed (seconds, less than shipping it)


def _run(group: list[Point], report, data, resume_dir: Optional[str] = None) -> None:
    from ..train.parity import run_parity_trial

    (point,) = group
    run_parity_trial(point, report, resume_dir=resume_dir)


def parity_rows(point: Point, reports: list[dict]) -> tuple[dict, dict[str, list[dict]]]:
    """Trials row: the final report's scalars; history: one row per epoch; ce and spectra: one row
    per context length."""
    columns = {"final_train_loss": math.nan, "mean_abs_gap": math.nan, "wall_s": math.nan}
    if not reports:
        return columns, {}
    where = provenance_keys()
    last = reports[-1]
    columns.update({k: v for k, v in last.items() if k not in _TABLES})
    history = [{k: v for k, v in r.items() if k not in where and k not in _TABLES and isinstance(v, (int, float, str, bool))}
               for r in reports]
    tables = {"history": history}
    for key in _TABLES:
        if key in last and json.loads(last[key]):
            tables[key.removesuffix("_rows")] = json.loads(last[key])
    return columns, tables


def ce_vs_bayes_table(results_dir, spec: ParitySpec, trials) -> str:
    """CE per context length (rows) and data size (columns, mean over seeds) beside the exact Bayes risk."""
    from .. import store

    ce = store.load_results(results_dir, "ce", sweep=spec.name)
    if not ce.empty:
        ce = ce[ce["config_hash"].isin(set(trials["config_hash"]))]
    if ce.empty:
        return "(nothing evaluated)"
    table = ce.pivot_table(index="context_length", columns="data_size", values="ce", aggfunc="mean")
    table.columns = [f"CE D={c:,}" for c in table.columns]
    table.insert(0, "Bayes risk", ce.groupby("context_length")["bayes_risk"].first())
    gaps = ce.groupby("data_size")["gap"].apply(lambda g: g.abs().mean())
    footer = "mean |CE − Bayes risk| per data size: " + ", ".join(f"D={d:,}: {g:.4f}" for d, g in gaps.items())
    return table.to_string(float_format=lambda v: f"{v:.4f}") + "\n" + footer


PARITY = Experiment("parity", ParitySpec, PARITY_REPORTS, prepare=_prepare, points=parity_points, run=_run,
                    rows=parity_rows, table=ce_vs_bayes_table)
