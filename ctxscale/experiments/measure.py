"""The measure experiment (experiment 2 of the study): a pretrained causal LM's final-token
cross-entropy and hidden-state spectrum at every context length of the grid.

A point is (model, context length), with trial id `<model slug>_l<length>_<config hash>`. Pending
points are grouped per model: one Tune trial loads its model and cuts the corpus into the
protocol's chunks once, then measures its context lengths one after another and reports each as
it finishes, so each is stored at once and a crash loses at most the one in progress. Beside its
trials row, a finished point stores:

    <results>/<name>/ce/<trial_id>.parquet       model, context_length, ce, ce_se, ce_doc_mean, n_chunks, ...
    <results>/<name>/spectra/<trial_id>.parquet  model, context_length, eigenvalues (JSON), intrinsic_dim_<t>, ...
    <results>/<name>/features/<trial_id>.npy     the hidden states (spectra.write_features only)

`config_hash` covers what changes a measured number (model, corpus content, protocol, layer, KDE
settings, dtype, tokenizer), not the name, resources, batch size or spectrum thresholds: a changed threshold or N
list recomputes the stored spectra columns from the stored eigenvalues, without the model.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .. import store
from ..identity import measure_hash, measure_trial_id
from ..measure.kde import kde_entropy
from ..measure.spectra import (DEFAULT_THRESHOLD, measure_columns, pca_eigenvalues, spectrum_measures,
                               threshold_column, usable_count)
from ..spec.common import SpecError
from ..spec.measure import MeasureSpec
from ..spec.point import Point
from ..store.schema import F64, I64, STR
from .base import Experiment, provenance_keys


def prepare_measure(spec: MeasureSpec, source: Optional[str] = None) -> Path:
    """A GGUF model file exists; the corpus exists (preparing 'local' once) and its split has documents; returns its folder."""
    from ..data.corpus import CorpusError, corpus_folder, load_corpus

    where = source or f"spec {spec.name!r}"
    for model in spec.models:  # a GGUF file is local by nature: missing, it is the user's to fetch
        if model.endswith(".gguf") and not Path(model).expanduser().is_file():
            raise SpecError(f"{where}: model: GGUF file {model} not found (see the spec's header for how to get it)")
    try:
        path = corpus_folder(spec.corpus)
        corpus = load_corpus(path)
    except (CorpusError, OSError, ValueError) as err:
        raise SpecError(f"{where}: corpus: {err}") from None
    if len(corpus.documents(spec.protocol.split)) == 0:
        raise SpecError(f"{where}: protocol.split: the corpus {path} has no {spec.protocol.split!r} documents")
    return path


def config_hash(spec: MeasureSpec, model: str, corpus_path: Path) -> str:
    """The model's config hash (`ctxscale.identity.measure_hash`) over the content of the corpus split it reads."""
    from ..data.corpus import load_corpus

    return measure_hash(spec, model, load_corpus(corpus_path).manifest["splits"][spec.protocol.split]["sha256"])


def measure_points(spec: MeasureSpec, corpus_path: Path) -> list[Point]:
    """Every (model, context length) of the spec."""
    points = []
    for model in spec.models:
        digest = config_hash(spec, model, corpus_path)
        points += [Point(measure_trial_id(model, length, digest), digest, spec, model=model, context_length=length)
                   for length in spec.grid.context_length]
    return points


