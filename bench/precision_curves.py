"""Loss curves of one GPT setup under two `training.precision` settings, against seed noise.

Trains the same model (`setup_gpt`, what a trial trains with) on a prepared corpus for `--steps`
optimizer steps, once per (precision, seed) run, and asks whether a precision moves the training
loss by more than changing the seed does. Runs: the reference precision (first of --precisions) at
every --seeds, each other precision at the first seed. Per run it keeps every step's training
loss and the validation loss at the end (fixed windows, as `eval_windows: fixed`). Printed:
- the loss every --print-every steps, each averaged over the last 10 steps (one step's loss is a
  single batch);
- the largest gap to the reference run at the first seed over the second half of the steps (the
  same 10-step means), for the other seeds (the noise) and the other precisions;
- the validation losses.
A PNG of the curves and the rows as JSON go to --out.

    python bench/precision_curves.py --corpus data/debian-docs --precisions bf16 fp8 --seeds 0 1

The learning rate warms up over --warmup steps, then stays at --lr (the study's rate and the
default warm-up of 2,000 steps would leave 300 steps all warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from ctxscale.data.corpus import corpus_folder, load_corpus
from ctxscale.spec.gpt import GPTSpec
from ctxscale.train.gpt import evaluate, setup_gpt
from ctxscale.train.schedule import lr_at

WINDOW = 10  # steps per printed mean


def run_spec(args, precision: str, tokens: int) -> GPTSpec:
    model = {"preset": args.preset} if not args.shape else dict(
        zip(("n_layer", "n_head", "n_embd"), map(int, args.shape.split(":"))), preset=None)
    return GPTSpec.model_validate({
        "name": "precision-curves", "experiment": "gpt",
        "grid": {"context_length": [args.context_length], "data_size": [tokens]},
        "model": model,
        "training": {"tokens_per_step": args.tokens_per_step, "micro_batch_tokens": args.micro_batch_tokens,
                     "lr": args.lr, "warmup_steps": args.warmup, "lr_schedule": "constant",
                     "max_steps": max(args.steps, args.warmup + 1), "precision": precision,
                     "attention": args.attention, "device": args.device, "compile": not args.no_compile,
                     "eval_tokens": args.eval_tokens},
    })


def train_curve(args, precision: str, seed: int, train_tokens: np.ndarray, val_tokens: np.ndarray) -> dict:
    torch._dynamo.reset()
    spec = run_spec(args, precision, len(train_tokens))
    run = setup_gpt(spec, args.context_length, seed, train_tokens, val_tokens)
    t = spec.training
    start, losses = time.perf_counter(), []
    for step in range(args.steps):
        losses.append(run.step(lr_at(step, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps, decay_steps=None)))
    losses = torch.stack(losses).float().cpu().numpy()  # one sync at the end
    train_s = time.perf_counter() - start
    total, count = evaluate(run.compiled, run.val_windows, run.val_starts, run.plan.micro_batch, run.forward_ctx)
    return {"precision": precision, "seed": seed, "losses": losses.tolist(), "val_loss": total / count,
            "train_s": train_s}


def window_means(losses: list[float]) -> np.ndarray:
    """Mean of each step's loss and the WINDOW - 1 before it (from step WINDOW on)."""
    return np.convolve(np.asarray(losses), np.ones(WINDOW) / WINDOW, mode="valid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=None, help="a prepared corpus folder (ctxscale data corpus); needed unless --replot")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp8"], help="the first is the reference")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="the reference runs at each")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--context-length", type=int, default=1024)
    parser.add_argument("--tokens-per-step", type=int, default=65536)
    parser.add_argument("--micro-batch-tokens", type=int, default=65536)
    parser.add_argument("--train-tokens", type=int, default=0, help="training tokens used (0: all)")
    parser.add_argument("--eval-tokens", type=int, default=262144)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--preset", default="study")
    parser.add_argument("--shape", default=None, help="n_layer:n_head:n_embd instead of --preset")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--print-every", type=int, default=25)
    parser.add_argument("--out", default="precision_curves", help="folder for curves.json and curves.png")
    parser.add_argument("--replot", default=None, help="a curves.json written before: print and draw it again")
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        summarise(saved["runs"], saved["args"], args.out)
        return

    if not args.corpus:
        parser.error("--corpus is needed (or --replot FILE)")
    corpus = load_corpus(corpus_folder(args.corpus))
    train_tokens = corpus.train_tokens[:args.train_tokens] if args.train_tokens else corpus.train_tokens
    reference, others = args.precisions[0], args.precisions[1:]
    plan = [(reference, seed) for seed in args.seeds] + [(p, args.seeds[0]) for p in others]
    runs = []
    for precision, seed in plan:
        runs.append(train_curve(args, precision, seed, train_tokens, corpus.val_tokens))
        r = runs[-1]
        print(f"{precision} seed {seed}: {args.steps} steps in {r['train_s']:.1f} s (compile included), "
              f"last 10-step mean {np.mean(r['losses'][-WINDOW:]):.4f}, val {r['val_loss']:.4f}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "curves.json"), "w") as f:
        json.dump({"args": vars(args), "runs": runs}, f)
    summarise(runs, vars(args), args.out)


def summarise(runs: list[dict], settings: dict, out: str) -> None:
    """Print the table and the gaps, and draw out/curves.png."""
    steps_done = len(runs[0]["losses"])
    names = [f"{r['precision']}/s{r['seed']}" for r in runs]
    means = [window_means(r["losses"]) for r in runs]
    print(f"\ntraining loss, mean of the last {WINDOW} steps")
    print(f"{'step':>6} " + " ".join(f"{n:>10}" for n in names))
    for i in range(0, len(means[0]), settings["print_every"]):
        print(f"{i + WINDOW:>6} " + " ".join(f"{m[i]:>10.4f}" for m in means))
    half = len(means[0]) // 2
    print(f"\ngap to {names[0]} over steps {half + WINDOW}-{steps_done} (10-step means): mean, largest |gap|, "
          "share of steps above; validation loss")
    for name, m, r in zip(names, means, runs):
        gap = m[half:] - means[0][half:]
        print(f"{name:>10}: mean {gap.mean():+.4f}, largest {np.max(np.abs(gap)):.4f}, above {np.mean(gap > 0):.0%}; "
              f"val {r['val_loss']:.4f} ({r['val_loss'] - runs[0]['val_loss']:+.4f})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # left: the curves; right: each run minus the reference at the first seed (a shift that stays
    # on one side, beyond the other seeds' band, is the precision's, not noise)
    fig, (ax, diff) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = np.arange(WINDOW, steps_done + 1)
    for name, m in zip(names, means):
        ax.plot(steps, m, label=name, lw=1.2)
        diff.plot(steps, m - means[0], label=name, lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"training loss (mean of {WINDOW} steps)")
    ax.set_title(f"T = {settings['context_length']}, {settings['tokens_per_step']:,} tokens a step")
    ax.set_ylim(top=float(np.percentile(np.concatenate(means), 99)))
    ax.legend()
    diff.axhline(0, color="0.5", lw=0.8)
    diff.set_xlabel("optimizer step")
    diff.set_ylabel(f"minus {names[0]} (nats)")
    diff.set_title("difference from the reference run")
    gaps = np.concatenate([m[WINDOW:] - means[0][WINDOW:] for m in means])  # past the first steps
    diff.set_ylim(gaps.min() * 1.1, gaps.max() * 1.1)
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    fig.savefig(os.path.join(out, "curves.png"), dpi=120)
    print(f"wrote {out}/curves.png")


if __name__ == "__main__":
    main()
