"""The study's measurement protocol as plain arithmetic on token arrays (NumPy only).

Experiment 2 of the reference study (arXiv 2502.01481), for a pretrained causal LM:

1. keep documents with more than `min_doc_tokens` tokens (3,000);
2. drop each document's first `drop_first` (100) and last `drop_last` (50) tokens;
3. cut what is left into non-overlapping chunks of `chunk_length` (2,048) tokens from its start
   (a shorter remainder at the end is dropped);
4. for a context length l, keep the last l tokens of every chunk: the model reads the first
   l - 1 of them and the cross-entropy of the l-th (the chunk's final token) is measured;
5. average the final-token cross-entropy per document, then over documents weighted by their
   chunk counts.

Step 5 weights each document's mean by its chunk count, which equals the plain mean over all
chunks; `aggregate` also reports the unweighted mean of the document means.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np


@dataclass(frozen=True)
class Protocol:
    min_doc_tokens: int = 3000
    drop_first: int = 100
    drop_last: int = 50
    chunk_length: int = 2048

    def __post_init__(self):
        if min(self.min_doc_tokens, self.drop_first, self.drop_last) < 0 or self.chunk_length < 2:
            raise ValueError(f"invalid protocol {self}")


@dataclass(frozen=True)
class Chunks:
    """Every chunk of the measured documents.

    tokens : (n_chunks, chunk_length) int64; doc_index : (n_chunks,) which document each came from
    (0-based among the documents that were kept); n_docs_seen : documents read (kept or not).
    """

    tokens: np.ndarray
    doc_index: np.ndarray
    n_docs_seen: int

    @property
    def n_chunks(self) -> int:
        return len(self.tokens)

    @property
    def n_docs(self) -> int:
        return int(len(np.unique(self.doc_index)))


def chunk_document(tokens, protocol: Protocol) -> np.ndarray:
    """The chunks of one document (steps 1-3), as an (n, chunk_length) array; (0, chunk_length)
    for a document that is too short.

    >>> chunk_document(np.arange(20), Protocol(min_doc_tokens=10, drop_first=3, drop_last=2, chunk_length=4))
    array([[ 3,  4,  5,  6],
           [ 7,  8,  9, 10],
           [11, 12, 13, 14]])
    """
    tokens = np.asarray(tokens)
    empty = np.zeros((0, protocol.chunk_length), dtype=np.int64)
    if len(tokens) <= protocol.min_doc_tokens:
        return empty
    body = tokens[protocol.drop_first:len(tokens) - protocol.drop_last]
    n = len(body) // protocol.chunk_length
    if n == 0:
        return empty
    return body[:n * protocol.chunk_length].astype(np.int64).reshape(n, protocol.chunk_length)


def build_chunks(documents: Iterable, protocol: Protocol, max_chunks: Optional[int] = None) -> Chunks:
    """Chunks of all `documents` (an iterable of token arrays) in order, at most `max_chunks`
    (the last document may then contribute only some of its chunks)."""
    parts, owners, kept, seen = [], [], 0, 0
    total = 0
    for doc in documents:
        seen += 1
        chunks = chunk_document(doc, protocol)
        if len(chunks) == 0:
            continue
        if max_chunks is not None:
            chunks = chunks[:max_chunks - total]
        parts.append(chunks)
        owners.append(np.full(len(chunks), kept, dtype=np.int64))
        kept += 1
        total += len(chunks)
        if max_chunks is not None and total >= max_chunks:
            break
    if not parts:
        return Chunks(np.zeros((0, protocol.chunk_length), np.int64), np.zeros(0, np.int64), seen)
    return Chunks(np.concatenate(parts), np.concatenate(owners), seen)


def context_inputs(chunks: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: (inputs (n, l - 1), targets (n,)) for context length l.

    The inputs are the first l - 1 of each chunk's last l tokens; the target is the chunk's final
    token. Feeding the l - 1 tokens and reading the last position is the same computation as
    feeding all l tokens and reading the second-to-last position, minus one token of work.

    >>> x, y = context_inputs(np.arange(12).reshape(2, 6), 3)
    >>> x.tolist(), y.tolist()
    ([[3, 4], [9, 10]], [5, 11])
    """
    chunk_length = chunks.shape[1]
    if not 2 <= context_length <= chunk_length:
        raise ValueError(f"context_length {context_length} must be in [2, chunk_length = {chunk_length}]")
    window = chunks[:, chunk_length - context_length:]
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, -1])


def aggregate(chunk_ce, doc_index) -> dict:
    """Step 5: per-document means, then their mean weighted by chunk count.

    Returns ce (the weighted mean), ce_doc_mean (documents weighted equally), ce_se (standard error
    of ce from the spread of chunks: std / sqrt(n_chunks)), n_chunks and n_docs.

    >>> out = aggregate([1.0, 3.0, 5.0], [0, 0, 1])
    >>> out["ce"], out["ce_doc_mean"], out["n_chunks"], out["n_docs"]
    (3.0, 3.5, 3, 2)
    """
    ce = np.asarray(chunk_ce, dtype=np.float64)
    docs = np.asarray(doc_index)
    if ce.shape != docs.shape or ce.size == 0:
        raise ValueError(f"chunk_ce and doc_index must be equal, non-empty 1-D arrays ({ce.shape}, {docs.shape})")
    ids, inverse, counts = np.unique(docs, return_inverse=True, return_counts=True)
    doc_means = np.bincount(inverse, weights=ce) / counts
    weighted = float((doc_means * counts).sum() / counts.sum())
    se = float(ce.std(ddof=1) / math.sqrt(ce.size)) if ce.size > 1 else math.nan
    return {"ce": weighted, "ce_doc_mean": float(doc_means.mean()), "ce_se": se,
            "n_chunks": int(ce.size), "n_docs": int(len(ids))}
