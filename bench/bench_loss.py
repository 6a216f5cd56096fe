"""The output layer and its cross-entropy alone, forward and backward, in GPU ns a token.

The GPT step's loss block (`lm_head` product, log-softmax, gradients of the hidden states and of
the weight) timed on its own, for three implementations:
- plain: `F.cross_entropy((h @ W.T).float(), y)` under bf16 autocast, through torch.compile (the
  model's path with `training.loss_chunk_rows: 0`);
- chunked: `ctxscale.models.loss.linear_cross_entropy` through torch.compile (the model's path
  with `training.loss_chunk_rows`);
- liger: Liger Kernel's fused linear cross-entropy, where `liger_kernel` is installed. Its
  Triton kernel takes a row's log-sum-exp and writes its gradient in one program, as inductor's
  kernel for the chunked loss does; the two differ in tiling and in how often the second pass over
  a row finds it in L2.

Each is timed with CUDA events over --iters forward + backward passes after --warmup, at every
--widths (768: the study's model; 256: sweeps/gpt2-gpu.yaml's). The products alone (the three
matmuls the block needs, in bf16) are timed too, so what is left is the loss's own cost:

    python bench/bench_loss.py --rows 98304 --chunk 16384 --widths 768 256
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ctxscale.models.loss import linear_cross_entropy


def _plain(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = h @ w.t()
    return F.cross_entropy(logits.float(), y)


def _chunked(chunk: int):
    def loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return linear_cross_entropy(h, w, y, chunk)
    return loss


def _liger():
    try:
        from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction
    except ImportError:
        return None

    def loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # bf16 products as under autocast (the casts' gradients flow back to the float32 tensors),
        # the weight's gradient summed over chunks in float32 as the chunked loss does; arguments
        # by position: bias, class weights, ignore_index, z-loss scale, smoothing, reduction,
        # softcap, return_z_loss, accum_dtype
        return LigerFusedLinearCrossEntropyFunction.apply(
            h.to(torch.bfloat16), w.to(torch.bfloat16), y, None, None, -100, 0.0, 0.0, "mean", None, False,
            torch.float32)[0]
    return loss


def _products(h: torch.Tensor, w: torch.Tensor) -> None:
    """The block's three products alone: logits, their gradient times W, and times h."""
    hb, wb = h.detach().to(torch.bfloat16), w.detach().to(torch.bfloat16)
    logits = hb @ wb.t()
    logits @ wb
    logits.t() @ hb


def time_ms(step, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=98_304, help="tokens a pass (a micro-batch)")
    parser.add_argument("--chunk", type=int, default=16_384, help="rows a chunk for the chunked loss")
    parser.add_argument("--vocab", type=int, default=50_304)
    parser.add_argument("--widths", type=int, nargs="+", default=[768, 256])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_loss.py times CUDA kernels: no CUDA device here")
    variants = {"plain": torch.compile(_plain), "chunked": torch.compile(_chunked(args.chunk))}
    if (liger := _liger()) is not None:
        variants["liger"] = liger
    print(f"{torch.cuda.get_device_name()}, {args.rows} rows, vocabulary {args.vocab}; ns a token, forward + backward")
    print(f"{'width':>6} {'products':>9} " + " ".join(f"{name:>9}" for name in variants) + "   (loss beyond the products)")
    for width in args.widths:
        gen = torch.Generator(device="cuda").manual_seed(0)
        h = torch.randn(args.rows, width, device="cuda", generator=gen, requires_grad=True)
        w = (0.02 * torch.randn(args.vocab, width, device="cuda", generator=gen)).requires_grad_()
        y = torch.randint(args.vocab, (args.rows,), device="cuda", generator=gen)

        def step(loss_fn):
            def run():
                h.grad = w.grad = None
                loss_fn(h, w, y).backward()
            return run

        per_token = 1e6 / args.rows  # ms a pass -> ns a token
        products = time_ms(lambda: _products(h, w), args.iters, args.warmup) * per_token
        times = {name: time_ms(step(fn), args.iters, args.warmup) * per_token for name, fn in variants.items()}
        print(f"{width:>6} {products:>9.1f} " + " ".join(f"{t:>9.1f}" for t in times.values())
              + "   (" + ", ".join(f"{name} {t - products:.1f}" for name, t in times.items()) + ")")


if __name__ == "__main__":
    main()
