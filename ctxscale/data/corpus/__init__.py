"""Long-document text corpora: prepared once into uint16 token files, then read by memmap.

A prepared corpus is a folder::

    manifest.json    what was prepared from what, with which settings, and the checksums
    train.bin        uint16 GPT-2 tokens of the training documents, each followed by <|endoftext|>
    val.bin          the same for the validation documents
    train_docs.npy   int64 (n_docs, 2): [start, length] of each document in train.bin (the
    val_docs.npy     length counts the trailing <|endoftext|>, so the rows tile the file)

Only documents with more than ``min_doc_tokens`` tokens are kept (experiment 3 of the
reference study: > 3,000 GPT-2 tokens).  The validation documents are the ``val_fraction`` of
kept documents with the lowest sha256 of (split_seed, text), so the split depends on neither
row order nor the number of tokenizer processes, and identical texts never straddle it.
Documents keep their source order inside each split, as the study's contiguous subsets assume.

Modules: `preparation` (`prepare_corpus`, `default_local_corpus`: run once, publish the folder
whole; `corpus_folder`: the folder a spec names) and `reading` (`load_corpus`, `Corpus`: what training and measurement read). Sources of
documents live in `ctxscale.data.sources`, the tokenizer in `ctxscale.data.tokenizer`.
"""
from .preparation import corpus_folder, default_local_corpus, prepare_corpus
from .reading import FORMAT_VERSION, MANIFEST, SPLITS, TOKEN_DTYPE, Corpus, CorpusError, load_corpus

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "SPLITS",
    "TOKEN_DTYPE",
    "Corpus",
    "CorpusError",
    "corpus_folder",
    "default_local_corpus",
    "load_corpus",
    "prepare_corpus",
]
