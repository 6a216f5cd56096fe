"""The GPT-2 experiment's training loop: one model, one (context length, training subset, seed).

Ray-agnostic: it takes the trial description and a `report(metrics, checkpoint_dir=None)`
callable, and runs alone, in a Ray Tune trial or in every worker of a Ray Train DDP run (it only
asks torch.distributed whether a process group exists). Every optimizer step sees the same number
of tokens at every context length (`plan_batches`), so context lengths differ only in how the
tokens are cut, not in how much is learned per step. `setup_gpt` builds what a trial trains with
and `train_gpt` runs the loop on it; bench/bench_gpt.py and bench/bench_ddp.py time steps of the
same `setup_gpt` object, so they measure what a trial runs.
"""
from __future__ import annotations

import math
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel as DDP

from ..device import compile_static, pick_device
from ..models.gpt import GPT, GPTConfig
from ..spec.gpt import BatchPlan, plan_batches
from .checkpoint import load_checkpoint, random_state, report_with_checkpoint, restore_random_state
from .distributed import all_gather_object, all_reduce, data_parallel, rank_and_world
from .float8 import check_float8, to_float8
from .schedule import lr_at

Report = Callable[..., None]
CHECKPOINT_FILE = "state.pt"


# --- Data: windows of the token memmaps ----------------------------------------------------------


