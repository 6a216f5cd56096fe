"""Training and evaluating one parity model (a trial of `experiment: parity`): train on the
masked training set, then evaluate at every context length of the grid.

Ray-free: `run_parity_trial(point, report, resume_dir)` calls `report(metrics)` once per epoch
(status running; with a checkpoint folder at most every `training.checkpoint_every_s`) and once at
the end (status ok or diverged) with the `ce` and `spectra` rows of every context length as JSON
text. Given a checkpoint folder, it goes on from the end of the epoch saved there. As in the GPT
loop, `setup_parity` builds what a point trains with (its `step` is one optimizer step) and
`train` runs the curriculum and the epochs on it.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data import parity_tasks as parity
from ..device import compile_static, pick_device
from ..measure.kde import kde_entropy
from ..measure.spectra import pca_eigenvalues, spectrum_measures, usable_count
from ..models.gpt import GPTConfig
from ..models.parity_transformer import ParityTransformer
from ..spec.parity import ParitySpec
from ..spec.point import Point
from .checkpoint import load_checkpoint, report_with_checkpoint
from .schedule import lr_at

EVAL_BATCH = 4096
CHECKPOINT_FILE = "parity.pt"


def spec_tasks(spec: ParitySpec) -> parity.ParityTasks:
    """The task list a parity spec's data section defines."""
    d = spec.data
    return parity.make_tasks(d.string_length, d.n_tasks, d.weight_exponent, d.task_seed)


def build_model(spec: ParitySpec, tasks: parity.ParityTasks) -> ParityTransformer:
    m = spec.model
    config = GPTConfig(n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, vocab_size=tasks.vocab_size,
                       rope_base=m.rope_base, max_seq_len=spec.data.string_length + 1)
    return ParityTransformer(config)


@torch.no_grad()
def _forward_all(model, tokens: np.ndarray, device, want_features: bool):
    logits, features = [], []
    for start in range(0, len(tokens), EVAL_BATCH):
        x = torch.from_numpy(tokens[start:start + EVAL_BATCH]).to(device).long()
        h = model.features(x)
        logits.append(model.head(h).float().cpu())
        if want_features:
            features.append(h.float().cpu())
    return torch.cat(logits), (torch.cat(features).numpy() if want_features else None)


def evaluate(model, spec: ParitySpec, tasks: parity.ParityTasks, device, fixed: dict) -> tuple[list, list]:
    """The ce and spectra rows of every context length of the grid (bits beyond it unknown)."""
    d, s = spec.data, spec.spectra
    bits, task, answer = parity.evaluation_set(tasks, d.eval_per_task, d.seed)
    fbits, ftask, _ = parity.feature_set(tasks, d.feature_rows, d.seed)
    labels = torch.from_numpy(answer.astype(np.int64))
    prob = tasks.probability
    ce_rows, spectra_rows = [], []
    model.eval()
    for length in spec.grid.context_length:
        started = time.perf_counter()
        logits, _ = _forward_all(model, parity.encode(bits, task, length), device, False)
        loss = F.cross_entropy(logits, labels, reduction="none").numpy()
        per_task = loss.reshape(tasks.n_tasks, d.eval_per_task)
        ce = float(prob @ per_task.mean(axis=1))
        ce_se = float(np.sqrt(prob ** 2 @ (per_task.var(axis=1, ddof=1) / d.eval_per_task))) if d.eval_per_task > 1 else math.nan
        accuracy = (logits.argmax(1) == labels).float().numpy().reshape(tasks.n_tasks, -1).mean(axis=1)
        bayes = parity.bayes_risk(tasks, length)
        _, features = _forward_all(model, parity.encode(fbits, ftask, length), device, True)
        eig = pca_eigenvalues(features)
        row = {**fixed, "context_length": length}
        ce_rows.append({**row, "ce": ce, "ce_se": ce_se, "bayes_risk": bayes, "gap": ce - bayes,
                        "accuracy": float(prob @ accuracy), "n_eval": int(len(loss)),
                        "wall_s": time.perf_counter() - started})
        spectra_rows.append({**row, "layer": -1, "n_samples": len(features), "hidden_dim": int(features.shape[1]),
                             "n_usable": usable_count(eig, len(features)), "eigenvalues": json.dumps(eig.tolist()),
                             **spectrum_measures(eig, s.thresholds, s.n_eigenvalues, len(features)),
                             "kde_entropy": kde_entropy(features, s.kde_dims, s.kde_max_samples, seed=d.seed),
                             "kde_dims": s.kde_dims})
        print(f"{fixed['model']} l={length}: ce {ce:.4f} ± {ce_se:.4f}, exact Bayes risk {bayes:.4f}, "
              f"kde entropy {spectra_rows[-1]['kde_entropy']:.3f}", flush=True)
    return ce_rows, spectra_rows


