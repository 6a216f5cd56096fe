"""The measurement protocol's arithmetic (chunking, truncation, weighting) against hand computations."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from ctxscale.measure import protocol, spectra
from ctxscale.measure.protocol import Protocol, aggregate, build_chunks, chunk_document, context_inputs

SMALL = Protocol(min_doc_tokens=10, drop_first=3, drop_last=2, chunk_length=4)


def test_chunking_drops_the_ends_and_the_remainder():
    # 20 tokens: drop 0..2 and 18..19, leaving 3..17 (15 tokens) = 3 chunks of 4 and 3 left over
    chunks = chunk_document(np.arange(20), SMALL)
    assert chunks.tolist() == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]


@pytest.mark.parametrize("length,expected", [(10, 0), (11, 1), (12, 1), (13, 2), (9, 0)])
def test_documents_need_more_than_min_doc_tokens_and_one_whole_chunk(length, expected):
    # length 10 is not *more* than min_doc_tokens; 11 leaves 11 - 5 = 6 tokens = one chunk
    assert len(chunk_document(np.arange(length), SMALL)) == expected


def test_build_chunks_keeps_document_order_and_owners():
    docs = [np.arange(100, 120), np.arange(5), np.arange(200, 213)]  # 3 chunks, none (too short), 2 chunks
    out = build_chunks(docs, SMALL)
    assert out.tokens[:, 0].tolist() == [103, 107, 111, 203, 207]
    assert out.doc_index.tolist() == [0, 0, 0, 1, 1]
    assert (out.n_chunks, out.n_docs, out.n_docs_seen) == (5, 2, 3)


def test_max_chunks_cuts_the_last_document_short():
    docs = [np.arange(100, 120), np.arange(200, 213), np.arange(300, 320)]
    out = build_chunks(docs, SMALL, max_chunks=4)
    assert out.tokens[:, 0].tolist() == [103, 107, 111, 203] and out.doc_index.tolist() == [0, 0, 0, 1]
    assert out.n_docs_seen == 2  # the third document is never read


def test_context_inputs_keep_the_last_l_tokens_and_score_the_final_one():
    chunks = np.array([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
    x, y = context_inputs(chunks, 3)
    assert x.tolist() == [[12, 13], [22, 23]] and y.tolist() == [14, 24]
    x, y = context_inputs(chunks, 5)  # the whole chunk: four tokens read, the fifth scored
    assert x.tolist() == [[10, 11, 12, 13], [20, 21, 22, 23]] and y.tolist() == [14, 24]
    for bad in (1, 6):
        with pytest.raises(ValueError, match="context_length"):
            context_inputs(chunks, bad)


def test_weighting_per_document_then_by_chunk_count():
    # document 0: chunks 1, 2, 6 (mean 3); document 1: chunk 7 (mean 7); document 2: chunks 2, 4 (mean 3)
    ce = [1.0, 2.0, 6.0, 7.0, 2.0, 4.0]
    docs = [0, 0, 0, 1, 2, 2]
    out = aggregate(ce, docs)
    assert out["ce"] == pytest.approx((3 * 3 + 7 * 1 + 3 * 2) / 6)  # = 22 / 6
    assert out["ce_doc_mean"] == pytest.approx((3 + 7 + 3) / 3)
    assert out["ce"] == pytest.approx(np.mean(ce))  # weighting by chunk count = mean over chunks
    assert out["ce_se"] == pytest.approx(np.std(ce, ddof=1) / np.sqrt(6))
    assert (out["n_chunks"], out["n_docs"]) == (6, 3)


def test_the_study_numbers_on_a_long_document():
    doc = np.arange(10_000)
    chunks = chunk_document(doc, Protocol())  # 3,000 / 100 / 50 / 2,048
    assert chunks.shape == ((10_000 - 150) // 2048, 2048) and chunks[0, 0] == 100
    assert chunk_document(np.arange(3000), Protocol()).shape == (0, 2048)


@pytest.mark.parametrize("module", [protocol, spectra], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
