"""Run a measure spec on Ray: one task per model, iterating the context lengths inside it.

A task loads its model once, cuts the corpus into the protocol's chunks once, then for every
pending context length measures the final-token cross-entropy and the hidden-state spectrum and
yields them (a Ray streaming generator). The driver writes each context length's rows as they
arrive, so a crash loses at most the one in progress and the results folder need only exist
where the command was launched. Tables, keyed by model + context length:

    <results>/<name>/ce/<key>.parquet       model, context_length, ce, ce_se, ce_doc_mean, n_chunks, n_docs, ...
    <results>/<name>/spectra/<key>.parquet  model, context_length, eigenvalues (JSON), intrinsic_dim_<t>, sum_log_eig_<N>

A stored pair is skipped when its `config_hash` (model, corpus, protocol, layer, dtype, tokenizer)
matches the spec; a changed threshold or N list only recomputes the spectra columns from the stored
eigenvalues, without running the model. This module never calls `ray.init`.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .. import store
from ..spec.common import resolve_corpus_path
from .spectra import measure_columns, pca_eigenvalues, spectrum_measures, usable_count

TABLES = ("ce", "spectra")


class MeasureError(RuntimeError):
    """The measurement cannot run as asked; the message names the spec field."""


# --- Corpus and keys (driver side, no torch) ---------------------------------------------------


def prepare_measure(spec, source: Optional[str] = None) -> Path:
    """Before Ray starts: the corpus exists (preparing 'local'), and its split has documents."""
    from ..data.corpus import CorpusError, load_corpus
    from ..spec import SpecError

    where = source or f"spec {spec.name!r}"
    path = resolve_corpus_path(spec.corpus)
    try:
        corpus = load_corpus(path)
    except (CorpusError, OSError, ValueError) as err:
        raise SpecError(f"{where}: corpus: {err}") from None
    if len(corpus.documents(spec.protocol.split)) == 0:
        raise SpecError(f"{where}: protocol.split: the corpus {path} has no {spec.protocol.split!r} documents")
    return path


def config_hash(spec, model: str, corpus_path: Path) -> str:
    """Hash of what changes a measured number: not the name, resources, batch size or thresholds."""
    from ..data.corpus import load_corpus

    split = load_corpus(corpus_path).manifest["splits"][spec.protocol.split]
    payload = {"model": model, "corpus_sha256": split["sha256"], "protocol": spec.protocol.model_dump(mode="json"),
               "layer": spec.spectra.layer, "dtype": spec.inference.dtype, "tokenizer": spec.inference.tokenizer}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def model_slug(model: str) -> str:
    """A file-name-safe, collision-free name for a model string.

    >>> model_slug("meta-llama/Llama-3.1-8B")
    'meta-llama-Llama-3.1-8B-693323'
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")[-60:] or "model"
    return f"{readable}-{hashlib.sha1(model.encode()).hexdigest()[:6]}"


def measurement_key(model: str, context_length: int) -> str:
    return f"{model_slug(model)}_l{context_length}"


def _read_one(root: Path, name: str, table: str, key: str) -> Optional[dict]:
    path = store.sweep_dir(root, name) / table / f"{key}.parquet"
    if not path.is_file():
        return None
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise store.StoreError(f"{path}: not a readable Parquet file ({err})") from None
    return frame.iloc[0].to_dict() if len(frame) == 1 else None


def pending_measurements(spec, results_dir, corpus_path: Optional[Path] = None) -> dict[str, list[int]]:
    """{model: [context lengths to measure]}; stored pairs with another config_hash count as pending.

    Stored pairs whose spectra columns differ from the spec's thresholds / N list are brought up to
    date here from their stored eigenvalues (no model needed)."""
    root = Path(results_dir)
    corpus_path = corpus_path or resolve_corpus_path(spec.corpus)
    pending: dict[str, list[int]] = {}
    for model in spec.models:
        digest = config_hash(spec, model, corpus_path)
        for length in spec.grid.context_length:
            key = measurement_key(model, length)
            ce_row = _read_one(root, spec.name, "ce", key)
            spectra_row = _read_one(root, spec.name, "spectra", key)
            if (ce_row is None or spectra_row is None or ce_row.get("config_hash") != digest
                    or spectra_row.get("config_hash") != digest):
                pending.setdefault(model, []).append(length)
            else:
                _refresh_spectra(root, spec, key, spectra_row)
    return pending