@dataclass
class Trained:
    """What `train` leaves: the model and the numbers the trial reports."""
    model: ParityTransformer
    status: str  # "ok", "diverged" or "stopped" (max_seconds reached)
    epoch: int
    step: int
    seen: int
    train_loss: float  # mean over the last epoch (the last trace window when stopped early)
    train_wall: float
    trace: list  # (step, mean loss of the last trace_every steps, seconds since the start)


def curriculum_rows(tokens: torch.Tensor, share: float, n_tasks: int) -> torch.Tensor:
    """Indices of the training samples (token rows, the task token last) whose task is among the
    nearest `share` of the tasks (tasks are numbered nearest first)."""
    nearest = max(1, round(share * n_tasks))
    return torch.nonzero(tokens[:, -1].long() < parity.FIRST_TASK_TOKEN + nearest).squeeze(1)


# --- Setup: everything a point trains with, built once ------------------------------------------


@dataclass
class ParitySetup:
    """What `setup_parity` builds for one point: the loop and bench/bench_parity.py train through it."""

    spec: ParitySpec
    model: ParityTransformer  # the plain module: checkpoints hold its state_dict
    forward: torch.nn.Module  # `model` through torch.compile on CUDA, else `model`
    optimizer: torch.optim.AdamW
    x_all: torch.Tensor  # the training set's token rows, on the device
    y_all: torch.Tensor  # their answers (0 or 1)
    generator: torch.Generator  # the sample order, curriculum and epochs; checkpointed
    device: torch.device
    total_steps: int  # curriculum and every epoch: where the cosine reaches lr / 10

    def lr(self, step: int) -> float:
        """The rate of optimizer step `step`: warm-up, then a cosine to lr / 10 at the last step (or
        constant at lr)."""
        t = self.spec.training
        decay_steps = None if t.lr_schedule == "constant" else max(self.total_steps, t.warmup_steps + 1)
        return lr_at(step, lr=t.lr, min_lr=0.1 * t.lr, warmup_steps=t.warmup_steps, decay_steps=decay_steps)

    def step(self, rows: torch.Tensor, step: int) -> torch.Tensor:
        """Optimizer step `step` on the training rows `rows`; their mean loss, on the device (no sync)."""
        t = self.spec.training
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda" and t.precision == "bfloat16"):
            logits = self.forward(self.x_all[rows].long())
        loss = F.cross_entropy(logits.float(), self.y_all[rows])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        return loss.detach()


def setup_parity(spec: ParitySpec, tasks: parity.ParityTasks, point: Point, device) -> ParitySetup:
    """The training set (on the device), model, optimizer and sample order of one point."""
    d, t = spec.data, spec.training
    torch.manual_seed(point.seed)
    tokens, answers = parity.training_set(tasks, point.data_size, d.unmasked_fraction, d.mask_min, d.mask_max, d.seed)
    x_all = torch.from_numpy(tokens).to(device)
    y_all = torch.from_numpy(answers.astype(np.int64)).to(device)
    model = build_model(spec, tasks).to(device)
    # static shapes: one graph for the full batches, one more for a last partial batch (none when
    # data_size is a multiple of batch_size); no dynamic-shape graphs, which are slower
    forward = compile_static(model) if t.compile and device.type == "cuda" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    return ParitySetup(spec=spec, model=model, forward=forward, optimizer=optimizer, x_all=x_all, y_all=y_all,
                       generator=torch.Generator(device="cpu").manual_seed(point.seed), device=device,
                       total_steps=t.curriculum_steps + math.ceil(len(tokens) / t.batch_size) * t.epochs)


# --- The loop ---------------------------------------------------------------------------------


