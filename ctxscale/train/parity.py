"""Training and evaluating one parity model (a trial of `experiment: parity`): train on the
masked training set, then evaluate at every context length of the grid.

Ray-free: `run_parity_trial(point, report, resume_dir)` calls `report(metrics)` once per epoch
(status running; with a checkpoint folder at most every `training.checkpoint_every_s`) and once at
the end (status ok or diverged) with the `ce` and `spectra` rows of every context length as JSON
text. Given a checkpoint folder, it goes on from the end of the epoch saved there.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data import parity_tasks as parity
from ..device import pick_device
from ..measure.kde import kde_entropy
from ..measure.spectra import pca_eigenvalues, spectrum_measures, usable_count
from ..models.gpt import GPTConfig
from ..models.parity_transformer import ParityTransformer
from ..spec.parity import ParitySpec
from ..spec.point import Point
from .checkpoint import read_checkpoint

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


def learning_rate(step: int, total: int, spec: ParitySpec) -> float:
    """Linear warmup, then cosine from lr to lr / 10 at the last step, or constant at lr."""
    t = spec.training
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    progress = (step - t.warmup_steps) / max(total - t.warmup_steps, 1)
    return t.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


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


def _save_checkpoint(folder: Path, model, optimizer, generator: torch.Generator, step: int, epoch: int,
                     train_loss: float, trace: list) -> None:
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "step": step, "epoch": epoch, "train_loss": train_loss, "trace": trace}, folder / CHECKPOINT_FILE)


def _load_checkpoint(resume_dir: str, model, optimizer, generator: torch.Generator) -> Optional[dict]:
    """Restore the weights, the optimizer and the sample order's generator; None (a fresh start) when
    the folder holds no readable checkpoint."""
    state = read_checkpoint(Path(resume_dir) / CHECKPOINT_FILE)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state


def train(spec: ParitySpec, tasks: parity.ParityTasks, point: Point, device, report=None, trace_every: int = 0,
          max_seconds: float | None = None, resume_dir: Optional[str] = None) -> Trained:
    """Train one model on the point's training set; `report` gets one row per finished epoch but the
    last, with a checkpoint folder at most every `training.checkpoint_every_s`. `resume_dir` (such a
    folder) goes on after the epoch it saved: the same weights, optimizer state and sample order as
    an uninterrupted run. `trace_every` > 0 prints (and keeps) the mean loss of every `trace_every`
    steps, costing one device sync each: the way to see when the loss leaves the ln 2 plateau inside
    an epoch. `max_seconds` stops early (benchmarks)."""
    d, t = spec.data, spec.training
    torch.manual_seed(point.seed)
    tokens, answers = parity.training_set(tasks, point.data_size, d.unmasked_fraction, d.mask_min, d.mask_max, d.seed)
    x_all = torch.from_numpy(tokens).to(device)
    y_all = torch.from_numpy(answers.astype(np.int64)).to(device)
    model = build_model(spec, tasks).to(device)
    # static shapes: one graph for the full batches, one more for a last partial batch (none when
    # data_size is a multiple of batch_size); no dynamic-shape graphs, which are slower
    forward = torch.compile(model, dynamic=False) if t.compile and device.type == "cuda" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    autocast = device.type == "cuda" and t.precision == "bfloat16"
    n = len(tokens)
    per_epoch = math.ceil(n / t.batch_size)
    total = t.curriculum_steps + per_epoch * t.epochs
    generator = torch.Generator(device="cpu").manual_seed(point.seed)
    started, step, seen, status, train_loss, epoch = time.perf_counter(), 0, 0, "ok", math.nan, 0
    trace, window = [], torch.zeros((), device=device)
    saved = _load_checkpoint(resume_dir, model, optimizer, generator) if resume_dir else None
    if saved is not None:
        step, epoch, train_loss, trace = saved["step"], saved["epoch"], saved["train_loss"], list(saved["trace"])
        print(f"{point.trial_id}: going on from step {step} (epoch {epoch} of {t.epochs})", flush=True)
    checkpointed = time.perf_counter()

    def train_step(rows: torch.Tensor) -> bool:
        """One optimizer step on `rows`; True when `max_seconds` has passed (checked at trace points)."""
        nonlocal step, seen
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, spec)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = forward(x_all[rows].long())
        loss = F.cross_entropy(logits.float(), y_all[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        summed.add_(loss.detach() * len(rows))
        step += 1
        seen += len(rows)
        if trace_every:
            window.add_(loss.detach())
            if step % trace_every == 0:
                trace.append((step, float(window) / trace_every, time.perf_counter() - started))
                window.zero_()
                print(f"{point.trial_id} step {step}: loss {trace[-1][1]:.4f} ({trace[-1][2]:.0f} s)", flush=True)
                return max_seconds is not None and trace[-1][2] > max_seconds
        return False

    summed = torch.zeros((), device=device)
    model.train()
    # the nearest tasks first: on CPU proxies (16 bits, 16 tasks) half the tasks for 300 steps, then
    # all, learnt 9-12 of 16 tasks where all from the start learnt 0-3 in the same steps
    subset = curriculum_rows(x_all, t.curriculum_tasks, tasks.n_tasks) if t.curriculum_steps else None
    if subset is not None and len(subset) < t.batch_size:
        raise ValueError(f"training.curriculum_tasks: {len(subset)} training samples of the nearest tasks, fewer "
                         f"than one batch of {t.batch_size}")
    cursor = len(subset) if subset is not None else 0
    while step < t.curriculum_steps and status != "stopped":
        if cursor + t.batch_size > len(subset):  # whole batches only: one static shape under compile
            subset, cursor = subset[torch.randperm(len(subset), generator=generator).to(device)], 0
        if train_step(subset[cursor:cursor + t.batch_size]):
            status = "stopped"
        cursor += t.batch_size
    for epoch in range(epoch + 1, t.epochs + 1):
        if status == "stopped":
            train_loss = trace[-1][1]
            break
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        summed.zero_()
        for start in range(0, n, t.batch_size):
            if train_step(order[start:start + t.batch_size]):
                status = "stopped"
                break
        if status == "stopped":
            train_loss = trace[-1][1]
            break
        train_loss = float(summed) / n  # one device sync per epoch
        if not math.isfinite(train_loss):
            status = "diverged"
            break
        if epoch < t.epochs and report is not None:
            metrics = {"point": point.trial_id, "status": "running", "epoch": epoch, "train_loss": train_loss,
                       "lr": learning_rate(step - 1, total, spec), "elapsed_s": time.perf_counter() - started}
            if time.perf_counter() - checkpointed < t.checkpoint_every_s:
                report(metrics)
                continue
            with tempfile.TemporaryDirectory(prefix="ctxscale-parity-") as folder:
                _save_checkpoint(Path(folder), model, optimizer, generator, step, epoch, train_loss, trace)
                report(metrics, checkpoint_dir=folder)
            checkpointed = time.perf_counter()
    return Trained(model, status, epoch, step, seen, train_loss, time.perf_counter() - started, trace)


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