def _spectra_columns(spec) -> dict:
    return spectrum_measures([1.0], spec.spectra.thresholds, spec.spectra.n_eigenvalues)


def _refresh_spectra(root: Path, spec, key: str, row: dict) -> None:
    wanted = set(_spectra_columns(spec))
    have = {c for pairs in measure_columns(row).values() for _, c in pairs}
    if wanted == have:
        return
    eig = json.loads(row["eigenvalues"])
    base = {k: v for k, v in row.items() if k not in have}
    base.update(spectrum_measures(eig, spec.spectra.thresholds, spec.spectra.n_eigenvalues, int(row["n_samples"])))
    store.write_rows(root, spec.name, "spectra", key, [base])


# --- The Ray task (worker side) ------------------------------------------------------------------


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


def measure_model(spec_dict: dict, model: str, lengths: list[int], corpus_path: str) -> Iterator[dict]:
    """Measure one model at `lengths`; yields one {"key", "ce", "spectra", "features"} per length.

    Ray-agnostic (the runner wraps it in a task): importable and testable without a cluster."""
    from ..data.corpus import load_corpus
    from ..provenance import provenance
    from ..spec.measure import MeasureSpec
    from .lm import FinalTokenMeasurer, Progress, load_model
    from .protocol import Protocol, aggregate, build_chunks, context_inputs

    spec = MeasureSpec.model_validate(spec_dict)
    p, inf = spec.protocol, spec.inference
    corpus = load_corpus(corpus_path)
    loaded = load_model(model, device=inf.device, dtype=inf.dtype, attention=inf.attention,
                        trust_remote_code=inf.trust_remote_code)
    tokenizer = None
    if inf.tokenizer is not None:
        from transformers import AutoTokenizer

        source = loaded.path if inf.tokenizer == "model" else inf.tokenizer
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=inf.trust_remote_code)
    protocol = Protocol(p.min_doc_tokens, p.drop_first, p.drop_last, p.chunk_length)
    chunks = build_chunks(corpus_documents(corpus, p.split, tokenizer, p.max_documents), protocol, p.max_chunks)
    if chunks.n_chunks < 2:
        raise MeasureError(
            f"{spec.name}: protocol: {chunks.n_chunks} chunk(s) from the {chunks.n_docs_seen} {p.split!r} documents "
            f"read: documents need more than min_doc_tokens = {p.min_doc_tokens} tokens and at least drop_first + "
            f"drop_last + chunk_length = {p.drop_first + p.drop_last + p.chunk_length}; the PCA needs 2 chunks")
    if int(chunks.tokens.max()) >= loaded.vocab_size:
        raise MeasureError(
            f"{spec.name}: inference.tokenizer: token id {int(chunks.tokens.max())} is outside {model}'s vocabulary "
            f"({loaded.vocab_size}); the corpus holds GPT-2 tokens: set inference.tokenizer: model")
    if loaded.max_positions is not None and max(lengths) - 1 > loaded.max_positions:
        raise MeasureError(f"{spec.name}: grid.context_length {max(lengths)} needs {max(lengths) - 1} positions; "
                           f"{model} has {loaded.max_positions}")
    measurer = FinalTokenMeasurer(loaded, layer=spec.spectra.layer, batch_size=inf.batch_size,
                                  batch_tokens=inf.batch_tokens)
    digest = config_hash(spec, model, Path(corpus_path))
    fixed = {"sweep": spec.name, "model": model, "config_hash": digest}
    where = provenance()
    for length in lengths:
        inputs, targets = context_inputs(chunks.tokens, length)
        started = time.perf_counter()
        ce, features = measurer.measure(inputs, targets, Progress(f"{model} l={length}"))
        wall = time.perf_counter() - started
        eig = pca_eigenvalues(features)
        ce_row = {**fixed, "context_length": length, **aggregate(ce, chunks.doc_index), "split": p.split,
                  "n_tokens": int(inputs.size), "wall_s": wall, "tokens_per_s": inputs.size / max(wall, 1e-9),
                  "batch_size": measurer.batch_size_used, "dtype": str(loaded.dtype).removeprefix("torch."),
                  "device": str(loaded.device), "attention": inf.attention, "full_logits": measurer.full_logits,
                  "model_path": loaded.path, "config": json.dumps(spec_dict, sort_keys=True), **where}
        spectra_row = {**fixed, "context_length": length, "layer": spec.spectra.layer, "n_samples": len(features),
                       "hidden_dim": int(features.shape[1]), "n_usable": usable_count(eig, len(features)),
                       "eigenvalues": json.dumps(eig.tolist()),
                       **spectrum_measures(eig, spec.spectra.thresholds, spec.spectra.n_eigenvalues, len(features))}
        yield {"key": measurement_key(model, length), "ce": ce_row, "spectra": spectra_row,
               "features": features if spec.spectra.write_features else None}


