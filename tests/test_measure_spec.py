"""The measure spec: the shipped files load, bad input names its field, the config hash."""
from __future__ import annotations

from pathlib import Path

import pytest

from ctxscale.spec import SpecError, load_spec, parse_spec

SWEEPS = Path(__file__).parent.parent / "sweeps"
GOOD = {"name": "m", "experiment": "measure", "model": "random:gpt2-tiny", "grid": {"context_length": [16, 64]}}


def _with(**sections):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for key, value in sections.items():
        raw[key] = value
    return raw


@pytest.mark.parametrize("name", ["measure-local.yaml", "measure-llama.yaml", "measure-smollm2.yaml"])
def test_shipped_specs_load(name):
    spec = load_spec(SWEEPS / name)
    assert spec.experiment == "measure" and spec.models and spec.grid.size >= 3


def test_defaults_are_the_study_protocol():
    spec = parse_spec(GOOD)
    p = spec.protocol
    assert (p.min_doc_tokens, p.drop_first, p.drop_last, p.chunk_length) == (3000, 100, 50, 2048)
    assert 0.0035 in spec.spectra.thresholds and spec.spectra.n_eigenvalues[0] == 3
    assert spec.spectra.n_eigenvalues[-1] == 2000 and spec.spectra.write_features is False
    assert spec.inference.trust_remote_code is False and spec.inference.tokenizer is None
    assert spec.models == ["random:gpt2-tiny"]
    assert parse_spec(_with(model=["a", "b"])).models == ["a", "b"]


BAD = [
    (_with(grid={"context_length": [16, 4096]}), "grid.context_length 4096 exceeds protocol.chunk_length = 2048"),
    (_with(grid={"context_length": [1, 8]}), "grid.context_length: context_length values must be at least 2"),
    (_with(grid={"context_length": [8, 8]}), "grid.context_length: context_length has duplicate values"),
    (_with(grid={"context_length": [8], "data_size": [10]}), "grid.data_size: unknown key"),
    (_with(spectra={"thresholds": [0.01, 1.5]}), "spectra.thresholds: thresholds are ratios"),
    (_with(spectra={"n_eigenvalues": [0, 3]}), "spectra.n_eigenvalues"),
    (_with(protocol={"split": "test"}), "protocol.split"),
    (_with(protocol={"max_chunks": 1}), "protocol.max_chunks"),
    (_with(inference={"dtype": "int8"}), "inference.dtype"),
    (_with(model=["a", "a"]), "model: Value error, model lists a model twice"),
    (_with(resources={"num_workers": 2}), "resources.num_workers must be 0"),
    ({k: v for k, v in GOOD.items() if k != "model"}, "model: Field required"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m for _, m in BAD])
def test_bad_spec_names_the_field(raw, message):
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "m.yaml")
    assert message.replace("Value error, ", "") in str(err.value)


@pytest.mark.network
def test_config_hash_follows_the_science_only(tmp_path):
    from ctxscale.data.corpus import prepare_corpus
    from ctxscale.experiments.measure import config_hash

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("word " * 300)
    prepare_corpus(tmp_path / "docs", tmp_path / "corpus", min_doc_tokens=10, val_fraction=0.0, num_proc=1)
    corpus = tmp_path / "corpus"
    base = config_hash(parse_spec(GOOD), "m", corpus)
    same = [_with(spectra={"thresholds": [0.1]}), _with(inference={"batch_size": 3}), _with(name="other"),
            _with(resources={"cpus_per_trial": 2}), _with(grid={"context_length": [8]})]
    for raw in same:
        assert config_hash(parse_spec(raw), "m", corpus) == base
    for raw in (_with(protocol={"drop_first": 0}), _with(inference={"dtype": "bfloat16"}), _with(spectra={"layer": 1}),
                _with(spectra={"kde_dims": 8})):
        assert config_hash(parse_spec(raw), "m", corpus) != base
    assert config_hash(parse_spec(GOOD), "other-model", corpus) != base


def test_a_missing_gguf_model_is_a_spec_error_before_anything_runs(tmp_path):
    from ctxscale.experiments.measure import prepare_measure

    spec = parse_spec(_with(model=str(tmp_path / "missing.gguf"), corpus=str(tmp_path / "no-corpus")))
    with pytest.raises(SpecError) as err:
        prepare_measure(spec, "m.yaml")
    assert str(err.value).startswith("m.yaml: model: GGUF file") and "missing.gguf not found" in str(err.value)


def test_kde_settings_default_to_16_dims_and_are_validated():
    spec = parse_spec(GOOD)
    assert (spec.spectra.kde_dims, spec.spectra.kde_max_samples) == (16, 10_000)
    with pytest.raises(SpecError, match="spectra.kde_dims"):
        parse_spec(_with(spectra={"kde_dims": 0}))
