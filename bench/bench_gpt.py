"""Throughput and MFU of the GPT-2 loop's train step on one GPU.

Times optimizer steps of `ctxscale.train.gpt.setup_gpt`, the object a GPT trial trains with (bf16
autocast, fused AdamW, grad clip, `plan_batches` micro-batch x accumulation, batches cut from a
uint16 token array, pinned and copied non-blocking, torch.compile and then DDP when there are
several ranks), on the study's 6-layer, 12-head, 768-wide GPT-2 with RoPE, at the study's 491,520
tokens per optimizer step: each variant is a GPT spec with the study's training settings. MFU follows
the PaLM paper's appendix B (arXiv 2204.02311), as nanoGPT's `estimate_mfu`: (6 N + 12 L H Q T)
FLOPs per token against 989 TFLOP/s (H200 dense bf16, NVIDIA's datasheet).

Each variant is "context_length:attention:micro_batch_tokens[:loss_chunk_rows[:precision]]"; attention is an
SDPA kernel ("flash", "cudnn", "efficient") or "auto" (PyTorch's choice, flash first);
loss_chunk_rows is `training.loss_chunk_rows` (0, the default: the plain float32 cross-entropy
over the whole micro-batch's logits; N: lm_head + cross-entropy N tokens at a time,
ctxscale/models/loss.py), so one run compares the two losses; precision is `training.precision`
(bf16, the default, or fp8: torchao's float8 products, ctxscale/train/float8.py). Every variant
compiles afresh, runs `--warmup` steps, then `--steps` timed steps with one device sync at the
end (as the loop, which syncs only at evaluations). Rows go to stdout and, as JSON lines, to --out.

Results on one NVIDIA H200 (torch 2.11.0+cu130, 2026-11-29), from the repository root:

    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python bench/bench_gpt.py --out bench_gpt.jsonl --budget-s 240

         T   attn  mb_tok micro accum tok/step  step_s     tok/s TFLOP/s    MFU mem_GiB
      1024  flash   32768    32    15   491520   0.629    781516   424.6  42.9%    16.4
      4096  flash   32768     8    15   491520   0.797    616681   439.8  44.5%    16.4
     16384  flash   32768     2    15   491520   1.456    337513   470.0  47.5%    16.4
      1024  cudnn   32768    32    15   491520   0.605    812574   441.5  44.6%    16.4
      4096  cudnn   32768     8    15   491520   0.721    681363   485.9  49.1%    16.4
     16384  cudnn   32768     2    15   491520   1.154    425811   593.0  60.0%    16.4

(4 timed steps after 2 warm-up steps, one run.) The study's fork on the same H200, bf16 +
compile: 707,000 tokens/s (38.6 %) at 1,024 and 609,000 (43.8 %) at 4,096. Its step is timed by
bench/bench_fork.py; on one H200 on 2026-12-06, in one call with this script: fork 713,733 and
612,276 tokens/s at 1,024 and 4,096, this loop 857,151 and 723,067 (`--variants
1024:cudnn:98304:16384 4096:cudnn:98304:16384`), 1.20x and 1.18x. With cuDNN
attention (`training.attention: cudnn`, as sweeps/gpt2-owt.yaml sets) this loop gives 44.6 %
at 1,024 (target 45 %: missed by 0.4 points), 49.1 % at 4,096 (target 48 %) and 60.0 % at
16,384, at exactly 491,520 tokens per step with 16.4 GiB peak memory. A micro-batch of 65,536
tokens was no faster than 32,768 at 1,024 (34.9 % vs 34.9 % before the RoPE fix below).

Findings: (1) computing the RoPE cos/sin inside forward let inductor fuse pow/cos/sin into
the rotation kernels, recomputing them for every row and head: 22 % of the step at 1,024
(profile with --profile); tables computed once raised 1,024 from 34.9 % to 42.9 % (flash).
(2) Inductor's compile caches did not tell the flash and cuDNN graphs apart (identical step
times with caches on, cuDNN served from the flash entry), hence TORCHINDUCTOR_FORCE_DISABLE_CACHES
above when comparing kernels. (3) Besides the matmuls (620-690 TFLOP/s on these shapes alone),
the profile at 1,024 (before the RoPE fix, shares of the step) shows the float32 log-softmax
over the 50,304-way logits (9 %), flash attention (12 %), then GELU and LayerNorm kernels: a
fused linear + cross-entropy would be the next thing to try for the last points at 1,024.
`training.loss_chunk_rows` is that (ctxscale/models/loss.py); the plain and chunked losses in one
run, e.g. `--variants 1024:cudnn:32768:0 1024:cudnn:32768:8192 4096:cudnn:32768:0 4096:cudnn:32768:8192`.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ctxscale.spec.gpt import PRESETS
from ctxscale.spec.gpt import GPTSpec
from ctxscale.train.distributed import rank_and_world
from ctxscale.train.gpt import setup_gpt

H200_BF16_PEAK = 989e12
DEFAULT_VARIANTS = [
    "1024:flash:32768", "4096:flash:32768", "16384:flash:32768",
    "1024:cudnn:32768", "4096:cudnn:32768", "16384:cudnn:32768",
]


def variant_spec(context_length: int, attention: str, micro_batch_tokens: int, *, tokens_per_step: int,
                 compile: bool, preset: str, device: str, data_size: int, world: int,
                 shape: tuple[int, int, int] | None = None, loss_chunk_rows: int = 0,
                 precision: str = "bf16") -> GPTSpec:
    """The GPT spec a sweep would run this variant with (everything else at the spec's defaults);
    `shape` (n_layer, n_head, n_embd) replaces the preset."""
    model = {"preset": preset} if shape is None else dict(zip(("n_layer", "n_head", "n_embd"), shape), preset=None)
    return GPTSpec.model_validate({
        "name": "bench", "experiment": "gpt",
        "grid": {"context_length": [context_length], "data_size": [data_size]},
        "model": model,
        "training": {"tokens_per_step": tokens_per_step, "micro_batch_tokens": micro_batch_tokens,
                     "compile": compile, "attention": attention, "precision": precision, "device": device,
                     "loss_chunk_rows": loss_chunk_rows},
        "resources": {"num_workers": world if world > 1 else 0},
    })


def bench_variant(context_length: int, attention: str, micro_batch_tokens: int, *, tokens: np.ndarray,
                  tokens_per_step: int, steps: int, warmup: int, compile: bool, peak: float,
                  preset: str = "study", device: str = "cuda", profile_to: str | None = None,
                  shape: tuple[int, int, int] | None = None, loss_chunk_rows: int = 0,
                  precision: str = "bf16") -> dict:
    cuda = device == "cuda"
    torch._dynamo.reset()  # each variant compiles its own graphs (another T or kernel choice)
    world = rank_and_world()[1]
    spec = variant_spec(context_length, attention, micro_batch_tokens, tokens_per_step=tokens_per_step,
                        compile=compile, preset=preset, device=device, data_size=len(tokens), world=world,
                        shape=shape, loss_chunk_rows=loss_chunk_rows, precision=precision)
    # validation windows are never cut here: the training tokens stand in for them
    run = setup_gpt(spec, context_length, 0, tokens, tokens)
    lr = spec.training.lr  # the step's time does not depend on the schedule
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)

    start = time.perf_counter()
    for _ in range(warmup):  # compiles, autotunes, fills the allocator's cache
        loss = run.step(lr)
    first_loss = loss.item()
    warmup_s = time.perf_counter() - start

    start = time.perf_counter()
    for _ in range(steps):
        loss = run.step(lr)
    last_loss = loss.item()  # the only sync: the loop does not wait for the GPU between steps
    step_s = (time.perf_counter() - start) / steps

    if profile_to:  # one more step under the profiler: where the GPU time goes
        activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[activity]) as prof:
            run.step(lr).item()
        table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=40, max_name_column_width=90)
        label = f"{context_length}:{attention}:{micro_batch_tokens}:{loss_chunk_rows}:{precision}"
        with open(profile_to, "a") as f:
            f.write(f"== {label}\n{table}\n")
        with open(profile_to + ".jsonl", "a") as f:  # every kernel, for sums by kind (the table keeps 40)
            for event in prof.key_averages():
                gpu_us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
                if gpu_us:
                    f.write(json.dumps({"variant": label, "name": event.key, "calls": event.count, "gpu_us": gpu_us}) + "\n")

    plan = run.plan
    tokens_per_s = plan.tokens_per_step / step_s  # global: all ranks together
    flops = run.model.flops_per_token(context_length)
    row = {
        "context_length": context_length, "attention": attention, "micro_batch_tokens": micro_batch_tokens,
        "loss_chunk_rows": loss_chunk_rows, "precision": precision,
        "micro_batch": plan.micro_batch, "accumulation": plan.accumulation, "tokens_per_step": plan.tokens_per_step,
        "step_s": step_s, "tokens_per_s": tokens_per_s, "tflops": tokens_per_s * flops / 1e12,
        "mfu": tokens_per_s * flops / (peak * world),
        "peak_mem_gib": torch.cuda.max_memory_allocated(run.device) / 2**30 if cuda else float("nan"),
        "warmup_s": warmup_s, "loss_first": first_loss, "loss_last": last_loss, "compile": compile,
        "world_size": world, "tokens_per_s_per_gpu": tokens_per_s / world,
    }
    del run
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="context:attention:micro_batch_tokens[:loss_chunk_rows[:precision]]")
    parser.add_argument("--tokens-per-step", type=int, default=491_520)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak-flops", type=float, default=H200_BF16_PEAK)
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no variant after this")
    parser.add_argument("--out", default=None, help="JSON-lines file for the rows")
    parser.add_argument("--coordinate-descent", action="store_true", help="inductor's coordinate-descent kernel tuning")
    parser.add_argument("--profile", default=None, help="append a per-kernel GPU time table per variant here, and every kernel's time to PROFILE.jsonl")
    parser.add_argument("--preset", default="study", choices=sorted(PRESETS), help="model size (tiny: smoke test)")
    parser.add_argument("--shape", default=None, help="n_layer:n_head:n_embd instead of --preset")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke test of this script")
    args = parser.parse_args()

    if args.coordinate_descent:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
    if args.device == "cuda":
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
              f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB", flush=True)
    tokens = np.random.default_rng(0).integers(0, 50257, size=64 * 2**20, dtype=np.uint16)  # 64 M tokens
    began, rows = time.perf_counter(), []
    header = f"{'T':>6} {'attn':>6} {'mb_tok':>7} {'chunk':>6} {'prec':>4} {'micro':>5} {'accum':>5} {'tok/step':>8} {'step_s':>7} " \
             f"{'tok/s':>9} {'TFLOP/s':>7} {'MFU':>6} {'mem_GiB':>7} {'warm_s':>6}"
    for variant in args.variants:
        if time.perf_counter() - began > args.budget_s:
            print(f"budget spent: skipping {variant}", flush=True)
            continue
        T, attention, mb, *rest = variant.split(":")
        try:
            row = bench_variant(int(T), attention, int(mb), loss_chunk_rows=int(rest[0]) if rest else 0,
                                precision=rest[1] if len(rest) > 1 else "bf16", tokens=tokens,
                                tokens_per_step=args.tokens_per_step,
                                steps=args.steps, warmup=args.warmup, compile=not args.no_compile,
                                peak=args.peak_flops, preset=args.preset, device=args.device,
                                profile_to=args.profile,
                                shape=tuple(map(int, args.shape.split(":"))) if args.shape else None)
        except Exception as err:  # e.g. a kernel that does not support the shape: report, go on
            row = {"variant": variant, "error": f"{type(err).__name__}: {str(err)[:300]}"}
            if args.device == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("\n" + header)
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:>22}  error: {r['error'][:80]}")
            continue
        print(f"{r['context_length']:>6} {r['attention']:>6} {r['micro_batch_tokens']:>7} {r['loss_chunk_rows']:>6} "
              f"{r['precision']:>4} {r['micro_batch']:>5} "
              f"{r['accumulation']:>5} {r['tokens_per_step']:>8} {r['step_s']:>7.3f} {r['tokens_per_s']:>9.0f} "
              f"{r['tflops']:>7.1f} {r['mfu']:>6.1%} {r['peak_mem_gib']:>7.1f} {r['warmup_s']:>6.1f}")


if __name__ == "__main__":
    main()