# --- The driver --------------------------------------------------------------------------------


@dataclass
class MeasureOutcome:
    name: str
    results_dir: Path
    ran: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # model -> error
    wall_s: float = 0.0


def _write_features(root: Path, name: str, key: str, features: np.ndarray) -> Path:
    path = store.sweep_dir(root, name) / "features" / f"{key}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, features)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _report_line(ce: dict, spectra: dict, spec) -> str:
    from .spectra import DEFAULT_THRESHOLD, threshold_column

    column = threshold_column(DEFAULT_THRESHOLD)
    dim = f", intrinsic dim@{DEFAULT_THRESHOLD:g} {spectra[column]}" if column in spectra else ""
    return (f"{ce['model']} l={ce['context_length']}: ce {ce['ce']:.4f} ± {ce['ce_se']:.4f} over {ce['n_chunks']} "
            f"chunks / {ce['n_docs']} docs{dim}; {ce['tokens_per_s']:,.0f} tokens/s")


def run_measure(spec, results_dir, corpus_path: Optional[Path] = None, verbose: int = 1) -> MeasureOutcome:
    """Measure every (model, context length) of `spec` not yet stored under `results_dir`.

    Ray must be initialised by the caller when anything is pending. A model whose task fails is
    reported in `outcome.failed`; the context lengths it finished before the failure stay stored."""
    import ray

    root = Path(results_dir).absolute()
    started = time.perf_counter()
    corpus_path = corpus_path or prepare_measure(spec)
    pending = pending_measurements(spec, root, corpus_path)
    outcome = MeasureOutcome(spec.name, root)
    outcome.skipped = [(m, l) for m in spec.models for l in spec.grid.context_length if l not in pending.get(m, [])]
    if not pending:
        return outcome
    if not ray.is_initialized():
        raise MeasureError("Ray is not initialised: call ray.init() (or use the ctxscale CLI) first")
    task = ray.remote(measure_model).options(
        num_cpus=spec.resources.cpus_per_trial, num_gpus=spec.resources.gpus_per_trial,
        num_returns="streaming", max_retries=spec.resources.max_failures, name="ctxscale-measure")
    spec_dict = spec.model_dump(mode="json")
    active = {task.remote(spec_dict, model, lengths, str(corpus_path)): model for model, lengths in pending.items()}
    while active:
        ready, _ = ray.wait(list(active), num_returns=1)
        generator = ready[0]
        model = active[generator]
        try:
            item = ray.get(next(generator))
        except StopIteration:
            del active[generator]
            continue
        except Exception as err:  # the task raised: Ray re-raises it here, wrapped
            outcome.failed[model] = str(getattr(err, "cause", None) or err).strip()[-4000:]
            del active[generator]
            if verbose:
                print(f"{model}: failed: {outcome.failed[model].splitlines()[-1]}", flush=True)
            continue
        if item["features"] is not None:
            _write_features(root, spec.name, item["key"], item["features"])
        # spectra first: the ce row is the commit marker a re-run looks for
        store.write_rows(root, spec.name, "spectra", item["key"], [item["spectra"]])
        store.write_rows(root, spec.name, "ce", item["key"], [item["ce"]])
        outcome.ran.append((model, item["ce"]["context_length"]))
        if verbose:
            print(_report_line(item["ce"], item["spectra"], spec), flush=True)
    outcome.wall_s = time.perf_counter() - started
    return outcome


def ce_table(ce) -> str:
    """Cross-entropy per context length (rows) and model (columns), as text."""
    if ce.empty:
        return "(nothing stored)"
    table = ce.pivot_table(index="context_length", columns="model", values="ce", aggfunc="mean")
    return table.to_string(float_format=lambda v: f"{v:.4f}")
