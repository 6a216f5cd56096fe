"""A packed group's validation losses in one GPU kernel: every layer of the study's MLP, its
LeakyReLUs and the binary cross-entropy, for a tile of rows and one member, without writing an
activation to memory.

Why: the eager validation pass (`packed._layers` under bfloat16 autocast) writes each layer's
(M, B, 400) output, reads it back for the bias and LeakyReLU, writes it again and reads it into
the next product: about 8 KB of memory traffic per row and member, 190 GB for 12 members over
2M rows, so the pass is bound by memory, not by its products. Here each program keeps its
activations in registers and reads only the rows' bits (uint8), task and label and the member's
weights (which stay in L2), then writes one loss per row: only the products remain.

Two facts of the MLP make it fit one kernel. The control input is one-hot, so its product with
the first layer is a row of that layer's control columns: the kernel gathers (control columns +
bias)[task] instead of multiplying 50 columns of zeros. The 200-wide layer has no activation
(`linear_bottlenecks`), so the first layer's 400 outputs can be produced a slice at a time and
each slice's product with the second layer added up, never holding all 400.

Numbers: products in bfloat16 with float32 sums, as autocast's; activations and the logit rounded
to bfloat16 where autocast's kernels write them; bias and LeakyReLU applied to the float32 sum
before rounding (the eager path rounds the product first). Each loss differs from the eager pass's
by bfloat16 rounding. Only for the MLP with hidden widths [h1, h2 < h1, h3] (the study's shape),
on CUDA, in bfloat16, where Triton imports; `choose_pass` says when. `lean_member_losses` is a
middle way with library kernels (cuBLAS products, compiled epilogues).
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..models.mlp import MLP
from . import packed

try:  # Triton comes with CUDA builds of torch; a CPU-only install has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

# the layer types of the shape the kernel computes: Linear, LeakyReLU, Linear (the bottleneck,
# no activation), Linear, LeakyReLU, Linear (the logit)
_SHAPE = (nn.Linear, nn.LeakyReLU, nn.Linear, nn.Linear, nn.LeakyReLU, nn.Linear)


def choose_pass(model, device: torch.device, bf16: bool) -> str:
    """Which validation pass `_evaluate` runs on `model` (a StackedModel): 'fused' (`member_losses`),
    'lean' (`lean_member_losses`) or 'eager' (the stack layer by layer, as in training).

    By default 'fused' for the study's MLP shape in bfloat16 on a GPU with bfloat16 tensor cores
    where Triton imports, else 'eager'. CTXSCALE_EVAL_PASS=eager, lean or fused chooses (where the
    model has the shape; 'fused' on the CPU only under Triton's interpreter, TRITON_INTERPRET=1)."""
    chosen = os.environ.get("CTXSCALE_EVAL_PASS", "")
    if chosen not in ("", "eager", "lean", "fused"):
        raise ValueError(f"CTXSCALE_EVAL_PASS must be eager, lean or fused, got {chosen!r}")
    layers = list(getattr(model.template, "net", []))
    if (chosen == "eager" or not isinstance(model.template, MLP) or tuple(map(type, layers)) != _SHAPE
            or layers[1].negative_slope != layers[4].negative_slope):
        return "eager"
    if chosen == "lean":
        return "lean"
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (the tests)
    # bfloat16 tensor-core products need compute capability 8.0 (Ampere) or later
    on_gpu = device.type == "cuda" and bf16 and torch.cuda.get_device_capability(device)[0] >= 8
    kernel_runs = triton is not None and not _FAILED and model.width <= 256
    return "fused" if kernel_runs and (on_gpu or (interpreted and chosen == "fused")) else "eager"


def _prepared_weights(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The stack's weights as the kernel reads them: (M, ...) contiguous, products' operands in
    `dtype`, the first layer split into its bits columns (padded to a power of two) and a
    per-task table (control column + bias), each value rounded to `dtype` as autocast would."""
    params = dict(zip(model.names, model.stacked))
    rounded = lambda tensor: tensor.detach().to(dtype).float()  # noqa: E731 - autocast's cast of an operand
    first = params["net.0.weight"].detach() * model.input_mask  # (M, h1, width + tasks)
    bits_columns = triton.next_power_of_2(max(model.width, 16))
    bits_weight = first.new_zeros(first.shape[0], first.shape[1], bits_columns)
    bits_weight[:, :, :model.width] = first[:, :, :model.width]
    # one-hot control: its product is one column; bias added (the eager path adds both in bfloat16)
    task_table = rounded(first[:, :, model.width:]).transpose(1, 2) + rounded(params["net.0.bias"])[:, None, :]
    return {
        "w1": bits_weight.to(dtype).contiguous(),  # (M, h1, bits_columns)
        "c1": task_table.contiguous(),  # (M, tasks, h1) float32
        "w2": params["net.2.weight"].detach().to(dtype).contiguous(),  # (M, h2, h1)
        "b2": rounded(params["net.2.bias"]).contiguous(),  # (M, h2)
        "w3": params["net.3.weight"].detach().to(dtype).contiguous(),  # (M, h3, h2)
        "b3": rounded(params["net.3.bias"]).contiguous(),  # (M, h3)
        "w4": rounded(params["net.5.weight"][:, 0]).contiguous(),  # (M, h3): the logit's row
        "b4": rounded(params["net.5.bias"][:, 0]).contiguous(),  # (M,)
    }


_FAILED: list[str] = []  # the error of a kernel that failed to build or run in this process


@torch.no_grad()
def member_losses(model, bits: torch.Tensor, task_index: torch.Tensor, labels: torch.Tensor,
                  rows: torch.Tensor, signed: bool = False, dtype: torch.dtype = torch.bfloat16) -> Optional[torch.Tensor]:
    """Each member's binary cross-entropy (nats, float32) on each of `rows`: (M, len(rows)); None
    (with a warning, once, and 'eager' chosen from then on) if the kernel fails to build or run,
    so that the caller takes the eager pass instead of losing the trial.

    bits (N, >= model.width) uint8 0/1, task_index (N,), labels (N,) float32: a split's device
    tensors; `signed` feeds the bits as -1/+1. `dtype`: the products' operands (bfloat16; the
    tests run the interpreter in float32).
    """
    weights = _prepared_weights(model, dtype)
    members, hidden1, bits_columns = weights["w1"].shape
    hidden2, hidden3 = weights["w2"].shape[1], weights["w3"].shape[1]
    out = torch.empty(members, len(rows), dtype=torch.float32, device=bits.device)
    if len(rows) == 0:
        return out
    slope = model.template.net[1].negative_slope
    tile, options = INTERPRETED_CONFIG if os.environ.get("TRITON_INTERPRET") == "1" else CONFIG
    try:
        _kernel()[(triton.cdiv(len(rows), tile["ROWS"]), members)](
            bits, bits.stride(0), rows, task_index, labels, len(rows), model.width, weights["c1"].shape[1], slope,
            weights["w1"], weights["c1"], weights["w2"], weights["b2"], weights["w3"], weights["b3"],
            weights["w4"], weights["b4"], out,
            H1=hidden1, H2=hidden2, H3=hidden3, KB=bits_columns, H2P=triton.next_power_of_2(hidden2),
            SIGNED=signed, DTYPE=tl.bfloat16 if dtype == torch.bfloat16 else tl.float32, **tile, **options,
        )
    except Exception as error:  # a Triton build or launch error: Triton's exceptions share no base class
        _FAILED.append(f"{type(error).__name__}: {error}")
        warnings.warn(f"the fused validation kernel failed ({_FAILED[-1][:500]}); validating layer by layer")
        return None
    return out


# The one configuration the kernel runs with: rows per program, width of a hidden slice, and
# Triton's launch options. Not autotuned: on an H100 under MPS, four trials starting together each
# spent 11-15 s of their first validation pass trying six configurations (building each, then
# timing it on the shared GPU), against 2-3 s to build this one (`bench/first_epoch.py`). Of those
# six, this one was the fastest on a warm H100 (12 members x 2M rows: 43.6 ms a pass; the others
# 44.7-70.4 ms; `python bench/first_epoch.py --configs`).
CONFIG = ({"ROWS": 128, "SLICE": 32}, {"num_warps": 8, "num_stages": 3})
INTERPRETED_CONFIG = ({"ROWS": 16, "SLICE": 16}, {})  # Triton's CPU interpreter (the tests): small tiles


@functools.cache
def _kernel():
    """The kernel, built on first use (Triton may be absent where it is never used)."""
    return triton.jit(_mlp_bce)


def _mlp_bce(bits_ptr, bits_stride, rows_ptr, task_ptr, labels_ptr, n_rows, width, num_tasks, slope,
             w1_ptr, c1_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, b4_ptr, out_ptr,
             H1: tl.constexpr, H2: tl.constexpr, H3: tl.constexpr, KB: tl.constexpr, H2P: tl.constexpr,
             SIGNED: tl.constexpr, DTYPE: tl.constexpr, ROWS: tl.constexpr, SLICE: tl.constexpr):
    """Program (tile, member): the losses of ROWS rows under one member's weights."""
    member = tl.program_id(1)
    offsets = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    valid = offsets < n_rows
    rows = tl.load(rows_ptr + offsets, mask=valid, other=0)
    columns = tl.arange(0, KB)
    x = tl.load(bits_ptr + rows[:, None] * bits_stride + columns[None, :],
                mask=valid[:, None] & (columns[None, :] < width), other=0).to(tl.float32)
    if SIGNED:
        x = x * 2.0 - 1.0  # padding columns become -1 too; their weights are zero
    x = x.to(DTYPE)  # (ROWS, KB)
    task = tl.load(task_ptr + rows, mask=valid, other=0)
    middle = tl.arange(0, H2P)
    # the bottleneck's sum, built one slice of the first layer's outputs at a time
    acc = tl.zeros((ROWS, H2P), dtype=tl.float32)
    for start in range(0, H1, SLICE):
        units = start + tl.arange(0, SLICE)
        w1 = tl.load(w1_ptr + member * H1 * KB + units[:, None] * KB + columns[None, :],
                     mask=units[:, None] < H1, other=0.0)  # (SLICE, KB)
        hidden = tl.dot(x, tl.trans(w1))  # (ROWS, SLICE)
        hidden += tl.load(c1_ptr + (member * num_tasks + task[:, None]) * H1 + units[None, :],
                          mask=units[None, :] < H1, other=0.0)
        hidden = tl.where(hidden > 0, hidden, hidden * slope).to(DTYPE)
        w2 = tl.load(w2_ptr + member * H2 * H1 + middle[:, None] * H1 + units[None, :],
                     mask=(middle[:, None] < H2) & (units[None, :] < H1), other=0.0)  # (H2P, SLICE)
        acc += tl.dot(hidden, tl.trans(w2))
    acc += tl.load(b2_ptr + member * H2 + middle, mask=middle < H2, other=0.0)[None, :]
    bottleneck = acc.to(DTYPE)  # (ROWS, H2P)
    logit = tl.zeros((ROWS,), dtype=tl.float32)
    for start in range(0, H3, SLICE):
        units = start + tl.arange(0, SLICE)
        w3 = tl.load(w3_ptr + member * H3 * H2 + units[:, None] * H2 + middle[None, :],
                     mask=(units[:, None] < H3) & (middle[None, :] < H2), other=0.0)  # (SLICE, H2P)
        hidden = tl.dot(bottleneck, tl.trans(w3))
        hidden += tl.load(b3_ptr + member * H3 + units, mask=units < H3, other=0.0)[None, :]
        hidden = tl.where(hidden > 0, hidden, hidden * slope).to(DTYPE).to(tl.float32)
        logit += tl.sum(hidden * tl.load(w4_ptr + member * H3 + units, mask=units < H3, other=0.0)[None, :], axis=1)
    logit = (logit + tl.load(b4_ptr + member)).to(DTYPE).to(tl.float32)  # autocast writes the logit in bfloat16
    label = tl.load(labels_ptr + rows, mask=valid, other=0.0)
    # log-sum-exp safe binary cross-entropy with logits, as torch's
    loss = tl.maximum(logit, 0.0) - logit * label + tl.log(1.0 + tl.exp(-tl.abs(logit)))
    tl.store(out_ptr + member * n_rows + offsets, loss, mask=valid)


def _head_losses(x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, output_bias: torch.Tensor,
                 labels: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """The last hidden layer's bias and LeakyReLU, the logit and its BCE from the product x (M, B, h3):
    (M, B) float32. Compiled on a GPU, one kernel that reads x once (eager: four passes over it)."""
    hidden = F.leaky_relu(x + bias.to(x.dtype).unsqueeze(1), negative_slope)
    logit = (hidden.float() * weight.to(x.dtype).float().unsqueeze(1)).sum(dim=-1)
    logit = (logit + output_bias.to(x.dtype).float()[:, None]).to(x.dtype).float()  # autocast's bfloat16 logit
    return F.binary_cross_entropy_with_logits(logit, labels.expand_as(logit), reduction="none")


@functools.cache
def _compiled_head() -> Callable:
    return torch.compile(_head_losses, dynamic=True)


def _lean_weights(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The first layer's bits columns, a per-task table (control column + bias) and the bottleneck's
    two layers composed into one (no activation between them: W3 (W2 h + b2) + b3)."""
    params = {name: param.detach() for name, param in zip(model.names, model.stacked)}
    first = params["net.0.weight"] * model.input_mask  # (M, h1, width + tasks)
    return {
        "w1": first[:, :, :model.width].to(dtype),  # (M, h1, width)
        "table": first[:, :, model.width:].transpose(1, 2) + params["net.0.bias"][:, None, :],  # (M, tasks, h1)
        "w23": torch.bmm(params["net.3.weight"], params["net.2.weight"]).to(dtype),  # (M, h3, h1)
        "b23": torch.bmm(params["net.3.weight"], params["net.2.bias"][:, :, None])[..., 0] + params["net.3.bias"],
        "w4": params["net.5.weight"][:, 0], "b4": params["net.5.bias"][:, 0],  # the logit's row
    }


@torch.no_grad()
def lean_member_losses(model, bits: torch.Tensor, task_index: torch.Tensor, labels: torch.Tensor,
                       rows: torch.Tensor, signed: bool, chunk: int, dtype: torch.dtype) -> torch.Tensor:
    """`member_losses` with library kernels: rows taken task by task, so the one-hot control is the
    bias of that task's first layer (no 50 zero columns in the product); the 200-wide bottleneck and
    its neighbour one 400 x 400 product; the last layer's epilogue, logit and BCE one compiled kernel.
    On a GPU about 5 KB of activations per row and member cross memory, against 8 KB layer by layer."""
    weights = _lean_weights(model, dtype)
    slope = model.template.net[1].negative_slope
    gpu = bits.is_cuda
    bias_leaky_relu = packed._fused_bias_leaky_relu() if gpu else packed._bias_leaky_relu
    head = _compiled_head() if gpu else _head_losses
    tasks = task_index[rows]
    order = torch.argsort(tasks, stable=True)
    out = torch.empty(len(model.context_lengths), len(rows), dtype=torch.float32, device=bits.device)
    start = 0
    for task, count in enumerate(torch.bincount(tasks, minlength=weights["table"].shape[1]).tolist()):
        for first in range(start, start + count, chunk):
            positions = order[first:min(first + chunk, start + count)]
            chunk_rows = rows[positions]
            x = bits[chunk_rows, :model.width].to(dtype)
            if signed:
                x = x * 2 - 1
            x = torch.bmm(x.expand(len(weights["w1"]), *x.shape), weights["w1"].transpose(1, 2))
            x = bias_leaky_relu(x, weights["table"][:, task], slope)
            x = torch.bmm(x, weights["w23"].transpose(1, 2))
            out[:, positions] = head(x, weights["b23"], weights["w4"], weights["b4"], labels[chunk_rows], slope)
        start += count
    return out