@dataclass
class ParityState:
    """Where a parity trial stands: what a checkpoint restores besides the weights, the optimizer
    and the sample order."""

    step: int = 0
    epoch: int = 0  # the last finished epoch
    train_loss: float = math.nan
    trace: list = field(default_factory=list)  # (step, mean loss of the last trace_every steps, seconds since the start)


class LossTrace:
    """The mean loss of every `every` steps, kept in `lines` and printed (one device sync each): the
    way to see when the loss leaves the ln 2 plateau inside an epoch. A time budget (`max_seconds`)
    is checked at these points only. `every` 0: nothing is traced."""

    def __init__(self, label: str, every: int, max_seconds: Optional[float], started: float, lines: list,
                 device: torch.device):
        self.label, self.every, self.max_seconds, self.started, self.lines = label, every, max_seconds, started, lines
        self.window = torch.zeros((), device=device)

    def add(self, step: int, loss: torch.Tensor) -> bool:
        """Count the loss of optimizer step `step`; True when the time budget has run out."""
        if not self.every:
            return False
        self.window.add_(loss)
        if step % self.every:
            return False
        self.lines.append((step, float(self.window) / self.every, time.perf_counter() - self.started))
        self.window.zero_()
        print(f"{self.label} step {step}: loss {self.lines[-1][1]:.4f} ({self.lines[-1][2]:.0f} s)", flush=True)
        return self.max_seconds is not None and self.lines[-1][2] > self.max_seconds


def _take_steps(run: ParitySetup, state: ParityState, batches: Iterable[torch.Tensor], trace: LossTrace,
                summed: torch.Tensor) -> tuple[int, bool]:
    """One optimizer step per batch of training rows, each loss times its rows added to `summed`;
    (samples seen, whether the time budget ran out)."""
    seen = 0
    for rows in batches:
        loss = run.step(rows, state.step)
        summed.add_(loss * len(rows))
        state.step += 1
        seen += len(rows)
        if trace.add(state.step, loss):
            return seen, True
    return seen, False


def _curriculum_batches(run: ParitySetup, tasks: parity.ParityTasks) -> Iterator[torch.Tensor]:
    """Endless whole batches of the nearest tasks' training rows, reshuffled at each pass."""
    t = run.spec.training
    # the nearest tasks first: on CPU proxies (16 bits, 16 tasks) half the tasks for 300 steps, then
    # all, learnt 9-12 of 16 tasks where all from the start learnt 0-3 in the same steps
    subset = curriculum_rows(run.x_all, t.curriculum_tasks, tasks.n_tasks)
    if len(subset) < t.batch_size:
        raise ValueError(f"training.curriculum_tasks: {len(subset)} training samples of the nearest tasks, fewer "
                         f"than one batch of {t.batch_size}")
    cursor = len(subset)
    while True:
        if cursor + t.batch_size > len(subset):  # whole batches only: one static shape under compile
            subset, cursor = subset[torch.randperm(len(subset), generator=run.generator).to(run.device)], 0
        yield subset[cursor:cursor + t.batch_size]
        cursor += t.batch_size


def _epoch_batches(run: ParitySetup) -> Iterator[torch.Tensor]:
    """The batches of one pass over the training set, in a fresh order."""
    n, batch_size = len(run.x_all), run.spec.training.batch_size
    order = torch.randperm(n, generator=run.generator).to(run.device)
    return (order[start:start + batch_size] for start in range(0, n, batch_size))


def _resume(run: ParitySetup, resume_dir: str, label: str) -> ParityState:
    """The state saved in `resume_dir`, with the weights, the optimizer and the sample order
    restored; a fresh state when the folder holds no readable checkpoint."""
    saved = load_checkpoint(resume_dir, CHECKPOINT_FILE, run.model, run.optimizer)
    if saved is None:
        return ParityState()
    run.generator.set_state(saved["generator"])
    state = ParityState(saved["step"], saved["epoch"], saved["train_loss"], list(saved["trace"]))
    print(f"{label}: going on from step {state.step} (epoch {state.epoch} of {run.spec.training.epochs})", flush=True)
    return state


