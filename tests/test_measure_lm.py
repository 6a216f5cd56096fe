"""The measurement on tiny random transformers models: it equals a direct full-logits computation,
an untrained model scores about ln(vocabulary), and an exported ctxscale GPT is the same function."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctxscale.measure.lm import FinalTokenMeasurer, load_model, resolve_model

VOCAB = 500


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=2))
    # an untrained GPT-2 is close to uniform; scale the embeddings up so the logits have real
    # structure and a wrong position or token would show in the comparison
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def loaded(tiny_gpt2):
    return load_model(tiny_gpt2, device="cpu", dtype="float32")


def _chunks(n=11, length=40, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, length))


@pytest.mark.parametrize("context_length", [2, 7, 40])
def test_final_token_ce_equals_full_logits_computation(loaded, context_length):
    chunks = _chunks()
    window = chunks[:, -context_length:]
    ce, feats = FinalTokenMeasurer(loaded, batch_size=4).measure(window[:, :-1], window[:, -1])
    with torch.no_grad():
        # the study's way: every position's logits for the last l tokens, the one before the last predicts it
        out = loaded.model(torch.from_numpy(window), output_hidden_states=True)
        direct = F.cross_entropy(out.logits[:, -2], torch.from_numpy(window[:, -1]), reduction="none")
    assert ce == pytest.approx(direct.numpy(), abs=1e-4)
    assert feats == pytest.approx(out.hidden_states[-1][:, -2].numpy(), abs=1e-4)
    assert ce.std() > 0.1  # the comparison is not between two near-constant vectors


def test_batch_size_does_not_change_the_result(loaded):
    chunks = _chunks()
    a = FinalTokenMeasurer(loaded, batch_size=1).measure(chunks[:, :-1], chunks[:, -1])
    b = FinalTokenMeasurer(loaded, batch_tokens=10_000).measure(chunks[:, :-1], chunks[:, -1])
    assert a[0] == pytest.approx(b[0], abs=1e-5) and a[1] == pytest.approx(b[1], abs=1e-5)


def test_another_layer_reads_hidden_states(loaded):
    chunks = _chunks(n=3)
    _, feats = FinalTokenMeasurer(loaded, layer=1).measure(chunks[:, :-1], chunks[:, -1])
    with torch.no_grad():
        out = loaded.model(torch.from_numpy(chunks[:, :-1]), output_hidden_states=True)
    assert feats == pytest.approx(out.hidden_states[1][:, -1].numpy(), abs=1e-5)


def test_untrained_model_scores_about_log_vocabulary():
    # 'random:gpt2-tiny' is what sweeps/measure-local.yaml measures; created in the (test) cache
    model = load_model("random:gpt2-tiny", device="cpu")
    assert model.vocab_size == 50257 and model.max_positions == 2048
    assert resolve_model("random:gpt2-tiny") == model.path  # created once, then reused
    chunks = np.random.default_rng(0).integers(0, 50257, size=(64, 33))
    ce, feats = FinalTokenMeasurer(model).measure(chunks[:, :-1], chunks[:, -1])
    assert ce.mean() == pytest.approx(math.log(50257), abs=0.1)
    assert feats.shape == (64, 64)


def test_unknown_random_preset_is_named():
    with pytest.raises(ValueError, match="unknown random preset"):
        resolve_model("random:nope")


def test_exported_ctxscale_gpt_is_the_same_function(tmp_path):
    gpt = pytest.importorskip("ctxscale.models.gpt")
    from transformers import AutoModelForCausalLM

    from ctxscale.measure.export import export_gpt

    for bias in (False, True):
        torch.manual_seed(0)
        config = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=320, bias=bias, rope_base=500.0)
        model = gpt.GPT(gpt.GPTConfig(**config)).eval()
        with torch.no_grad():  # make norms and biases non-trivial so a dropped one would show
            for name, p in model.named_parameters():
                if "ln" in name or name.endswith("bias"):
                    p.add_(0.1 * torch.randn_like(p))
        checkpoint = tmp_path / f"ckpt-{bias}"
        checkpoint.mkdir()
        torch.save({"model": model.state_dict(), "metrics": {"val_loss": 1.0}}, checkpoint / "state.pt")
        out = export_gpt(checkpoint, tmp_path / f"hf-{bias}", n_head=4, rope_base=500.0)
        hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        x = torch.randint(0, 320, (3, 50))
        with torch.no_grad():
            assert torch.allclose(model(x)[0], hf(x).logits, atol=1e-4)


def test_a_gguf_model_and_its_tokenizer_are_read_from_the_file():
    import torch

    from ctxscale.measure.lm import LoadedModel

    gguf = LoadedModel("m", "/models/smol/SmolLM2-135M-Instruct.Q4_1.gguf", None, torch.device("cpu"), torch.float32,
                       0, 0, None)
    assert gguf.pretrained_source() == ("/models/smol", {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    folder = LoadedModel("m", "/models/gpt2", None, torch.device("cpu"), torch.float32, 0, 0, None)
    assert folder.pretrained_source() == ("/models/gpt2", {})
