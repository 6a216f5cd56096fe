"""Benchmark: the study's way of measuring final-token CE + hidden state against ctxscale's.

Both measure the same chunks of a randomly initialised Llama-shaped model (no download) at one
context length and report tokens per second (chunks per second x context length) and the peak
CUDA memory of the measurement, weights included:

- the study's way: float32 weights, logits for every position, the cross-entropy of every position
  computed and the final one kept, all hidden states returned (the last one is the feature);
- ctxscale's way (`ctxscale.measure.lm.FinalTokenMeasurer`, what `ctxscale measure` runs): bf16
  weights, SDPA, `torch.inference_mode()`, the l - 1 context tokens only, `logits_to_keep=1`, the
  feature taken from the output layer's input.

    python bench/bench_measure.py --out bench.json                  # 1.2 B Llama shape, T = 2,048 (GPU)
    python bench/bench_measure.py --preset tiny --device cpu        # a check that it runs

One H200, torch 2.11 + CUDA 13, transformers 5.17, 48 chunks: the study's way 14,208 tokens/s at a
31.2 GiB peak; ctxscale at batch 8 198,572 tokens/s (14.0x) at 3.33 GiB (0.107 of it), at batch 32
182,099 tokens/s at 6.33 GiB. Mean CE 12.226 (bf16) vs 12.248 (float32) on this random model.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

# Llama-3.2-1B's shape (1.24 B parameters with the tied 128,256-row embedding).
PRESETS = {
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "tiny": dict(vocab_size=128256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


@torch.no_grad()
def study_way(model, chunks: torch.Tensor, batch: int):
    """The study's script: full-sequence forward, every position's logits and CE, keep the last."""
    ces, feats = [], []
    for i in range(0, len(chunks), batch):
        ids = chunks[i:i + batch]
        out = model(input_ids=ids, output_hidden_states=True)
        logits = out.logits  # (B, T, V) float32
        B, T, V = logits.shape
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1), reduction="none").view(B, T - 1)
        ces.append(ce[:, -1].cpu())
        feats.append(out.hidden_states[-1][:, -2].float().cpu())
    return torch.cat(ces).numpy(), torch.cat(feats).numpy()


def timed(fn, device, warmup: int = 1):
    for _ in range(warmup):
        fn(warm=True)
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    result = fn(warm=False)
    _sync(device)
    return result, time.perf_counter() - start, _peak_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama-1b")
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--chunks", type=int, default=48, help="chunks measured (timed) per way")
    parser.add_argument("--study-batch", type=int, default=8)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32], help="ctxscale batch sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from ctxscale.measure.lm import FinalTokenMeasurer, LoadedModel

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = LlamaConfig(**PRESETS[args.preset], max_position_embeddings=max(args.context, 2048),
                         attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM(config).eval()  # float32, random weights, built on the device
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    chunks_np = rng.integers(0, config.vocab_size, size=(args.chunks, args.context), dtype=np.int64)
    chunks = torch.from_numpy(chunks_np).to(device)
    T = args.context
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "preset": args.preset, "params": params, "context_length": T,
              "chunks": args.chunks}

    def study(warm):
        return study_way(model, chunks[:args.study_batch] if warm else chunks, args.study_batch)

    (study_ce, study_feat), seconds, peak = timed(study, device)
    report["study"] = {"batch": args.study_batch, "dtype": "float32", "seconds": seconds,
                       "tokens_per_s": args.chunks * T / seconds, "peak_gib": peak}
    print(f"study's way: {report['study']['tokens_per_s']:,.0f} tokens/s, peak {peak:.2f} GiB", flush=True)

    model.to(torch.bfloat16)
    loaded = LoadedModel("bench", "", model, device, torch.bfloat16, config.vocab_size, config.hidden_size, None)
    inputs, targets = chunks_np[:, :-1], chunks_np[:, -1]
    report["ctxscale"] = []
    for batch in args.batches:
        measurer = FinalTokenMeasurer(loaded, batch_size=batch)

        def ours(warm):
            n = batch if warm else len(inputs)
            return measurer.measure(inputs[:n], targets[:n])

        (ce, feat), seconds, peak = timed(ours, device)
        cos = np.sum(feat * study_feat, 1) / (np.linalg.norm(feat, axis=1) * np.linalg.norm(study_feat, axis=1))
        row = {"batch": batch, "dtype": "bfloat16", "seconds": seconds, "tokens_per_s": args.chunks * T / seconds,
               "peak_gib": peak, "ce_mean": float(ce.mean()), "study_ce_mean": float(study_ce.mean()),
               "ce_max_abs_diff": float(np.abs(ce - study_ce).max()), "feature_cosine_min": float(cos.min())}
        row["speedup"] = row["tokens_per_s"] / report["study"]["tokens_per_s"]
        row["memory_ratio"] = peak / report["study"]["peak_gib"] if device.type == "cuda" else float("nan")
        report["ctxscale"].append(row)
        print(f"ctxscale batch {batch}: {row['tokens_per_s']:,.0f} tokens/s ({row['speedup']:.1f}x), peak "
              f"{peak:.2f} GiB ({row['memory_ratio']:.3f} of the study's); CE {row['ce_mean']:.4f} vs "
              f"{row['study_ce_mean']:.4f} (max |diff| {row['ce_max_abs_diff']:.3g}), feature cosine >= "
              f"{row['feature_cosine_min']:.4f}", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
