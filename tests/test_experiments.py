"""The experiment objects and the one runner: a measure spec's points, its Ray-free run function,
and the same runner as the training sweeps storing it (skip, an edited spec beside the old rows)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctxscale import store
from ctxscale.experiments import experiment_of
from ctxscale.experiments.measure import MEASURE, config_hash
from ctxscale.experiments.gpt import GPT
from ctxscale.experiments.synthetic import SYNTHETIC
from ctxscale.spec import parse_spec
from ctxscale.sweep.runner import plan_sweep, run_sweep

from conftest import TINY_SPEC

LENGTHS = [4, 16]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from ctxscale.data.corpus import prepare_corpus

    root = tmp_path_factory.mktemp("experiments-corpus")
    rng = np.random.default_rng(1)
    words = np.array("a rose by any other name would smell as sweet".split())
    (root / "docs").mkdir()
    for i in range(3):
        (root / "docs" / f"{i}.txt").write_text(" ".join(rng.choice(words, 400)) + ".")
    prepare_corpus(root / "docs", root / "corpus", min_doc_tokens=50, val_fraction=0.0, num_proc=1)
    return root / "corpus"


def _measure(corpus, **changes):
    raw = {"name": "m", "experiment": "measure", "model": ["random:gpt2-tiny"], "corpus": str(corpus),
           "grid": {"context_length": LENGTHS},
           "protocol": {"split": "train", "min_doc_tokens": 50, "drop_first": 4, "drop_last": 2, "chunk_length": 32},
           "spectra": {"thresholds": [0.01], "n_eigenvalues": [3]},
           "inference": {"device": "cpu"}, "resources": {"cpus_per_trial": 1}}
    return parse_spec(raw | changes)


@pytest.mark.network
def test_every_spec_has_its_experiment(corpus):
    assert experiment_of(parse_spec(TINY_SPEC)) is SYNTHETIC
    assert experiment_of(_measure(corpus)) is MEASURE
    gpt = {"name": "g", "experiment": "gpt", "grid": {"context_length": [16], "data_size": [100]},
           "model": {"preset": "tiny"}, "training": {"tokens_per_step": 64, "micro_batch_tokens": 64}}
    assert experiment_of(parse_spec(gpt)) is GPT


@pytest.mark.network
def test_measure_points_are_grouped_per_model_and_named_by_their_configuration(corpus):
    spec = _measure(corpus, model=["random:gpt2-tiny", "random:gpt2-small"])
    points = MEASURE.points(spec, corpus)
    digest = config_hash(spec, "random:gpt2-tiny", corpus)
    assert points[0].trial_id.startswith("random-gpt2-tiny-") and points[0].trial_id.endswith(f"_l4_{digest}")
    assert [len(group) for group in MEASURE.group(points)] == [2, 2]
    assert {p.model for p in MEASURE.group(points)[1]} == {"random:gpt2-small"}
    edited = MEASURE.points(_measure(corpus, protocol={"split": "train", "min_doc_tokens": 50, "drop_first": 0,
                                                       "drop_last": 2, "chunk_length": 32}), corpus)
    assert not {p.trial_id for p in points} & {p.trial_id for p in edited}


@pytest.mark.network
def test_the_measure_run_function_needs_no_ray(corpus):
    """A group runs with any `report`; each context length reports its rows once it is measured."""
    spec = _measure(corpus)
    group = MEASURE.points(spec, corpus)
    reports = []
    MEASURE.run(group, lambda metrics, checkpoint_dir=None: reports.append(metrics), str(corpus), None)
    assert [r["point"] for r in reports] == [p.trial_id for p in group]
    columns, tables = MEASURE.rows(group[1], reports[1:])
    assert "context_length" not in columns and set(tables) == {"ce", "spectra"}  # the runner stores it from the point
    (ce,) = tables["ce"]
    assert ce["context_length"] == 16 and ce["n_chunks"] >= 2 and ce["config_hash"] == group[1].config_hash
    assert {"intrinsic_dim_0.01", "sum_log_eig_3", "eigenvalues"} <= set(tables["spectra"][0])


@pytest.mark.network
@pytest.mark.slow
def test_a_measure_spec_runs_through_the_sweep_runner(tmp_path, corpus, ray_cluster):
    results = tmp_path / "results"
    spec = _measure(corpus, spectra={"thresholds": [0.01], "n_eigenvalues": [3], "write_features": True})
    outcome = run_sweep(spec, results, verbose=0)
    assert len(outcome.ran) == 2 and outcome.skipped == []
    trials = store.load_results(results, sweep="m")
    assert set(trials["status"]) == {"ok"}, trials["error"].tolist()
    ce, spectra = (store.load_results(results, table, sweep="m") for table in ("ce", "spectra"))
    assert sorted(ce["context_length"]) == LENGTHS and sorted(spectra["context_length"]) == LENGTHS
    assert {"ce", "ce_se", "n_chunks", "n_docs", "torch_version", "config"} <= set(ce.columns)
    first_hash = set(trials["config_hash"])
    assert set(ce["config_hash"]) == first_hash == set(spectra["config_hash"])
    features = sorted((results / "m" / "features").glob("*.npy"))
    assert [p.stem for p in features] == sorted(outcome.ran) and np.load(features[0]).shape[1] == 64

    # the same spec again: everything is stored, so nothing is scheduled and nothing is written
    stored = {p: p.read_bytes() for p in (results / "m").glob("*/*.*")}
    plan = plan_sweep(spec, results)
    assert plan.pending == []
    again = plan.run(verbose=0)
    assert again.ran == [] and sorted(again.skipped) == sorted(outcome.ran)
    assert {p: p.read_bytes() for p in (results / "m").glob("*/*.*")} == stored

    # an edited protocol is another configuration: its rows go beside the old ones, never over them
    edited = _measure(corpus, protocol={"split": "train", "min_doc_tokens": 50, "drop_first": 0, "drop_last": 2,
                                        "chunk_length": 32})
    old_trials = store.load_results(results, sweep="m").drop(columns="finished_at")
    assert len(run_sweep(edited, results, verbose=0).ran) == 2
    # the trials table is compacted at the sweep's end (its part rewritten): its old rows are kept as they were
    kept = store.load_results(results, sweep="m").drop(columns="finished_at")
    pd.testing.assert_frame_equal(kept[kept["trial_id"].isin(old_trials["trial_id"])].reset_index(drop=True),
                                  old_trials.reset_index(drop=True), check_dtype=False)
    assert all(p.read_bytes() == content for p, content in stored.items() if p.parent.name not in ("trials", "history"))
    ce = store.load_results(results, "ce", sweep="m")
    assert len(ce) == 4 and ce.groupby("config_hash")["context_length"].apply(sorted).tolist() == [LENGTHS] * 2
    assert first_hash < set(ce["config_hash"])


def test_provenance_keys_name_what_a_report_carries_and_the_schema_declares():
    # named rather than computed (computing them would start CUDA in the driver): they must not drift
    from ctxscale.experiments import provenance_keys
    from ctxscale.provenance import provenance
    from ctxscale.store.schema import trials_schema

    assert provenance_keys() == frozenset(provenance())
    assert provenance_keys() <= set(trials_schema({}).names)
