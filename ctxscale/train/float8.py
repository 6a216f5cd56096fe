"""FP8 matmuls for GPT training (`training.precision: fp8`), through torchao's float8 training.

Every eligible `nn.Linear` becomes torchao's `Float8Linear` with tensorwise dynamic scaling: the
input, weight and output gradient are cast to float8 (e4m3 forward, e5m2 gradients) with one scale
per tensor taken from its current absolute maximum, and the products run on the FP8 tensor cores
(Hopper and Ada, compute capability 8.9 and up). Weights, AdamW state and the loss stay as under
bf16. Eligible means both dimensions divisible by 16 (a hardware requirement) and not a small layer:
torchao's own rule for tensorwise scaling, from its H100 benchmarks, skips layers with K <= 4,096
and N <= 1,024 as likely slower in float8. So in the study's 768-wide model the QKV projection,
the MLP's up-projection and the tied lm_head convert, the two output projections stay in bf16.
With `training.loss_chunk_rows` the lm_head runs inside the chunked loss instead, in bf16.

Measured on one H200 (bench/bench_gpt.py, bench/precision_curves.py; docs/benchmarks.md): on the
study's model at 491,520 tokens a step, 1-3 % more tokens/s than bf16 (T = 1,024: 879 k against
857 k; 4,096: 731 k against 723 k), and a training loss 0.072 nats above bf16's from the same seed
over steps 155-300, at every one of them, where a second bf16 seed moved it -0.001 on average. So it is
off by default, and a choice for larger models, whose matmuls have more to gain.
"""
from __future__ import annotations

import torch
import torch.nn as nn

MIN_CAPABILITY = (8, 9)


def pays_in_float8(module: nn.Module) -> bool:
    """Whether a layer converts: an nn.Linear with both sizes multiples of 16, not a small one."""
    if not isinstance(module, nn.Linear):
        return False
    out_features, in_features = module.weight.shape
    if in_features % 16 or out_features % 16:
        return False
    return not (in_features <= 4096 and out_features <= 1024)


def check_float8(device: torch.device) -> None:
    """Raise a clear error where FP8 training cannot run: no CUDA GPU, one older than Ada/Hopper,
    or torchao missing."""
    if device.type != "cuda":
        raise ValueError(f"training.precision=fp8 needs a CUDA GPU (this trial runs on {device.type}); "
                         "use bf16 or fp32")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise ValueError(f"training.precision=fp8 needs FP8 tensor cores (compute capability 8.9 or more: "
                         f"H100, H200, L4, RTX 40xx); this GPU has {capability[0]}.{capability[1]}")
    try:
        import torchao.float8  # noqa: F401
    except ImportError as e:
        raise ValueError("training.precision=fp8 needs torchao: pip install 'ctxscale[fp8]'") from e


def to_float8(model: nn.Module) -> list[str]:
    """Swap the model's eligible Linear layers for torchao's Float8Linear in place (tied weights stay
    tied: the new layer holds the same Parameter). Returns the converted layers' names."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    converted: list[str] = []

    def choose(module: nn.Module, name: str) -> bool:
        if pays_in_float8(module):
            converted.append(name)
            return True
        return False

    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name("tensorwise"),
                               module_filter_fn=choose)
    return converted
