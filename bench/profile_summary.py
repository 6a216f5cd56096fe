"""Sum a profiled step's GPU time by kind of kernel: matrix products, attention, the loss, the
optimizer, LayerNorm, GELU, copies, and the rest (inductor's other fused kernels: RoPE, residual
adds, casts).

Reads the JSON lines that `bench/bench_gpt.py --profile FILE` writes to FILE.jsonl (one line per
kernel name per variant) and prints, per variant, each kind's GPU milliseconds, its share of the
step's kernel time and nanoseconds per token when --tokens gives the step's tokens:

    python bench/profile_summary.py profile.txt.jsonl --tokens 491520

The kinds are told apart by kernel name: cuBLAS / CUTLASS / nvjet products; flash, cuDNN and
memory-efficient attention; AdamW's fused kernel; an inductor kernel by the first kind whose
pattern its name matches, so a LayerNorm fused with a residual add counts as LayerNorm. A kernel
of an unfamiliar name lands in "other": the printout lists the five largest of those, to check
that nothing large is misfiled.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

# first match wins: attention before products (cuDNN's attention kernels carry "sm90" too)
KINDS = [
    ("attention", r"flash|fmha|attention|sdpa|mha|cudnn"),
    ("matmul", r"gemm|nvjet|xmma|cutlass|cublas|triton_tem|sm\d\d_|splitk"),
    # LayerNorm before the loss: the final norm's backward fuses with the tied embedding's gradient
    # and carries "logsumexp" in its name, while the loss's own kernels never mention layer_norm
    ("layer norm", r"layer_norm"),
    ("loss", r"log_softmax|logsumexp|softmax_backward|nll_loss|cross_entropy"),
    ("optimizer", r"adam|multi_tensor"),
    ("gelu", r"gelu"),
    ("copy", r"memcpy|memset"),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return kind
    return "other"


def summarize(lines: list[dict]) -> dict[str, dict]:
    """Per variant: {kind: gpu microseconds}, plus the largest 'other' kernels."""
    variants: dict[str, dict] = {}
    for row in lines:
        entry = variants.setdefault(row["variant"], {"kinds": defaultdict(float), "other": []})
        kind = kind_of(row["name"])
        entry["kinds"][kind] += row["gpu_us"]
        if kind == "other":
            entry["other"].append((row["gpu_us"], row["name"]))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", help="FILE.jsonl written by bench_gpt.py --profile FILE")
    parser.add_argument("--tokens", type=int, default=None, help="tokens in the profiled step: adds ns/token")
    args = parser.parse_args()
    with open(args.jsonl) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    for variant, entry in summarize(lines).items():
        total = sum(entry["kinds"].values())
        print(f"== {variant}: {total / 1e3:.1f} ms of kernels")
        for kind, us in sorted(entry["kinds"].items(), key=lambda item: -item[1]):
            per_token = f"  {us * 1e3 / args.tokens:6.3f} ns/token" if args.tokens else ""
            print(f"  {kind:<10} {us / 1e3:9.2f} ms {us / total:6.1%}{per_token}")
        for us, name in sorted(entry["other"], reverse=True)[:5]:
            print(f"    other: {us / 1e3:8.2f} ms  {name[:100]}")


if __name__ == "__main__":
    main()
