"""Reading a prepared corpus: `load_corpus` checks a folder against its manifest and opens its
token files as memmaps; `Corpus.training_subset` cuts the study's data sizes from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from ctxscale.errors import UserError

FORMAT_VERSION = 1
TOKEN_DTYPE = np.uint16
SPLITS = ("train", "val")
MANIFEST = "manifest.json"


class CorpusError(UserError, RuntimeError):
    """A prepared corpus is missing, incomplete, corrupt, or was prepared differently."""


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """A prepared corpus opened read-only; token arrays are memmaps, nothing is loaded eagerly.

    Attributes
    ----------
    path : the corpus folder.
    manifest : the parsed ``manifest.json``.
    train_tokens, val_tokens : uint16 token arrays (memmaps).
    train_docs, val_docs : int64 arrays (n_docs, 2) of [start, length] per document.
    """

    path: Path
    manifest: dict
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    train_docs: np.ndarray
    val_docs: np.ndarray

    def training_subset(
        self,
        *,
        tokens: int | None = None,
        percent: float | None = None,
        offset_percent: float = 0.0,
    ) -> np.ndarray:
        """A contiguous view of the training tokens, as the study defines its data sizes.

        Parameters
        ----------
        tokens : take exactly this many tokens, starting at the first document of the offset.
        percent : take this percentage of the training *documents* (whole documents).
        offset_percent : skip this percentage of the training documents first.

        Exactly one of ``tokens`` and ``percent`` is given.  Document boundaries are
        ``floor(p * n_docs / 100)``, so subsets with adjacent offsets tile the corpus without
        overlap.  Raises ValueError when the subset asks for more than the corpus holds.

        Examples
        --------
        >>> corpus = load_corpus(default_local_corpus())  # doctest: +SKIP
        >>> first_tenth = corpus.training_subset(percent=10)  # doctest: +SKIP
        >>> next_tenth = corpus.training_subset(percent=10, offset_percent=10)  # doctest: +SKIP
        """
        if (tokens is None) == (percent is None):
            raise ValueError("give exactly one of tokens= and percent=")
        n_docs = len(self.train_docs)
        if not 0.0 <= offset_percent < 100.0:
            raise ValueError(f"offset_percent={offset_percent} is outside [0, 100)")
        first = _doc_boundary(offset_percent, n_docs)
        if first >= n_docs:
            raise ValueError(
                f"offset_percent={offset_percent} of the {n_docs} training documents of "
                f"{self.path} leaves no documents"
            )
        start = int(self.train_docs[first, 0])

        if percent is not None:
            if percent <= 0:
                raise ValueError(f"percent={percent} must be positive")
            if offset_percent + percent > 100.0 + 1e-9:
                raise ValueError(
                    f"percent={percent} from offset_percent={offset_percent} exceeds the "
                    f"{n_docs} training documents of {self.path} "
                    f"(offset + percent = {offset_percent + percent} > 100)"
                )
            last = min(_doc_boundary(offset_percent + percent, n_docs), n_docs)
            if last <= first:
                raise ValueError(
                    f"percent={percent} from offset_percent={offset_percent} selects no "
                    f"document of the {n_docs} training documents of {self.path}"
                )
            end = int(self.train_docs[last - 1].sum())
            return self.train_tokens[start:end]

        if tokens <= 0:
            raise ValueError(f"tokens={tokens} must be positive")
        available = len(self.train_tokens) - start
        if tokens > available:
            raise ValueError(
                f"tokens={tokens:,} from offset_percent={offset_percent} (document {first}, "
                f"token {start:,}) exceeds the {available:,} training tokens left in "
                f"{self.path} ({len(self.train_tokens):,} in all)"
            )
        return self.train_tokens[start : start + tokens]

    def sampled_subset(self, *, tokens: int, seed: int = 0) -> np.ndarray:
        """``tokens`` training tokens of whole documents taken in a random order (the last one cut).

        The study's subsets are shares of its shuffled long documents; this is that sample sized
        in tokens. One seed gives one document order, so a smaller subset is the start of a larger
        one, and every subset is a sample of the whole split rather than of its first sources.
        Returns an in-memory copy (the documents are not contiguous in ``train.bin``).
        """
        if tokens <= 0:
            raise ValueError(f"tokens={tokens} must be positive")
        if tokens > len(self.train_tokens):
            raise ValueError(
                f"tokens={tokens:,} exceeds the {len(self.train_tokens):,} training tokens of {self.path}"
            )
        order = np.random.default_rng(seed).permutation(len(self.train_docs))
        ends = np.cumsum(self.train_docs[order, 1])
        taken = int(np.searchsorted(ends, tokens)) + 1  # documents up to the one that reaches the budget
        pieces = [self.train_tokens[start:start + length] for start, length in self.train_docs[order[:taken]]]
        return np.concatenate(pieces)[:tokens]

    def documents(self, split: str) -> np.ndarray:
        """[start, length] rows of the documents of ``split`` ("train" or "val")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train_docs if split == "train" else self.val_docs

    def tokens(self, split: str) -> np.ndarray:
        """The token memmap of ``split`` ("train" or "val")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.train_tokens if split == "train" else self.val_tokens



def load_corpus(path: str | os.PathLike, *, verify: bool = False) -> Corpus:
    """Open a prepared corpus after checking it against its manifest.

    File presence, sizes and the document tables are always checked; ``verify=True`` also
    recomputes the sha256 of the token files (reads them whole).  Raises
    :class:`CorpusError` naming the offending file.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        meta = manifest["splits"][split]
        bin_path = path / meta["file"]
        docs_path = path / meta["docs_file"]
        n_tokens = int(meta["tokens"])
        if not bin_path.is_file():
            raise CorpusError(f"{bin_path} is missing (corpus {path} is incomplete)")
        size = bin_path.stat().st_size
        if size != n_tokens * np.dtype(TOKEN_DTYPE).itemsize:
            raise CorpusError(
                f"{bin_path} has {size:,} bytes, the manifest expects "
                f"{n_tokens * np.dtype(TOKEN_DTYPE).itemsize:,} ({n_tokens:,} uint16 tokens); "
                "the file is truncated or from another preparation"
            )
        if verify and _file_sha256(bin_path) != meta["sha256"]:
            raise CorpusError(f"{bin_path} does not match the sha256 in {path / MANIFEST}")
        docs = _load_docs(docs_path, int(meta["documents"]), n_tokens)
        arrays[f"{split}_docs"] = docs
        # np.memmap refuses empty files, and an empty validation split is legitimate.
        arrays[f"{split}_tokens"] = (
            np.memmap(bin_path, dtype=TOKEN_DTYPE, mode="r")
            if n_tokens
            else np.zeros(0, dtype=TOKEN_DTYPE)
        )
    return Corpus(path=path, manifest=manifest, **arrays)