class TokenWindows:
    """(input, target) windows of `context_length` tokens cut from a 1-D token array (a memmap)."""

    def __init__(self, tokens: np.ndarray, context_length: int, device: torch.device):
        if len(tokens) <= context_length:
            raise ValueError(f"{len(tokens)} tokens cannot hold one window of {context_length} + 1")
        self.tokens, self.context_length, self.device = tokens, context_length, device

    def batch(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.context_length
        rows = np.stack([np.asarray(self.tokens[s:s + T + 1]) for s in starts]).astype(np.int64)
        x, y = torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())
        if self.device.type == "cuda":  # pinned + non_blocking: the copy overlaps the GPU's work
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def random_batches(self, rng: np.random.Generator, sizes: tuple[int, ...]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless micro-batches of random windows, `sizes` sequences each in turn (one step's)."""
        high = len(self.tokens) - self.context_length  # last start whose target still fits, + 1
        while True:
            for size in sizes:
                yield self.batch(rng.integers(0, high, size=size))

    def fixed_starts(self, count: int) -> np.ndarray:
        """`count` window starts spread evenly over the array: the same windows at every evaluation."""
        return np.linspace(0, len(self.tokens) - self.context_length - 1, count).astype(np.int64)

    def random_starts(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` window starts drawn uniformly (nanoGPT's evaluation: new windows every time)."""
        return rng.integers(0, len(self.tokens) - self.context_length, size=count)


# --- Model, optimizer, one step ---------------------------------------------------------------


ATTENTION_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH,
}


def forward_context(device: torch.device, precision: str, attention: str = "auto") -> Callable[[], ContextManager]:
    """A factory of the context every forward pass runs in: bf16 autocast on CUDA for bf16 and fp8
    (fp8's converted layers run their own products; CPUs train in float32: bf16 matmuls are slow
    there) and, unless 'auto', one scaled-dot-product attention kernel. A factory because
    sdpa_kernel contexts cannot be re-entered."""

    def enter() -> ContextManager:
        stack = ExitStack()
        if device.type == "cuda" and precision in ("bf16", "fp8"):
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        if attention != "auto":
            stack.enter_context(sdpa_kernel([ATTENTION_BACKENDS[attention]]))
        return stack

    return enter


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                   device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only, not on norms and biases (GPT-2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, plan: BatchPlan,
               lr: float, grad_clip: float, forward_ctx: Callable[[], ContextManager]) -> torch.Tensor:
    """One optimizer step over the plan's micro-batches; returns the mean loss as a device tensor
    (no host sync, so the next batch is cut while the GPU still works). Each micro-batch's mean
    loss counts by its share of the step's sequences, so the step is the mean over all its tokens."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = None
    sizes = plan.micro_batches
    for micro, size in enumerate(sizes):
        x, y = next(batches)
        last = micro == len(sizes) - 1
        # DDP: all-reduce gradients once per step, on the last micro-batch only
        sync = net.no_sync() if isinstance(net, DDP) and not last else nullcontext()
        with sync:
            with forward_ctx():
                loss = net(x, y)[1]  # drop the logits at once (memory)
            share = loss * (size / plan.sequences)
            share.backward()
        total = share.detach() if total is None else total + share.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: TokenWindows, starts: np.ndarray, micro_batch: int,
             forward_ctx: Callable[[], ContextManager]) -> tuple[float, int]:
    """Summed cross-entropy and token count over the given windows (this rank's share)."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=windows.device)
    for i in range(0, len(starts), micro_batch):
        x, y = windows.batch(starts[i:i + micro_batch])
        with forward_ctx():
            loss = model(x, y)[1]
        total += loss.double() * y.numel()
    model.train()
    return total.item(), len(starts) * windows.context_length


# --- Setup: everything a trial trains with, built once -----------------------------------------


@dataclass
class GPTSetup:
    """What `setup_gpt` builds for one (spec, context length, seed) on this rank: the loop and the
    benchmarks in bench/ train through the same object, so a benchmark times what a trial runs."""

    model: GPT  # the plain module: checkpoints hold its state_dict
    compiled: torch.nn.Module  # `model` through torch.compile (or `model`); evaluation runs it
    net: torch.nn.Module  # what a training step runs: `compiled`, under DDP when world > 1
    optimizer: torch.optim.AdamW
    plan: BatchPlan
    forward_ctx: Callable[[], ContextManager]
    rng: np.random.Generator  # draws this rank's training windows; checkpointed
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]  # endless random training micro-batches
    val_windows: TokenWindows
    val_starts: np.ndarray  # this rank's share of the fixed validation windows
    grad_clip: float
    seed: int
    eval_windows: str  # "fixed": val_starts at every evaluation; "random": as many, drawn anew each time
    device: torch.device
    rank: int
    world: int

    def step(self, lr: float) -> torch.Tensor:
        """One optimizer step at learning rate `lr` (see `train_step`)."""
        return train_step(self.net, self.optimizer, self.batches, self.plan, lr, self.grad_clip, self.forward_ctx)

    def eval_starts(self, step: int) -> np.ndarray:
        """This rank's validation windows for the evaluation after optimizer step `step`. Random
        ones come from a generator seeded by (seed, rank, step): a resumed trial draws the same."""
        if self.eval_windows == "fixed":
            return self.val_starts
        rng = np.random.default_rng([self.seed, self.rank, step, 1])
        return self.val_windows.random_starts(rng, len(self.val_starts))


def setup_gpt(spec, context_length: int, seed: int, train_tokens: np.ndarray, val_tokens: np.ndarray) -> GPTSetup:
    """Build the model, optimizer, batches and compile/DDP wrapping of one GPT-2 trial on this rank.

    The same seed gives every rank the same initial weights; each rank draws its own training
    windows. torch.compile wraps the model first and DDP the compiled module (as nanoGPT does), so
    `train_step` sees the DDP wrapper (its no_sync skips the gradient all-reduce on all but the
    last micro-batch) and evaluation runs the compiled module without DDP.
    """
    t = spec.training
    rank, world = rank_and_world()
    device = pick_device(t.device)
    plan = plan_batches(t.tokens_per_step, context_length, t.micro_batch_tokens, world)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**spec.model.config_kwargs(), max_seq_len=context_length,
                          loss_chunk_rows=t.loss_chunk_rows)).to(device)
    if t.precision == "fp8":
        check_float8(device)  # a clear error on a CPU, an older GPU or without torchao
        to_float8(model)  # the same parameters (names, values): the optimizer and checkpoints see no change
    optimizer = make_optimizer(model, lr=t.lr, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2), device=device)
    # static shapes: one T per trial, and one or two micro-batch sizes (`plan_batches`)
    compiled = compile_static(model) if t.compile else model
    rng = np.random.default_rng([seed, rank])
    val_windows = TokenWindows(val_tokens, context_length, device)
    per_eval = max(1, round(t.eval_tokens / (context_length * plan.micro_batch * world))) * plan.micro_batch * world
    return GPTSetup(
        model=model, compiled=compiled, net=data_parallel(compiled, device), optimizer=optimizer, plan=plan,
        forward_ctx=forward_context(device, t.precision, t.attention), rng=rng,
        batches=TokenWindows(train_tokens, context_length, device).random_batches(rng, plan.micro_batches),
        val_windows=val_windows,
        val_starts=val_windows.fixed_starts(per_eval)[rank::world],  # whole micro-batches per rank: no recompiles
        grad_clip=t.grad_clip, seed=seed, eval_windows=t.eval_windows, device=device, rank=rank, world=world,
    )


# --- The loop's state between evaluations -------------------------------------------------------


@dataclass
class TrainingState:
    """Where a GPT trial stands: what a checkpoint restores besides the weights, the optimizer and
    the random generators (saved under the key "progress")."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    best_step: int = 0
    best_epoch: float = 0.0
    evals_since_best: int = 0
    wall_s: float = 0.0
    done: bool = False

    def record_evaluation(self, val_loss: float, diverged: bool, data_size: int) -> None:
        """Keep the best validation loss and when it came; count the evaluations since."""
        if not diverged and val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step = val_loss, self.step
            self.best_epoch, self.evals_since_best = self.tokens_seen / data_size, 0
        else:
            self.evals_since_best += 1

    def patience_ran_out(self, patience: int, patience_fraction: float) -> bool:
        """The early-stopping rule (docs/early-stopping.md): `patience` evaluations without a better
        validation loss and, besides, at least patience_fraction x best_step steps since the best."""
        return self.evals_since_best >= patience and self.step - self.best_step >= patience_fraction * self.best_step


class Interval(NamedTuple):
    """The optimizer steps between two evaluations, as this rank saw them."""

    steps: int
    train_loss: float  # mean over the interval's steps
    train_s: float
    lr: float  # the rate of the interval's last step


# --- The loop ----------------------------------------------------------------------------------


def run_gpt_trial(point, report: Report, corpus: Optional[str] = None, resume_dir: Optional[str] = None) -> dict:
    """Train one GPT-2 to its best validation loss; return the last reported metrics.

    `point`: a `ctxscale.spec.point.Point` of a GPTSpec (data_size: training tokens). `corpus`: the
    folder the gpt experiment's prepare step found (default: the spec's data.corpus, from the
    working directory); see `train_gpt`.
    """
    from ..data.corpus import corpus_folder, load_corpus

    spec = point.spec
    corpus = load_corpus(corpus_folder(corpus or spec.data.corpus))
    if spec.data.subset == "random":
        train_tokens = corpus.sampled_subset(tokens=point.data_size, seed=spec.data.subset_seed)
    else:
        train_tokens = corpus.training_subset(tokens=point.data_size, offset_percent=spec.data.offset_percent)
    return train_gpt(spec, point.context_length, point.seed, train_tokens, corpus.val_tokens,
                     report, resume_dir=resume_dir)


def _resume(run: GPTSetup, resume_dir: str, max_steps: int) -> tuple[TrainingState, dict]:
    """The state and last metrics saved in `resume_dir`, with the weights, the optimizer and this
    rank's generators restored; a fresh state when the folder holds no readable checkpoint."""
    saved = load_checkpoint(resume_dir, CHECKPOINT_FILE, run.model, run.optimizer)
    if saved is None:
        return TrainingState(), {}
    if run.rank < len(saved["rng"]):  # same world size: every rank continues its own batch stream
        restore_random_state(saved["rng"][run.rank], run.rng, run.device)
    state = TrainingState(**saved["progress"])
    if run.rank == 0 and state.step and not state.done:
        print(f"going on from step {state.step} of at most {max_steps}", flush=True)
    return state, saved["metrics"]


def _train_interval(run: GPTSetup, state: TrainingState, t) -> Interval:
    """Optimizer steps up to the next evaluation: every `eval_every` steps and at `max_steps`."""
    decay_steps = None if t.lr_schedule == "constant" else t.lr_decay_steps or t.max_steps
    started, steps, loss_sum = time.perf_counter(), 0, torch.zeros((), device=run.device)
    lr = math.nan  # set by the first step: an unfinished trial always has one to take
    while state.step < t.max_steps and (steps == 0 or state.step % t.eval_every):
        lr = lr_at(state.step, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps, decay_steps=decay_steps)
        loss_sum += run.step(lr)
        state.step += 1
        steps += 1
    train_loss = loss_sum.item() / max(steps, 1)  # .item() waits for the GPU: the timing below is real
    return Interval(steps, train_loss, time.perf_counter() - started, lr)


def _report(run: GPTSetup, report: Report, metrics: dict, state: TrainingState, checkpoint: bool) -> None:
    """Report the metrics on every rank; with `checkpoint`, rank 0 hands on a checkpoint with them
    (every rank takes part in gathering the generators' states: a collective)."""
    if not checkpoint:
        report(metrics, checkpoint_dir=None)
        return
    rng_states = all_gather_object(random_state(run.rng, run.device))
    if run.rank == 0:
        # the model's shape travels with its weights, so an export needs nothing else
        report_with_checkpoint(report, metrics, CHECKPOINT_FILE, run.model, run.optimizer, {
            "model_config": asdict(run.model.config), "progress": asdict(state), "rng": rng_states,
            "metrics": metrics})
    else:
        report(metrics, checkpoint_dir=None)


def train_gpt(spec, context_length: int, seed: int, train_tokens: np.ndarray, val_tokens: np.ndarray,
              report: Report, resume_dir: Optional[str] = None) -> dict:
    """The loop behind `run_gpt_trial`, on token arrays (memmaps or plain arrays).

    `report(metrics, checkpoint_dir)` is called after every evaluation (every `eval_every` steps
    and at the end) on every rank with the same all-reduced metrics; rank 0 passes a fresh folder
    holding the checkpoint, deleted when `report` returns (Ray's report persists it before), at
    every evaluation or, with `training.checkpoint_every_s`, at most that often and at the last. The
    last report has status "ok" (early stop or max_steps) or "diverged" (non-finite loss).
    """
    t = spec.training
    run = setup_gpt(spec, context_length, seed, train_tokens, val_tokens)
    plan, world, data_size = run.plan, run.world, len(train_tokens)
    state, metrics = _resume(run, resume_dir, t.max_steps) if resume_dir else (TrainingState(), {})
    if state.done:  # the trial had finished: say so again and stop
        report(metrics)
        return metrics
    flops_per_token = run.model.flops_per_token(context_length)
    fixed = {"context_length": context_length, "data_size": data_size, "tokens_per_step": plan.tokens_per_step,
             "micro_batch": plan.micro_batch, "accumulation": plan.accumulation, "world_size": world,
             "num_params": run.model.num_params(non_embedding=False)}
    started, wall_before = time.perf_counter(), state.wall_s
    checkpointed_s = state.wall_s if resume_dir else -math.inf  # wall time of the last checkpoint

    while not state.done:
        interval = _train_interval(run, state, t)
        val_sum, val_count = evaluate(run.compiled, run.val_windows, run.eval_starts(state.step), plan.micro_batch,
                                      run.forward_ctx)
        train_loss, val_sum, val_count = all_reduce([interval.train_loss, val_sum, val_count], run.device)
        train_s, wall_s = all_reduce([interval.train_s, wall_before + time.perf_counter() - started], run.device,
                                     op="max")
        train_loss, val_loss = train_loss / world, val_sum / val_count
        state.tokens_seen += interval.steps * plan.tokens_per_step
        state.wall_s = wall_s
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        state.record_evaluation(val_loss, diverged, data_size)
        state.done = (diverged or state.patience_ran_out(t.patience, t.patience_fraction)
                      or state.step >= t.max_steps)
        tokens_per_s = interval.steps * plan.tokens_per_step / max(train_s, 1e-9)
        metrics = {
            "step": state.step, "epoch": state.tokens_seen / data_size, "tokens_seen": state.tokens_seen,
            "train_loss": train_loss, "val_loss": val_loss, "best_val_loss": state.best_val_loss,
            "best_epoch": state.best_epoch, "best_step": state.best_step, "lr": interval.lr,
            "tokens_per_s": tokens_per_s, "samples_per_s": tokens_per_s / context_length,
            "mfu": tokens_per_s * flops_per_token / (t.peak_flops * world) if run.device.type == "cuda" else math.nan,
            "wall_s": wall_s, "status": ("diverged" if diverged else "ok") if state.done else "running",
            "final_train_loss": train_loss if state.done else math.nan, **fixed,
        }
        # wall_s is all-reduced, so every rank takes the same decision (the gather is a collective)
        checkpoint = state.done or wall_s - checkpointed_s >= t.checkpoint_every_s
        checkpointed_s = wall_s if checkpoint else checkpointed_s
        _report(run, report, metrics, state, checkpoint)
    return metrics
