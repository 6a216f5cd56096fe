"""The synthetic experiment's training loop: one model, one (context length, data size, seed).

Ray-agnostic: it takes the trial description, the generated data set and a `report` callable,
and runs the same way alone, in a Ray Tune trial or in each worker of a Ray Train DDP run (it
only asks torch.distributed whether a process group exists). `setup_synthetic` builds what a
trial trains with; `train_synthetic` runs the epochs on it.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import SyntheticSet, bayes_risk, unpack_bits
from ..device import pick_device
from ..models.mlp import BiMLP, build_model
from ..spec.synthetic import SyntheticData, SyntheticModel, SyntheticTraining
from .distributed import all_reduce, data_parallel, rank_and_world

Report = Callable[..., None]


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy in nats, computed from logits (log-sum-exp safe for any logit)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


class _Split:
    """One split's rows on the device: bits as uint8, the task index, the labels.

    `encoding` is the spec's `data.encoding`: 'binary' feeds the bits as 0/1 (the study),
    'signed' as -1/+1.
    """

    def __init__(self, bits: np.ndarray, labels: np.ndarray, task_index: np.ndarray,
                 context_length: int, num_tasks: int, device: torch.device, encoding: str = "binary"):
        if encoding not in ("binary", "signed"):
            raise ValueError(f"encoding must be 'binary' or 'signed', got {encoding!r}")
        self.bits = torch.from_numpy(unpack_bits(bits, context_length)).to(device)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)
        self.task_index = torch.from_numpy(np.asarray(task_index, dtype=np.int64)).to(device)
        self.num_tasks = num_tasks
        self.signed = encoding == "signed"

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor):
        bits = self.bits[rows].float()
        if self.signed:
            bits = bits.mul_(2.0).sub_(1.0)
        control = F.one_hot(self.task_index[rows], self.num_tasks).float()
        return bits, control, self.labels[rows]


@torch.no_grad()
def _evaluate(model, split: _Split, rank: int, world: int, device,
              chunk: int = 65_536) -> tuple[float, list[float]]:
    """Mean BCE over the split, and the mean BCE of each task (in the task list's order).

    Each rank evaluates every world-th row; the per-task sums and counts are summed over ranks,
    so the result is the whole split's whatever the world size.
    """
    model.eval()
    task_sum = torch.zeros(split.num_tasks, dtype=torch.float64, device=device)
    task_count = torch.zeros(split.num_tasks, dtype=torch.float64, device=device)
    rows = torch.arange(rank, len(split), world, device=device)
    for start in range(0, len(rows), chunk):
        chunk_rows = rows[start:start + chunk]
        bits, control, labels = split.batch(chunk_rows)
        losses = F.binary_cross_entropy_with_logits(model(bits, control), labels, reduction="none")
        tasks = split.task_index[chunk_rows]
        task_sum.index_add_(0, tasks, losses.double())
        task_count.index_add_(0, tasks, torch.ones_like(losses, dtype=torch.float64))
    model.train()
    summed = all_reduce(task_sum.tolist() + task_count.tolist(), device)
    sums, counts = summed[:split.num_tasks], summed[split.num_tasks:]
    # a task with no validation row (fewer rows than tasks) has no loss of its own
    per_task = [total / count if count else math.nan for total, count in zip(sums, counts)]
    return sum(sums) / sum(counts), per_task


@torch.no_grad()
def feature_spectrum(model, split: _Split, max_rows: int = 100_000) -> list[float]:
    """PCA eigenvalues (descending) of a Bi-MLP's bits feature over validation rows."""
    rows = torch.arange(min(len(split), max_rows), device=split.labels.device)
    bits, _, _ = split.batch(rows)
    features = model.features(bits).double()
    centred = features - features.mean(dim=0)
    covariance = centred.T @ centred / max(len(rows) - 1, 1)
    return torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0).tolist()


@dataclass
class SyntheticSetup:
    """What one synthetic trial trains with on this rank, built by `setup_synthetic`."""

    training: SyntheticTraining
    model: torch.nn.Module  # the plain module: evaluation runs it, the best weights are its state_dict
    net: torch.nn.Module  # what a training step runs: `model`, under DDP when world > 1
    optimizer: torch.optim.Optimizer
    train: _Split  # the first data_size training rows, on the device
    val: _Split
    order: torch.Generator  # shuffles the training rows each epoch, alike on every rank
    context_length: int
    device: torch.device
    rank: int
    world: int


