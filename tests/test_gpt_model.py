import math

import numpy as np
import pytest
import torch

from ctxscale.models.gpt import GPT, GPTConfig, apply_rope, rope_angles
from ctxscale.spec.gpt import PRESETS

TINY = GPTConfig(**PRESETS["tiny"], vocab_size=256)


def reference_rope(x: np.ndarray, base: float) -> np.ndarray:
    """Independent RoPE in float64 numpy: each pair (x[i], x[i + D/2]) is one complex number,
    multiplied by e^{i * pos * base^(-2i/D)}, one position at a time."""
    B, T, H, D = x.shape
    half = D // 2
    out = np.empty_like(x, dtype=np.float64)
    for pos in range(T):
        for i in range(half):
            theta = pos / base ** (2 * i / D)
            rot = complex(math.cos(theta), math.sin(theta))
            z = (x[:, pos, :, i] + 1j * x[:, pos, :, i + half]) * rot
            out[:, pos, :, i], out[:, pos, :, i + half] = z.real, z.imag
    return out


def test_rope_matches_independent_complex_rotation():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, 8, dtype=torch.float64)
    cos, sin = rope_angles(9, 8, base=100.0)
    got = apply_rope(x, cos, sin).numpy()
    np.testing.assert_allclose(got, reference_rope(x.numpy(), 100.0), rtol=1e-5, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rope_angles(40, 16, base=10000.0)

    def score(m, n):
        qm = apply_rope(q.expand(1, 40, 1, 16).contiguous(), cos, sin)[0, m, 0]
        kn = apply_rope(k.expand(1, 40, 1, 16).contiguous(), cos, sin)[0, n, 0]
        return float(qm @ kn)

    assert score(5, 2) == pytest.approx(score(33, 30), rel=1e-4, abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q.flatten() @ k.flatten()), rel=1e-5)  # position 0: identity
    assert score(7, 2) != pytest.approx(score(7, 6), rel=1e-3)


def test_forward_shapes_and_loss_at_init_is_log_vocab():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 256, (4, 32)), torch.randint(0, 256, (4, 32))
    logits, loss = model(idx, targets)
    assert logits is None  # training: the loss only
    assert loss.shape == ()
    # small init: near-uniform predictions over the vocabulary
    assert loss.item() == pytest.approx(math.log(256), abs=0.1)
    logits, no_loss = model(idx)
    assert logits.shape == (4, 32, 256) and no_loss is None
    with torch.no_grad():  # evaluation: logits and the same loss
        logits, eval_loss = model(idx, targets)
    assert logits.shape == (4, 32, 256)
    torch.testing.assert_close(eval_loss, loss.detach())


def _filled_shapes(step) -> list[list[int]]:
    """The shapes of the tensors that zero- or value-filling ops touch in one call of `step`,
    after a first call that compiles it."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return [list(e.input_shapes[0]) for e in prof.events()
            if e.name in ("aten::zero_", "aten::fill_", "aten::zeros", "aten::zeros_like") and e.input_shapes]


def test_compiled_training_step_fills_no_logit_sized_gradient():
    """A compiled forward that returned the logits beside the loss had autograd zero-fill a
    (B, T, V) gradient for them in every backward pass (a 1.6 GB write and read a step on the
    GPU sweep's model). The plain-loss training step fills no (B, T, V) buffer."""
    torch.manual_seed(0)
    idx, targets = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    # the probe sees the pattern: a compiled function whose first output goes unused
    weight = torch.randn(64, 256, requires_grad=True)
    both = torch.compile(lambda h: (h @ weight, (h @ weight).logsumexp(-1).mean()), dynamic=False)
    try:
        assert [2, 16, 256] in _filled_shapes(lambda: both(torch.randn(2, 16, 64))[1].backward())
    except Exception as err:  # torch.compile's CPU kernels are C++, built on the spot
        if "C++ compiler" in str(err):
            pytest.skip(f"torch.compile cannot build CPU kernels on this machine: {str(err).splitlines()[0]}")
        raise

    net = torch.compile(GPT(TINY), dynamic=False)
    filled = _filled_shapes(lambda: net(idx, targets)[1].backward())
    assert [2, 16, 256] not in filled, filled


def test_model_is_causal():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 256, (2, 24))
    changed = idx.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 256
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert (a[:, 15:] - b[:, 15:]).abs().amax() > 1e-4


def test_any_context_length_runs_with_the_same_weights():
    # no learned position table: weights trained at one T load into a model for another T
    short = GPT(GPTConfig(**PRESETS["tiny"], vocab_size=256, max_seq_len=8)).eval()
    long = GPT(GPTConfig(**PRESETS["tiny"], vocab_size=256, max_seq_len=100)).eval()
    long.load_state_dict(short.state_dict())
    idx = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(short(idx)[0], long(idx)[0])
        assert long(torch.zeros(1, 100, dtype=torch.long))[0].shape == (1, 100, 256)
    with pytest.raises(ValueError, match="max_seq_len"):
        short(torch.zeros(1, 9, dtype=torch.long))


