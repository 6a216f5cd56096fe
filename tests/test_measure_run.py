"""`ctxscale measure` (an alias of `ctxscale sweep`) end to end on a real local Ray: a tiny random
model on a tiny corpus writes both tables, a re-run skips, a changed threshold list is recomputed
without the model, a failing model is stored as failed, and the entropy analysis reads the result.
The runner's own guarantees for measure specs are tested in test_experiments.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from ctxscale import store
from ctxscale.cli import main

pytestmark = pytest.mark.slow
LENGTHS = [4, 16, 64]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from ctxscale.data.corpus import prepare_corpus

    root = tmp_path_factory.mktemp("measure-corpus")
    rng = np.random.default_rng(0)
    words = np.array(["the", "king", "queen", "speaks", "of", "war", "and", "peace", "night", "day", "sword", "crown"])
    (root / "docs").mkdir()
    for i, n_words in enumerate([900, 500, 60, 700]):  # the third is too short for the protocol below
        (root / "docs" / f"{i}.txt").write_text(" ".join(rng.choice(words, n_words)) + ".")
    prepare_corpus(root / "docs", root / "corpus", min_doc_tokens=50, val_fraction=0.0, num_proc=1)
    return root / "corpus"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("measure-model")
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    return folder


def _spec(tmp_path, corpus, model, **changes) -> str:
    raw = {"name": "tiny-measure", "experiment": "measure", "model": str(model), "corpus": str(corpus),
           "grid": {"context_length": LENGTHS},
           "protocol": {"split": "train", "min_doc_tokens": 100, "drop_first": 4, "drop_last": 2, "chunk_length": 64},
           "spectra": {"thresholds": [0.0035, 0.1], "n_eigenvalues": [3, 10], "kde_dims": 4},
           "inference": {"device": "cpu", "batch_size": 16}, "resources": {"cpus_per_trial": 1}} | changes
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.network
def test_measure_cli_stores_both_tables_and_skips_on_rerun(tmp_path, tiny_corpus, tiny_model, ray_cluster, capsys):
    results = tmp_path / "results"
    spec = _spec(tmp_path, tiny_corpus, tiny_model)
    assert main(["measure", spec, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "tiny-measure: 3 ok;" in out and out.endswith("ran 3, skipped 0 stored, 0 held by another launch\n")

    ce = store.load_results(results, "ce", sweep="tiny-measure").sort_values("context_length")
    assert ce["context_length"].tolist() == LENGTHS and (ce["model"] == str(tiny_model)).all()
    assert {"model", "context_length", "ce", "ce_se", "n_chunks", "n_docs", "config_hash", "tokens_per_s",
            "torch_version", "config"} <= set(ce.columns)
    from ctxscale.data.corpus import load_corpus

    corpus = load_corpus(tiny_corpus)
    text_lengths = corpus.train_docs[:, 1] - 1  # without the end-of-text token
    expected_chunks = sum((n - 6) // 64 for n in text_lengths if n > 100)
    assert (ce["n_chunks"] == expected_chunks).all() and (ce["n_docs"] == 3).all()
    assert ce["ce"].to_numpy() == pytest.approx(math.log(50257), abs=0.2)  # an untrained model

    spectra = store.load_results(results, "spectra", sweep="tiny-measure")
    assert len(spectra) == 3 and (spectra["hidden_dim"] == 32).all() and (spectra["n_samples"] == expected_chunks).all()
    assert {"intrinsic_dim_0.0035", "intrinsic_dim_0.1", "sum_log_eig_3", "sum_log_eig_10", "eigenvalues"} <= set(spectra.columns)
    assert (spectra["intrinsic_dim_0.1"] <= spectra["intrinsic_dim_0.0035"]).all()
    assert np.isfinite(spectra["kde_entropy"]).all() and (spectra["kde_dims"] == 4).all()

    files = sorted((results / "tiny-measure").glob("*/*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert main(["measure", spec, "--results", str(results), "--quiet"]) == 0
    assert "ran 0, skipped 3 stored, 0 held by another launch" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files} == before

    # new thresholds: the spectra rows are recomputed from the stored eigenvalues; nothing is measured
    changed = _spec(tmp_path, tiny_corpus, tiny_model,
                    spectra={"thresholds": [0.01], "n_eigenvalues": [5], "kde_dims": 4})
    assert main(["measure", changed, "--results", str(results), "--quiet"]) == 0
    assert "ran 0, skipped 3 stored, 0 held by another launch" in capsys.readouterr().out
    refreshed = store.load_results(results, "spectra", sweep="tiny-measure")
    assert "intrinsic_dim_0.01" in refreshed and "intrinsic_dim_0.1" not in refreshed
    assert np.isfinite(refreshed["kde_entropy"]).all()  # kept: it needs the states, not the eigenvalues
    ce_files = sorted((results / "tiny-measure" / "ce").glob("*.parquet"))
    assert all(before[p] == p.stat().st_mtime_ns for p in ce_files)

    from analysis.entropy import entropy_report

    text, fragment = entropy_report(results, "tiny-measure", tmp_path / "report")
    assert "CE vs context length" in text and "<img" in fragment
    assert (tmp_path / "report" / "ce_entropy_fits.csv").is_file()


@pytest.mark.network
def test_a_failing_model_is_stored_as_failed_and_measures_nothing(tmp_path, tiny_corpus, ray_cluster, capsys):
    results = tmp_path / "results"
    spec = _spec(tmp_path, tiny_corpus, tmp_path / "no-such-model")
    assert main(["measure", spec, "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "ran 3, skipped 0 stored, 0 held" in out and "tiny-measure: 3 failed;" in out and "failed: " in out
    trials = store.load_results(results, sweep="tiny-measure")
    assert set(trials["status"]) == {"failed"} and trials["error"].str.contains("no-such-model").all()
    assert sorted(trials["context_length"]) == LENGTHS
    assert not (results / "tiny-measure" / "ce").exists() and not (results / "tiny-measure" / "spectra").exists()


def test_missing_corpus_fails_before_ray_and_writes_nothing(tmp_path, capsys):
    spec = _spec(tmp_path, tmp_path / "nowhere", "random:gpt2-tiny")
    assert main(["measure", spec, "--results", str(tmp_path / "r")]) == 2
    assert "corpus:" in capsys.readouterr().err and not (tmp_path / "r").exists()