def per_model(points: list[Point]) -> list[list[Point]]:
    """One Tune trial per model: a model is loaded once for all its pending context lengths."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(point.model, []).append(point)
    return list(groups.values())


def corpus_documents(corpus, split: str, tokenizer=None, max_documents: Optional[int] = None) -> Iterator[np.ndarray]:
    """Token arrays of a prepared corpus's documents, without the trailing end-of-text token.

    With a `tokenizer` (a transformers tokenizer) each document is decoded from GPT-2 tokens (a
    lossless byte-level BPE) and re-tokenized with it, without special tokens."""
    docs, tokens = corpus.documents(split), corpus.tokens(split)
    eot = corpus.manifest.get("tokenizer", {}).get("eot_token")
    encoding = None
    if tokenizer is not None:
        from ..data.tokenizer import gpt2_encoding

        encoding = gpt2_encoding()
    for start, length in docs[:max_documents]:
        doc = np.asarray(tokens[start:start + length])
        if len(doc) and eot is not None and doc[-1] == eot:
            doc = doc[:-1]
        if encoding is None:
            yield doc.astype(np.int64)
        else:
            text = encoding.decode(doc.tolist())
            yield np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def measure_model(group: list[Point], report, corpus_path, resume_dir: Optional[str] = None) -> None:
    """Measure one model at the context lengths of `group` (points of that model), reporting each.

    Ray-agnostic: the runner calls it in a Tune trial, a test with any `report`. A retried trial
    measures its group again (the model's load dominates; the stored rows come out the same).
    """
    from ..data.corpus import load_corpus
    from ..measure.lm import FinalTokenMeasurer, Progress, load_model
    from ..measure.protocol import Protocol, aggregate, build_chunks, context_inputs

    spec, model = group[0].spec, group[0].model
    p, inf = spec.protocol, spec.inference
    corpus = load_corpus(corpus_path)
    loaded = load_model(model, device=inf.device, dtype=inf.dtype, attention=inf.attention,
                        trust_remote_code=inf.trust_remote_code)
    tokenizer = None
    if inf.tokenizer is not None:
        from transformers import AutoTokenizer

        source, extra = loaded.pretrained_source() if inf.tokenizer == "model" else (inf.tokenizer, {})
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=inf.trust_remote_code, **extra)
    protocol = Protocol(p.min_doc_tokens, p.drop_first, p.drop_last, p.chunk_length)
    chunks = build_chunks(corpus_documents(corpus, p.split, tokenizer, p.max_documents), protocol, p.max_chunks)
    # what only the loaded model and tokenizer can tell: checked here, before any length is measured
    if chunks.n_chunks < 2:
        raise SpecError(
            f"{spec.name}: protocol: {chunks.n_chunks} chunk(s) from the {chunks.n_docs_seen} {p.split!r} documents "
            f"read: documents need more than min_doc_tokens = {p.min_doc_tokens} tokens and at least drop_first + "
            f"drop_last + chunk_length = {p.drop_first + p.drop_last + p.chunk_length}; the PCA needs 2 chunks")
    if int(chunks.tokens.max()) >= loaded.vocab_size:
        raise SpecError(
            f"{spec.name}: inference.tokenizer: token id {int(chunks.tokens.max())} is outside {model}'s vocabulary "
            f"({loaded.vocab_size}); the corpus holds GPT-2 tokens: set inference.tokenizer: model")
    longest = max(point.context_length for point in group)
    if loaded.max_positions is not None and longest - 1 > loaded.max_positions:
        raise SpecError(f"{spec.name}: grid.context_length {longest} needs {longest - 1} positions; "
                        f"{model} has {loaded.max_positions}")
    measurer = FinalTokenMeasurer(loaded, layer=spec.spectra.layer, batch_size=inf.batch_size,
                                  batch_tokens=inf.batch_tokens)
    config = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    for point in group:
        length = point.context_length
        inputs, targets = context_inputs(chunks.tokens, length)
        started = time.perf_counter()
        ce, features = measurer.measure(inputs, targets, Progress(f"{model} l={length}"))
        wall = time.perf_counter() - started
        eig = pca_eigenvalues(features)
        fixed = {"sweep": spec.name, "model": model, "config_hash": point.config_hash, "context_length": length}
        ce_row = {**fixed, **aggregate(ce, chunks.doc_index), "split": p.split, "n_tokens": int(inputs.size),
                  "wall_s": wall, "tokens_per_s": inputs.size / max(wall, 1e-9),
                  "batch_size": measurer.batch_size_used, "dtype": str(loaded.dtype).removeprefix("torch."),
                  "device": str(loaded.device), "attention": inf.attention, "full_logits": measurer.full_logits,
                  "model_path": loaded.path, "config": config}
        spectra_row = {**fixed, "layer": spec.spectra.layer, "n_samples": len(features),
                       "hidden_dim": int(features.shape[1]), "n_usable": usable_count(eig, len(features)),
                       "eigenvalues": json.dumps(eig.tolist()),
                       "kde_entropy": kde_entropy(features, spec.spectra.kde_dims, spec.spectra.kde_max_samples),
                       "kde_dims": spec.spectra.kde_dims,
                       **spectrum_measures(eig, spec.spectra.thresholds, spec.spectra.n_eigenvalues, len(features))}
        print(_line(ce_row, spectra_row), flush=True)
        metrics = {"point": point.trial_id, "status": "ok", "ce": ce_row, "spectra": spectra_row}
        if not spec.spectra.write_features:
            report(metrics)
            continue
        # the hidden states are too large for a report: they travel as a checkpoint's files
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "store" / "features" / f"{point.trial_id}.npy"
            target.parent.mkdir(parents=True)
            np.save(target, features)
            report(metrics, checkpoint_dir=folder)


def _line(ce: dict, spectra: dict) -> str:
    column = threshold_column(DEFAULT_THRESHOLD)
    dim = f", intrinsic dim@{DEFAULT_THRESHOLD:g} {spectra[column]}" if column in spectra else ""
    return (f"{ce['model']} l={ce['context_length']}: ce {ce['ce']:.4f} ± {ce['ce_se']:.4f} over {ce['n_chunks']} "
            f"chunks / {ce['n_docs']} docs{dim}; {ce['tokens_per_s']:,.0f} tokens/s")


def measure_rows(point: Point, reports: list[dict]) -> tuple[dict, dict[str, list[dict]]]:
    """The point's ce and spectra rows as measured, with where they ran (the report carries it
    once, beside them); the trials row its wall time."""
    if not reports:
        return {}, {}
    last = reports[-1]
    where = {k: v for k, v in last.items() if k in provenance_keys()}
    return ({"wall_s": last["ce"]["wall_s"], **where},
            {"ce": [{**last["ce"], **where}], "spectra": [last["spectra"]]})


def _read_row(path: Path) -> Optional[dict]:
    import pandas as pd

    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise store.StoreError(f"{path}: not a readable Parquet file ({err})") from None
    return frame.iloc[0].to_dict() if len(frame) == 1 else None


def refresh_spectra(spec: MeasureSpec, results_dir: Path, points: list[Point]) -> None:
    """Rewrite the spectra rows of stored points whose measure columns are not the spec's
    thresholds / N list, from their stored eigenvalues (no model needed)."""
    wanted = set(spectrum_measures([1.0], spec.spectra.thresholds, spec.spectra.n_eigenvalues))
    for point in points:
        row = _read_row(store.sweep_dir(results_dir, spec.name) / "spectra" / f"{point.trial_id}.parquet")
        if row is None:
            continue
        have = {column for pairs in measure_columns(row).values() for _, column in pairs}
        if have == wanted:
            continue
        fresh = {k: v for k, v in row.items() if k not in have}
        fresh.update(spectrum_measures(json.loads(row["eigenvalues"]), spec.spectra.thresholds,
                                       spec.spectra.n_eigenvalues, int(row["n_samples"])))
        store.write_rows(results_dir, spec.name, "spectra", point.trial_id, [fresh])


def ce_table(results_dir, spec: MeasureSpec, trials) -> str:
    """Cross-entropy per context length (rows) and model (columns) of the spec's configuration."""
    ce = store.load_results(results_dir, "ce", sweep=spec.name)
    if not ce.empty:  # rows of an earlier configuration of a model are not this spec's
        ce = ce[ce["config_hash"].isin(set(trials["config_hash"]))]
    if ce.empty:
        return "(nothing measured)"
    table = ce.pivot_table(index="context_length", columns="model", values="ce", aggfunc="mean")
    return table.to_string(float_format=lambda v: f"{v:.4f}")


MEASURE = Experiment("measure", MeasureSpec, {"model": STR, "context_length": I64, "wall_s": F64},
                     prepare=prepare_measure, points=measure_points, run=measure_model, rows=measure_rows,
                     table=ce_table, group=per_model, refresh=refresh_spectra)