def test_tied_embedding_and_parameter_counts():
    with torch.device("meta"):  # shapes only: no 81 M-parameter init on the CPU
        model = GPT(GPTConfig(**PRESETS["study"]))
    assert model.lm_head.weight is model.wte.weight
    emb = 50304 * 768
    assert model.num_params(non_embedding=False) == 81_110_784
    assert model.num_params() == 81_110_784 - emb
    # gpu.md anchors: ~0.54, 0.71 and 1.39 GFLOP per token
    for T, gflop in ((1024, 0.543), (4096, 0.713), (16384, 1.393)):
        assert model.flops_per_token(T) / 1e9 == pytest.approx(gflop, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, message", [(dict(n_embd=100, n_head=3), "divisible"), (dict(n_embd=12, n_head=4), "even"),
                        (dict(n_embd=32, n_head=2, rope_fraction=0.3), "even whole number"),  # 4.8 channels
                        (dict(n_embd=32, n_head=2, rope_fraction=0.0), "rope_fraction")]
)
def test_config_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(n_layer=1, **kwargs)


def test_partial_rope_rotates_the_first_channels_and_leaves_the_rest():
    # the study's fork: half of each head rotated (rotary dim = head_dim / 2), frequencies over that half
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, 16, dtype=torch.float64)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, rope_fraction=0.5, rope_base=100.0)
    assert config.rotary_dim == 8
    cos, sin = rope_angles(9, config.rotary_dim, base=100.0)
    got = apply_rope(x, cos, sin).numpy()
    np.testing.assert_allclose(got[..., :8], reference_rope(x[..., :8].numpy(), 100.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[..., 8:], x[..., 8:].numpy())  # position-free channels


def test_rope_fraction_one_is_the_default_model_and_half_differs():
    torch.manual_seed(0)
    idx = torch.randint(0, 256, (2, 24))
    models = {}
    for fraction in (None, 1.0, 0.5):
        torch.manual_seed(1)
        kwargs = {} if fraction is None else {"rope_fraction": fraction}
        models[fraction] = GPT(GPTConfig(**PRESETS["tiny"], vocab_size=256, **kwargs)).eval()
    with torch.no_grad():
        default, full, half = (models[f](idx)[0] for f in (None, 1.0, 0.5))
    torch.testing.assert_close(default, full, rtol=0, atol=0)
    assert (half - full).abs().amax() > 1e-5  # same weights, other positions: another function
    assert models[0.5].rope_cos.shape == (16384, 8)  # tiny: head_dim 32, 16 rotated, 8 frequencies


def test_partial_rope_model_exports_as_gpt_neox_rotary_pct(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ctxscale.measure.export import export_gpt

    torch.manual_seed(0)
    config = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=320, rope_base=500.0, rope_fraction=0.5)
    model = GPT(GPTConfig(**config)).eval()
    torch.save({"model": model.state_dict(), "model_config": config}, tmp_path / "state.pt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_gpt(tmp_path, tmp_path / "hf"), dtype=torch.float32)
    x = torch.randint(0, 320, (3, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf.eval()(x).logits, atol=1e-4, rtol=1e-4)


# --- chunked linear + cross-entropy (GPTConfig.loss_chunk_rows) -----------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 16, 17, 48, 100])  # 17: a tail chunk of 14 rows; 100: one chunk
def test_chunked_loss_and_gradients_equal_cross_entropy(chunk_rows):
    from ctxscale.models.loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(48, 32, generator=gen, requires_grad=True)
    weight = (0.3 * torch.randn(80, 32, generator=gen)).requires_grad_()
    targets = torch.randint(0, 80, (48,), generator=gen)
    grads = []
    for loss_fn in (lambda: torch.nn.functional.cross_entropy(hidden @ weight.t(), targets),
                    lambda: linear_cross_entropy(hidden, weight, targets, chunk_rows)):
        loss = loss_fn()
        (0.25 * loss).backward()  # a scaled loss, as under gradient accumulation
        grads.append((loss.detach(), hidden.grad, weight.grad))
        hidden.grad = weight.grad = None
    for plain, chunked in zip(*grads):
        torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-7)


def test_chunked_loss_in_the_tied_model_gives_the_plain_gradients():
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**PRESETS["tiny"], vocab_size=96, max_seq_len=16))
    chunked = GPT(GPTConfig(**PRESETS["tiny"], vocab_size=96, max_seq_len=16, loss_chunk_rows=20))
    chunked.load_state_dict(plain.state_dict())
    assert chunked.lm_head.weight is chunked.wte.weight
    x, y = torch.randint(0, 96, (3, 16)), torch.randint(0, 96, (3, 16))  # 48 rows: chunks of 20, 20, 8
    logits, loss = chunked(x, y)
    assert logits is None  # training: no (B, T, V) logits
    loss.backward()
    plain_loss = plain(x, y)[1]
    plain_loss.backward()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    grads = dict(chunked.named_parameters())
    for name, p in plain.named_parameters():  # wte.weight: its embedding and lm_head gradients summed
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():  # evaluation takes the plain path: logits and the same loss
        logits, eval_loss = chunked(x, y)
    assert logits.shape == (3, 16, 96)
    torch.testing.assert_close(eval_loss, plain_loss.detach())