def setup_synthetic(trial: dict, data: SyntheticSet) -> SyntheticSetup:
    """Build the splits, model, optimizer and DDP wrapping of one trial (see `run_synthetic_trial`)."""
    spec = trial["spec"]
    training = SyntheticTraining.model_validate(spec["training"])
    model_cfg = SyntheticModel.model_validate(spec["model"])
    encoding = SyntheticData.model_validate(spec["data"]).encoding
    context_length, seed = trial["context_length"], trial["seed"]
    rank, world = rank_and_world()
    device = pick_device(training.device)
    torch.manual_seed(seed)
    num_tasks = len(data.tasks)
    model = build_model(model_cfg.kind, context_length, num_tasks, hidden=model_cfg.hidden,
                        negative_slope=model_cfg.negative_slope, bits_hidden=model_cfg.bits_hidden,
                        feature_dim=model_cfg.feature_dim, head_hidden=model_cfg.head_hidden,
                        feature_activation=model_cfg.feature_activation).to(device)
    return SyntheticSetup(
        training=training, model=model, net=data_parallel(model, device),
        optimizer=torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay),
        train=_Split(*data.train(trial["data_size"]), context_length, num_tasks, device, encoding),
        val=_Split(*data.val(), context_length, num_tasks, device, encoding),
        order=torch.Generator(device="cpu").manual_seed(seed),
        context_length=context_length, device=device, rank=rank, world=world,
    )


def run_synthetic_trial(trial: dict, report: Report, data: SyntheticSet) -> dict:
    """Train one model to its best validation loss and return the last reported metrics.

    `trial` holds `spec` (the sweep spec as a dict), `context_length`, `data_size`, `seed`.
    `report(metrics)` is called once per epoch; the last call has `status` ok or diverged.
    """
    return train_synthetic(setup_synthetic(trial, data), report, data)


def train_synthetic(run: SyntheticSetup, report: Report, data: SyntheticSet) -> dict:
    """The epoch loop behind `run_synthetic_trial`: train, evaluate, keep the best weights, stop
    after `patience` epochs without a better validation loss, at `max_epochs` or on divergence."""
    training, rank, world, device = run.training, run.rank, run.world, run.device
    data_size = len(run.train)
    steps_per_epoch = math.ceil(data_size / training.batch_size)
    best_val_loss, best_epoch, best_state, since_best = math.inf, 0, None, 0
    best_task_losses: list[float] = [math.nan] * len(data.tasks)
    started, train_seconds, rows_seen = time.perf_counter(), 0.0, 0
    metrics: dict = {}
    for epoch in range(1, training.max_epochs + 1):
        epoch_start = time.perf_counter()
        permutation = torch.randperm(data_size, generator=run.order).to(device)
        # summed on the device: a .item() per step would stall the GPU on every batch
        loss_sum, loss_rows = torch.zeros((), device=device, dtype=torch.float64), 0
        for step in range(steps_per_epoch):
            rows = permutation[step * training.batch_size:(step + 1) * training.batch_size][rank::world]
            bits, control, labels = run.train.batch(rows)
            loss = bce_loss(run.net(bits, control), labels)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if training.grad_clip is not None:
                # under DDP the gradients are already averaged over ranks: every rank clips alike
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), training.grad_clip)
            run.optimizer.step()
            loss_sum += loss.detach() * len(rows)
            loss_rows += len(rows)
        train_seconds += time.perf_counter() - epoch_start
        loss_sum, loss_rows, rows_epoch = all_reduce([loss_sum.item(), loss_rows, loss_rows], device)
        rows_seen += rows_epoch
        train_loss = loss_sum / loss_rows
        val_loss, task_losses = _evaluate(run.model, run.val, rank, world, device)
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        if not diverged and val_loss < best_val_loss:
            best_val_loss, best_epoch, since_best = val_loss, epoch, 0
            # the per-task losses of the kept weights come with the evaluation that chose them
            best_task_losses = task_losses
            best_state = copy.deepcopy(run.model.state_dict())
        else:
            since_best += 1
        done = diverged or since_best >= training.patience or epoch == training.max_epochs
        metrics = {
            "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
            "best_val_loss": best_val_loss, "best_epoch": best_epoch,
            "samples_per_s": rows_seen / max(train_seconds, 1e-9),
            "wall_s": time.perf_counter() - started,
            "status": ("diverged" if diverged else "ok") if done else "running",
        }
        if done:
            metrics["final_train_loss"] = train_loss
            metrics["world_size"] = world
            # the exact Bayes risk of this context length, so analysis can show the gap to it
            metrics["bayes_risk"] = float(bayes_risk(data.tasks, run.context_length, data.string_length))
            metrics["string_length"] = data.string_length
            metrics["tasks"] = json.dumps(np.asarray(data.tasks).tolist())
            # which tasks the best weights learnt: validation BCE per task, in the task list's order
            metrics["task_val_loss"] = best_task_losses
            if isinstance(run.model, BiMLP) and best_state is not None:
                run.model.load_state_dict(best_state)
                metrics["feature_eigenvalues"] = feature_spectrum(run.model, run.val)
        report(metrics)
        if done:
            break
    return metrics
