"""training.precision: fp8: which layers convert, what a CPU is told, and a real FP8 trial where the GPU has FP8."""
import numpy as np
import pytest
import torch

from ctxscale.models.gpt import GPT, GPTConfig
from ctxscale.spec import SpecError, parse_spec
from ctxscale.spec.gpt import GPTSpec
from ctxscale.train.float8 import check_float8, pays_in_float8, to_float8
from ctxscale.train.gpt import setup_gpt, train_gpt


def study_model() -> GPT:
    return GPT(GPTConfig(n_layer=2, n_head=12, n_embd=768, max_seq_len=64))


def spec(**training) -> GPTSpec:
    return GPTSpec.model_validate({
        "name": "fp8", "experiment": "gpt", "grid": {"context_length": [32], "data_size": [20_000]},
        "model": {"preset": None, "n_layer": 2, "n_head": 2, "n_embd": 64, "vocab_size": 2048},
        "training": {"tokens_per_step": 256, "micro_batch_tokens": 256, "max_steps": 20, "eval_every": 10,
                     "eval_tokens": 512, "warmup_steps": 2, **training},
    })


def test_the_large_layers_of_the_study_model_convert_and_the_small_ones_stay():
    converting = sorted(name.split(".")[-1] for name, m in study_model().named_modules() if pays_in_float8(m))
    # per block: QKV (768 -> 2304) and the MLP's up-projection (768 -> 3072); the two 768-wide
    # output projections do not pay; the tied lm_head (768 -> 50,304) does
    assert converting == ["c_attn", "c_attn", "c_fc", "c_fc", "lm_head"]
    assert not pays_in_float8(torch.nn.Linear(100, 4096))  # not a multiple of 16
    assert not pays_in_float8(torch.nn.LayerNorm(768))


def test_conversion_keeps_the_parameters_and_the_tied_embedding():
    pytest.importorskip("torchao.float8", reason="torchao is not installed (pip install 'ctxscale[fp8]')")
    model = study_model()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    converted = to_float8(model)
    assert len(converted) == 5 and "lm_head" in converted
    assert type(model.lm_head).__name__ == "Float8Linear" and type(model.blocks[0].attn.c_proj) is torch.nn.Linear
    assert model.lm_head.weight is model.wte.weight  # still one tensor: the tie holds
    after = model.state_dict()
    assert after.keys() == before.keys()  # checkpoints load either way
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_a_cpu_trial_with_fp8_is_told_what_it_needs():
    with pytest.raises(ValueError, match=r"training.precision=fp8 needs a CUDA GPU"):
        check_float8(torch.device("cpu"))
    tokens = np.random.default_rng(0).integers(0, 512, size=20_000, dtype=np.uint16)
    with pytest.raises(ValueError, match="fp8"):
        setup_gpt(spec(precision="fp8", device="cpu", compile=False), 32, 0, tokens, tokens)


def test_the_spec_names_the_precisions():
    assert spec(precision="fp8").training.precision == "fp8"
    raw = spec().model_dump(mode="json")
    raw["training"]["precision"] = "fp16"
    with pytest.raises(SpecError, match="precision"):
        parse_spec(raw)


def _has_fp8() -> bool:
    """What `check_float8` asks of the machine: a CUDA GPU with FP8, and torchao."""
    if not torch.cuda.is_available():
        return False
    try:
        check_float8(torch.device("cuda"))
    except ValueError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _has_fp8(), reason="needs a GPU with FP8 tensor cores (8.9+) and torchao")
def test_an_fp8_trial_trains_on_the_gpu():
    tokens = np.random.default_rng(0).integers(0, 512, size=20_000, dtype=np.uint16)
    run = setup_gpt(spec(precision="fp8", device="cuda", compile=False), 32, 0, tokens, tokens)
    assert type(run.model.lm_head).__name__ == "Float8Linear"  # 64 -> 2,048 converts
    assert torch.isfinite(run.step(1e-3))
    metrics = []
    last = train_gpt(spec(precision="fp8", device="cuda", compile=True), 32, 0, tokens, tokens,
                     lambda m, *a, **k: metrics.append(m))
    assert last["status"] == "ok" and np.isfinite(last["best_val_loss"])
    assert last["best_val_loss"] < metrics[0]["val_loss"] or len(metrics) == 1