def train(spec: ParitySpec, tasks: parity.ParityTasks, point: Point, device, report=None, trace_every: int = 0,
          max_seconds: float | None = None, resume_dir: Optional[str] = None) -> Trained:
    """Train one model on the point's training set; `report` gets one row per finished epoch but the
    last, with a checkpoint folder at most every `training.checkpoint_every_s`. `resume_dir` (such a
    folder) goes on after the epoch it saved: the same weights, optimizer state and sample order as
    an uninterrupted run. `trace_every` > 0 prints (and keeps) the mean loss of every `trace_every`
    steps, costing one device sync each (`LossTrace`). `max_seconds` stops early (benchmarks)."""
    t = spec.training
    run = setup_parity(spec, tasks, point, device)
    started = time.perf_counter()
    state = _resume(run, resume_dir, point.trial_id) if resume_dir else ParityState()
    checkpointed = time.perf_counter()
    trace = LossTrace(point.trial_id, trace_every, max_seconds, started, state.trace, device)
    summed = torch.zeros((), device=device)
    run.model.train()
    batches = _curriculum_batches(run, tasks) if t.curriculum_steps else iter(())
    seen, stopped = _take_steps(run, state, itertools.islice(batches, max(t.curriculum_steps - state.step, 0)),
                                trace, summed)
    status, epoch = ("stopped" if stopped else "ok"), state.epoch
    for epoch in range(state.epoch + 1, t.epochs + 1):
        if status == "ok":
            summed.zero_()
            epoch_seen, stopped = _take_steps(run, state, _epoch_batches(run), trace, summed)
            seen, status = seen + epoch_seen, ("stopped" if stopped else "ok")
        if status == "stopped":
            state.train_loss = trace.lines[-1][1]
            break
        state.train_loss = float(summed) / len(run.x_all)  # one device sync per epoch
        if not math.isfinite(state.train_loss):
            status = "diverged"
            break
        state.epoch = epoch
        if epoch < t.epochs and report is not None:
            metrics = {"point": point.trial_id, "status": "running", "epoch": epoch, "train_loss": state.train_loss,
                       "lr": run.lr(state.step - 1), "elapsed_s": time.perf_counter() - started}
            if time.perf_counter() - checkpointed < t.checkpoint_every_s:
                report(metrics)
                continue
            report_with_checkpoint(report, metrics, CHECKPOINT_FILE, run.model, run.optimizer,
                                   {"generator": run.generator.get_state(), **asdict(state)})
            checkpointed = time.perf_counter()
    return Trained(run.model, status, epoch, state.step, seen, state.train_loss, time.perf_counter() - started,
                   state.trace)


def run_parity_trial(point: Point, report, resume_dir: Optional[str] = None) -> None:
    """Train the point's model (data_size samples, seed), going on from `resume_dir`'s checkpoint
    when given, and evaluate it at every context length."""
    spec = point.spec
    t = spec.training
    device = pick_device(t.device)
    if device.type == "cpu":
        torch.set_num_threads(t.threads or max(1, int(spec.resources.cpus_per_trial)))
    tasks = spec_tasks(spec)
    # a loss line 8 times an epoch on GPUs (where an epoch is long and the plateau is the question)
    per_epoch = math.ceil(point.data_size / t.batch_size)
    trace_every = max(per_epoch // 8, 1) if device.type == "cuda" else 0
    started = time.perf_counter()
    run = train(spec, tasks, point, device, report, trace_every=trace_every, resume_dir=resume_dir)
    model, status = run.model, run.status
    fixed = {"sweep": spec.name, "model": point.trial_id, "config_hash": point.config_hash,
             "data_size": point.data_size, "seed": point.seed}
    ce_rows, spectra_rows = evaluate(model, spec, tasks, device, fixed) if status == "ok" else ([], [])
    gaps = [abs(r["gap"]) for r in ce_rows]
    report({"point": point.trial_id, "status": status, "epoch": run.epoch, "train_loss": run.train_loss,
            "final_train_loss": run.train_loss, "mean_abs_gap": float(np.mean(gaps)) if gaps else math.nan,
            "max_abs_gap": float(np.max(gaps)) if gaps else math.nan, "steps": run.step,
            "wall_s": time.perf_counter() - started, "train_wall_s": run.train_wall,
            "samples_per_s": run.seen / max(run.train_wall, 1e-9),
            "n_params": sum(p.numel() for p in model.parameters()),
            "ce_rows": json.dumps(ce_rows), "spectra_rows": json.dumps(spectra_rows)})