def _read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    if not path.is_dir():
        raise CorpusError(f"corpus folder {path} does not exist (prepare it with prepare_corpus)")
    if not file.is_file():
        raise CorpusError(f"{file} is missing: {path} is not a prepared corpus")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{file} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise CorpusError(
            f"{file} has format_version {found!r}; this ctxscale reads {FORMAT_VERSION}"
        )
    try:
        for split in SPLITS:
            meta = manifest["splits"][split]
            for field in ("file", "docs_file", "tokens", "documents", "sha256"):
                meta[field]
    except (KeyError, TypeError) as exc:
        raise CorpusError(f"{file} lacks the entry {exc} of a corpus manifest") from exc
    return manifest


def _load_docs(docs_path: Path, n_docs: int, n_tokens: int) -> np.ndarray:
    if not docs_path.is_file():
        raise CorpusError(f"{docs_path} is missing")
    try:
        docs = np.load(docs_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{docs_path} is not a readable .npy file: {exc}") from exc
    if docs.dtype != np.int64 or docs.shape != (n_docs, 2):
        raise CorpusError(
            f"{docs_path} holds {docs.dtype} {docs.shape}, the manifest expects int64 ({n_docs}, 2)"
        )
    ends = docs[:, 0] + docs[:, 1]
    if n_docs and (docs[0, 0] != 0 or np.any(docs[1:, 0] != ends[:-1]) or ends[-1] != n_tokens):
        raise CorpusError(f"{docs_path}: document spans do not tile the {n_tokens:,} tokens")
    return docs


def _doc_boundary(percent: float, n_docs: int) -> int:
    # The epsilon keeps e.g. 0.1 % of 1000 documents at 1, not 0.9999999.
    return math.floor(percent * n_docs / 100.0 + 1e-9)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
