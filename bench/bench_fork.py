"""The anchor for bench/bench_gpt.py: the reference study's own GPT-2 trainer, timed the same way.

The study trained with a nanoGPT fork whose model uses rotary embeddings from the
`rotary-embedding-torch` package (github.com/JingzheShi/NLPCtlScalingAndBounds,
NaturalLanguage/ContextLengthScalingTrainingExps/nanoGPT-master). This script imports that
folder's `model.py` from a clone you point it at and times its training step as its `train.py`
runs it, with the two settings the study left off turned on: bf16 autocast and torch.compile.
- The model: 6 layers, 12 heads, 768 wide, no biases, no dropout, vocabulary 50,304.
- The optimizer: its `configure_optimizers`, AdamW with fused kernels on CUDA.
- The step: 40 micro-batches of 32 · 384 / T sequences (491,520 tokens at T = 1,024 or 4,096),
  each loss divided by 40, then a gradient clip at 1.0.
- The batches: random windows of a random uint16 token array, pinned and copied without
  blocking, as its `get_batch` does.
Each T runs 2 untimed steps (compilation) and `--steps` timed ones with one sync at the end, as
bench_gpt.py does; rows go to stdout as JSON.

    pip install rotary-embedding-torch
    python bench/bench_fork.py --fork CLONE/NaturalLanguage/ContextLengthScalingTrainingExps/nanoGPT-master 1024 4096
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def time_step(GPT, GPTConfig, T: int, tokens: np.ndarray, rng: np.random.Generator, steps: int) -> dict:
    """The fork's model at context length T: 2 untimed steps, then `steps` timed ones."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    micro, accumulation = int(32 * 384 / T), 40
    model = GPT(GPTConfig(n_layer=6, n_head=12, n_embd=768, block_size=T, bias=False, dropout=0.0,
                          vocab_size=50304)).cuda()
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda")
    compiled = torch.compile(model)

    def batch():
        starts = rng.integers(0, len(tokens) - T - 1, size=micro)
        rows = torch.from_numpy(np.stack([tokens[s:s + T + 1] for s in starts]).astype(np.int64))
        return (rows[:, :-1].pin_memory().cuda(non_blocking=True),
                rows[:, 1:].pin_memory().cuda(non_blocking=True))

    def step() -> torch.Tensor:
        for _ in range(accumulation):
            x, y = batch()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = compiled(x, y)
            (loss / accumulation).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    step_s = (time.perf_counter() - start) / steps
    tokens_per_step = micro * accumulation * T
    return {"fork": True, "context_length": T, "tokens_per_step": tokens_per_step, "step_s": step_s,
            "tokens_per_s": tokens_per_step / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fork", required=True, help="the fork's nanoGPT folder (holds model.py)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("context_lengths", nargs="+", type=int)
    args = parser.parse_args()
    sys.path.insert(0, args.fork)
    from model import GPT, GPTConfig  # the fork's

    torch.backends.cuda.matmul.allow_tf32 = True  # its train.py sets both
    torch.backends.cudnn.allow_tf32 = True
    tokens = np.random.default_rng(0).integers(0, 50257, size=64 * 2**20, dtype=np.uint16)
    rng = np.random.default_rng(1)
    for T in args.context_lengths:
        print(json.dumps(time_step(GPT, GPTConfig, T, tokens, rng, args.steps)), flush=True)
        torch.cuda.empty_cache()  # the model of this T is gone with time_step's frame


if __name__ == "__main__":
    main()
