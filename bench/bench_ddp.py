"""DDP scaling of the GPT-2 trainer through Ray Train: tokens/s per GPU, MFU and scaling efficiency.

For every GPU count and context length, a Ray Train `TorchTrainer` with one worker per GPU (NCCL,
NVLink multicast off) times steps of the trainer's own set-up (bench_gpt.bench_variant through
`ctxscale.train.gpt.setup_gpt`: bf16, torch.compile and then DDP, no_sync on accumulation
micro-steps, exactly as a DDP trial) on the study's 6-layer GPT-2 at 491,520 tokens per optimizer
step, split over the ranks. Efficiency = tokens/s per GPU at N GPUs / tokens/s at 1 GPU.

    python bench/bench_ddp.py --gpus 1 2 4 8 --contexts 1024 8192 --out ddp.jsonl

GPU counts above what the machine has are skipped (and said so). `--device cpu` runs the same
path on gloo workers, one CPU each, as a smoke test of this script (with `--preset tiny` and small
`--contexts`, `--tokens-per-step` and `--micro-batch-tokens`).

Measured so far on one H200 only (2026-11-29, torch 2.11 + CUDA 13, cuDNN attention, 4 timed
steps after 2 warm-up steps), from the repository root, with Inductor's caches off so that every
variant compiles afresh:

    TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 python bench/bench_ddp.py --gpus 1 2 4 8 --contexts 1024 8192

    GPUs      T micro accum tok/step      tok/s  tok/s/GPU    MFU    eff
       1   1024    32    15   491520    801,362    801,362  44.0% 100.0%
       1   8192     4    15   491520    560,275    560,275  53.2% 100.0%

These are the baselines the 2-, 4- and 8-GPU rows are to be divided by.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.torch import TorchConfig, TorchTrainer  # noqa: E402

BENCH_DIR = str(Path(__file__).resolve().parent)


def worker(config: dict) -> None:
    import sys

    import numpy as np

    sys.path.insert(0, config["bench_dir"])
    from bench_gpt import bench_variant

    rank = ray.train.get_context().get_world_rank()
    tokens = np.random.default_rng(rank).integers(0, 50257, size=32 * 2**20, dtype=np.uint16)
    row = bench_variant(config["context_length"], config["attention"], config["micro_batch_tokens"],
                        tokens=tokens, tokens_per_step=config["tokens_per_step"], steps=config["steps"],
                        warmup=config["warmup"], compile=config["compile"], peak=config["peak"],
                        preset=config["preset"], device=config["device"])
    if rank == 0:  # one node: rank 0 writes the row where the driver reads it
        with open(config["out"], "a") as f:
            f.write(json.dumps(row) + "\n")
    ray.train.report({"done": 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--attention", default="cudnn")
    parser.add_argument("--micro-batch-tokens", type=int, default=32768)
    parser.add_argument("--tokens-per-step", type=int, default=491_520)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-flops", type=float, default=989e12, help="per GPU (H200 dense bf16)")
    parser.add_argument("--out", default="ddp.jsonl")
    parser.add_argument("--preset", default="study", help="model size (tiny: smoke test)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: gloo workers of one CPU each, a smoke test of this script")
    args = parser.parse_args()

    gpu = args.device == "cuda"
    ray.init(runtime_env={"env_vars": {"NCCL_NVLS_ENABLE": "0"}}, logging_level="WARNING")
    available = int(ray.cluster_resources().get("GPU" if gpu else "CPU", 0))
    out = Path(args.out).absolute()
    rows = []
    for gpus in args.gpus:
        if gpus > available:
            print(f"skipping {gpus} workers: the cluster has {available} {'GPUs' if gpu else 'CPUs'}", flush=True)
            continue
        for context_length in args.contexts:
            before = out.read_text().count("\n") if out.exists() else 0
            TorchTrainer(
                worker,
                train_loop_config={"bench_dir": BENCH_DIR, "context_length": context_length,
                                   "attention": args.attention, "micro_batch_tokens": args.micro_batch_tokens,
                                   "tokens_per_step": args.tokens_per_step, "steps": args.steps,
                                   "warmup": args.warmup, "peak": args.peak_flops, "out": str(out),
                                   "compile": not args.no_compile, "preset": args.preset, "device": args.device},
                scaling_config=ray.train.ScalingConfig(num_workers=gpus, use_gpu=gpu),
                torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
                run_config=ray.train.RunConfig(name=f"ddp-{gpus}-{context_length}",
                                               storage_path=tempfile.mkdtemp(prefix="bench-ddp-")),
            ).fit()
            lines = out.read_text().splitlines()[before:]
            rows += [json.loads(line) for line in lines]
    base = {r["context_length"]: r["tokens_per_s_per_gpu"] for r in rows if r["world_size"] == 1}
    print(f"\n{'GPUs':>4} {'T':>6} {'micro':>5} {'accum':>5} {'tok/step':>8} {'tok/s':>10} {'tok/s/GPU':>10} "
          f"{'MFU':>6} {'eff':>6}")
    for r in rows:
        eff = r["tokens_per_s_per_gpu"] / base[r["context_length"]] if r["context_length"] in base else float("nan")
        print(f"{r['world_size']:>4} {r['context_length']:>6} {r['micro_batch']:>5} {r['accumulation']:>5} "
              f"{r['tokens_per_step']:>8} {r['tokens_per_s']:>10,.0f} {r['tokens_per_s_per_gpu']:>10,.0f} "
              f"{r['mfu']:>6.1%} {eff:>6.1%}")


if __name__ == "__main__":
    main()
