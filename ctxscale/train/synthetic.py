"""The synthetic experiment's training loop: a group of (context length, data size, seed) points
that share data size and seed, trained as one stacked model (`ctxscale.train.packed`).

A group of one is an ordinary trial; the loop is the same. Members share the batch order (it
depends only on data size and seed) and nothing else: each has its own initial values, AdamW
state, gradient clipping, early stopping, best weights and reports. A member that stops leaves
the stack; the group ends when every member has stopped.

Ray-agnostic: it takes the points, the generated data set and a `report` callable, and runs the
same way alone, in a Ray Tune trial or in each worker of a Ray Train DDP run (it only asks
torch.distributed whether a process group exists). `setup_synthetic` builds what a group trains
with; `train_synthetic` runs the epochs on it.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import SyntheticSet, bayes_risk, packed_prefix
from ..device import pick_device
from ..models.mlp import BiMLP, build_model
from ..spec.point import Point
from ..spec.synthetic import SyntheticTraining
from .distributed import all_reduce, data_parallel, rank_and_world
from . import fused_eval
from .packed import StackedModel, clip_grad_norm_per_member, keep_members

Report = Callable[..., None]


def member_bce_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each member's mean binary cross-entropy in nats, from logits (log-sum-exp safe for any
    logit): logits (M, B), labels (B,) -> (M,)."""
    return F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none").mean(dim=-1)


def _unpacked_on(device: torch.device, bits: np.ndarray, context_length: int) -> torch.Tensor:
    """`unpack_bits(bits, context_length)` as a uint8 tensor on `device`: the rows cross to it
    packed (an eighth of the bytes) and are unpacked there (on the CPU, numpy took 0.43 s for 2M
    rows of 94 bits on one core; a trial starting on a GPU waited for it twice, once per split)."""
    # a writable copy of read-only rows (a SyntheticSet's arrays are, mapped from the cache or not):
    # torch warns on any tensor over read-only memory, although nothing here writes to it
    packed = torch.from_numpy(np.require(packed_prefix(bits, context_length), requirements="CW")).to(device)
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)  # big-endian, as packed
    return ((packed.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :context_length].contiguous()


class _Split:
    """One split's rows on the device: bits as uint8, the task index, the labels.

    `encoding` is the spec's `data.encoding`: 'binary' feeds the bits as 0/1 (the study),
    'signed' as -1/+1.
    """

    def __init__(self, bits: np.ndarray, labels: np.ndarray, task_index: np.ndarray,
                 context_length: int, num_tasks: int, device: torch.device, encoding: str = "binary"):
        if encoding not in ("binary", "signed"):
            raise ValueError(f"encoding must be 'binary' or 'signed', got {encoding!r}")
        self.bits = _unpacked_on(device, bits, context_length)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)
        self.task_index = torch.from_numpy(np.asarray(task_index, dtype=np.int64)).to(device)
        self.num_tasks = num_tasks
        self.signed = encoding == "signed"

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, rows: int) -> "_Split":
        """The first `rows` rows, sharing this split's device memory."""
        prefix = copy.copy(self)
        prefix.bits, prefix.labels, prefix.task_index = self.bits[:rows], self.labels[:rows], self.task_index[:rows]
        return prefix

    def batch(self, rows: torch.Tensor):
        bits = self.bits[rows].float()
        if self.signed:
            bits = bits.mul_(2.0).sub_(1.0)
        control = F.one_hot(self.task_index[rows], self.num_tasks).float()
        return bits, control, self.labels[rows]


# What this process last moved to the device, per split: a worker process (a Tune actor that Tune
# reuses from trial to trial) unpacks and sends the validation rows once, and the training rows
# once for its largest data size; later groups slice them (`_on_device`).
_DEVICE_SPLITS: dict[str, tuple[tuple, _Split]] = {}


def _on_device(data: SyntheticSet, split: str, rows: int, width: int, device: torch.device,
               encoding: str) -> _Split:
    """The first `rows` rows of `data`'s 'train' or 'val' split, `width` bits each, on `device`."""
    key = (data.train_rows, data.val_rows, data.seed, data.string_length, data.tasks.tobytes(),
           width, str(device), encoding)
    held = _DEVICE_SPLITS.get(split)
    if held is None or held[0] != key or len(held[1]) < rows:
        _DEVICE_SPLITS.pop(split, None)  # free the device memory before taking more
        arrays = data.train(rows) if split == "train" else data.val()
        held = key, _Split(*arrays, width, len(data.tasks), device, encoding)
        _DEVICE_SPLITS[split] = held
    return held[1].first(rows)


# rows x members evaluated at once: large enough that a chunk's products keep a GPU busy, small
# enough that its activations stay a few GiB with four trials on one GPU
_EVAL_MEMBER_ROWS = {"cuda": 1 << 21, "cpu": 1 << 17}


@torch.no_grad()
def _evaluate(model, split: _Split, rank: int, world: int, device,
              chunk: Optional[int] = None, bf16: bool = False) -> list[tuple[float, list[float]]]:
    """Each model's mean BCE over the split and its mean BCE per task (in the task list's order):
    one pair per member of a stacked model, one pair for a plain model.

    Each rank evaluates every world-th row; the per-task sums and counts are summed over ranks,
    so the result is the whole split's whatever the world size. Sums stay on the device until
    the end: one host synchronisation per evaluation. `chunk`: rows per forward pass (default:
    `_EVAL_MEMBER_ROWS` over the number of members). `bf16`: the products under bfloat16 autocast
    (`training.precision`); the losses and sums are float32 and float64 either way. Where
    `fused_eval.choose_pass` says (by default the study's MLP on CUDA in bfloat16) one kernel
    computes every row's losses instead of the layer-by-layer pass (the same numbers up to
    bfloat16 rounding, with far less memory traffic).
    """
    model.eval()
    members = len(getattr(model, "context_lengths", [None]))
    chunk = chunk or max(4096, _EVAL_MEMBER_ROWS.get(device.type, 1 << 17) // members)
    task_sum = torch.zeros(members, split.num_tasks, dtype=torch.float64, device=device)
    task_count = torch.zeros(split.num_tasks, dtype=torch.float64, device=device)
    rows = torch.arange(rank, len(split), world, device=device)
    # the study's MLP on a GPU in bfloat16: one kernel for all layers and the loss (fused_eval)
    way = fused_eval.choose_pass(model, device, bf16) if isinstance(model, StackedModel) else "eager"
    dtype = torch.bfloat16 if bf16 else torch.float32
    all_losses = None
    if way == "fused":  # None: the kernel failed (and warned): the eager pass instead
        all_losses = fused_eval.member_losses(model, split.bits, split.task_index, split.labels, rows,
                                              split.signed, dtype)
    elif way == "lean":
        all_losses = fused_eval.lean_member_losses(model, split.bits, split.task_index, split.labels, rows,
                                                   split.signed, chunk, dtype)
    fused = all_losses is not None
    for start in range(0, len(rows), chunk):
        chunk_rows = rows[start:start + chunk]
        if fused:
            losses = all_losses[:, start:start + chunk]
            control = F.one_hot(split.task_index[chunk_rows], split.num_tasks)
        else:
            bits, control, labels = split.batch(chunk_rows)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(bits, control).reshape(members, len(chunk_rows))
            logits = logits.float()
            losses = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits), reduction="none")
        # per-task sums as a product with the one-hot task matrix: no atomics, the same order every run
        one_hot = control.double()
        task_sum += losses.double() @ one_hot
        task_count += one_hot.sum(dim=0)
    model.train()
    summed = all_reduce(task_sum.flatten().tolist() + task_count.tolist(), device)
    counts = summed[members * split.num_tasks:]
    results = []
    for member in range(members):
        sums = summed[member * split.num_tasks:(member + 1) * split.num_tasks]
        # a task with no validation row (fewer rows than tasks) has no loss of its own
        per_task = [total / count if count else math.nan for total, count in zip(sums, counts)]
        results.append((sum(sums) / sum(counts), per_task))
    return results


@torch.no_grad()
def feature_spectrum(model, split: _Split, context_length: int, max_rows: int = 100_000) -> list[float]:
    """PCA eigenvalues (descending) of a Bi-MLP's bits feature over validation rows (the first
    `context_length` bits of the split's)."""
    rows = torch.arange(min(len(split), max_rows), device=split.labels.device)
    bits, _, _ = split.batch(rows)
    features = model.features(bits[:, :context_length]).double()
    centred = features - features.mean(dim=0)
    covariance = centred.T @ centred / max(len(rows) - 1, 1)
    return torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0).tolist()


@dataclass
class SyntheticSetup:
    """What one group of synthetic points trains with on this rank, built by `setup_synthetic`."""

    training: SyntheticTraining
    points: list[dict]  # one per member, in the stack's order
    model: StackedModel  # the plain module: evaluation runs it, the best weights are slices of it
    net: torch.nn.Module  # what a training step runs: `model`, under DDP when world > 1
    optimizer: torch.optim.Optimizer
    make_optimizer: Callable  # parameters -> the spec's AdamW (the stack shrinks as members stop)
    build_member: Callable[[int], torch.nn.Module]  # context length -> an unpacked model (freshly initialised)
    train: _Split  # the first data_size training rows, as many bits as the longest member sees, on the device
    val: _Split
    order: torch.Generator  # shuffles the training rows each epoch, alike on every rank and member
    device: torch.device
    rank: int
    world: int

    @property
    def bf16(self) -> bool:
        return self.training.precision == "bfloat16"


def train_step(run: SyntheticSetup, rows: torch.Tensor) -> torch.Tensor:
    """One optimizer step of every member on the training rows `rows`; each member's loss (M,)."""
    bits, control, labels = run.train.batch(rows)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits = run.net(bits, control)
    losses = member_bce_losses(logits.float(), labels)  # (M,)
    run.optimizer.zero_grad(set_to_none=True)
    # members share no parameter: each one's gradient is that of its own loss
    losses.sum().backward()
    if run.training.grad_clip is not None:
        # under DDP the gradients are already averaged over ranks: every rank clips alike
        clip_grad_norm_per_member(run.model.parameters(), run.training.grad_clip)
    run.optimizer.step()
    return losses.detach()


def setup_synthetic(points: list[Point], data: SyntheticSet) -> SyntheticSetup:
    """Build the splits, stacked model, optimizer and DDP wrapping of a group of points that share
    `data_size` and `seed` (see `run_synthetic_group`)."""
    spec = points[0].spec
    data_size, seed = points[0].data_size, points[0].seed
    if any((point.data_size, point.seed) != (data_size, seed) for point in points):
        raise ValueError("a packed group shares one data size and seed (they fix the batch order)")
    training, model_cfg, encoding = spec.training, spec.model, spec.data.encoding
    rank, world = rank_and_world()
    device = pick_device(training.device)
    # process-wide, so set for every group: a reused worker process may have run another spec before
    torch.backends.cuda.matmul.allow_tf32 = training.tf32
    num_tasks = len(data.tasks)

    def build_member(context_length: int) -> torch.nn.Module:
        return build_model(model_cfg.kind, context_length, num_tasks, hidden=model_cfg.hidden,
                           negative_slope=model_cfg.negative_slope, bits_hidden=model_cfg.bits_hidden,
                           feature_dim=model_cfg.feature_dim, head_hidden=model_cfg.head_hidden,
                           feature_activation=model_cfg.feature_activation).to(device)

    members = []
    for point in points:
        torch.manual_seed(seed)  # each member starts where its unpacked trial would
        members.append(build_member(point.context_length))
    lengths = [point.context_length for point in points]
    model = StackedModel(members, lengths)

    def make_optimizer(parameters):
        # fused (one kernel per step) on CUDA only: the CPU's fused kernel rounds an element differently
        # depending on where it falls in the tensor (vector body or scalar tail), so a member's numbers
        # would depend on the stack's size. On the CPU the multi-tensor path: the same operations as
        # the one-tensor path (the same numbers, measured), with less Python per step
        cuda = device.type == "cuda"
        return torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay,
                                 fused=cuda, foreach=not cuda)

    width = max(lengths)
    return SyntheticSetup(
        training=training, points=list(points), model=model, net=data_parallel(model, device),
        optimizer=make_optimizer(model.parameters()), make_optimizer=make_optimizer, build_member=build_member,
        train=_on_device(data, "train", data_size, width, device, encoding),
        val=_on_device(data, "val", data.val_rows, width, device, encoding),
        order=torch.Generator(device="cpu").manual_seed(seed), device=device, rank=rank, world=world,
    )


def run_synthetic_group(points: list[Point], report: Report, data: SyntheticSet) -> list[dict]:
    """Train every point of a group to its best validation loss; return each one's last metrics.

    Each point (`ctxscale.spec.point.Point`) holds the typed spec, `trial_id`, `context_length`, `data_size`,
    `seed`. `report(epoch_metrics)` is called once per epoch with a list of metrics, one per
    member still training, each naming its member's trial id in `point`; a member's last metrics
    have `status` ok or diverged. (One call per epoch rather than per member: under Ray Tune each
    call is a round trip to the driver.)
    """
    return train_synthetic(setup_synthetic(points, data), report, data)


def run_synthetic_trial(trial: Point, report: Report, data: SyntheticSet) -> dict:
    """One point alone (a group of one): `report(metrics)` once per epoch; its last metrics."""
    (metrics,) = run_synthetic_group([trial], lambda epoch_metrics: report(*epoch_metrics), data)
    return metrics


def train_synthetic(run: SyntheticSetup, report: Report, data: SyntheticSet) -> list[dict]:
    """The epoch loop behind `run_synthetic_group`: train, evaluate, keep each member's best weights,
    stop a member after `patience` epochs without a better validation loss, at `max_epochs` or on
    divergence. `wall_s` of a member is the group's wall time up to that evaluation."""
    training, rank, world, device = run.training, run.rank, run.world, run.device
    data_size, size = len(run.train), len(run.points)
    steps_per_epoch = math.ceil(data_size / training.batch_size)
    active = list(range(size))  # the member (index into run.points) of each row of the stack
    best_val_loss, best_epoch, since_best = [math.inf] * size, [0] * size, [0] * size
    best_params: list = [None] * size
    best_task_losses = [[math.nan] * len(data.tasks) for _ in range(size)]
    finals: list[dict] = [{} for _ in range(size)]
    started, train_seconds, rows_seen = time.perf_counter(), 0.0, 0
    for epoch in range(1, training.max_epochs + 1):
        epoch_start = time.perf_counter()
        permutation = torch.randperm(data_size, generator=run.order).to(device)
        # summed on the device: a .item() per step would stall the GPU on every batch
        loss_sum, loss_rows = torch.zeros(len(active), device=device, dtype=torch.float64), 0
        for step in range(steps_per_epoch):
            rows = permutation[step * training.batch_size:(step + 1) * training.batch_size][rank::world]
            loss_sum += train_step(run, rows) * len(rows)
            loss_rows += len(rows)
        train_seconds += time.perf_counter() - epoch_start
        reduced = all_reduce(loss_sum.tolist() + [loss_rows], device)
        member_loss_sums, loss_rows = reduced[:-1], reduced[-1]
        rows_seen += loss_rows
        evaluations = _evaluate(run.model, run.val, rank, world, device, bf16=run.bf16)
        stopped, epoch_metrics = [], []
        for row, member in enumerate(active):
            train_loss = member_loss_sums[row] / loss_rows
            val_loss, task_losses = evaluations[row]
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            if not diverged and val_loss < best_val_loss[member]:
                best_val_loss[member], best_epoch[member], since_best[member] = val_loss, epoch, 0
                # the per-task losses of the kept weights come with the evaluation that chose them
                best_task_losses[member] = task_losses
                best_params[member] = run.model.member_parameters(row)
            else:
                since_best[member] += 1
            done = diverged or since_best[member] >= training.patience or epoch == training.max_epochs
            metrics = {
                "point": run.points[member].trial_id,
                "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                "best_val_loss": best_val_loss[member], "best_epoch": best_epoch[member],
                "samples_per_s": rows_seen / max(train_seconds, 1e-9),
                "wall_s": time.perf_counter() - started,
                "status": ("diverged" if diverged else "ok") if done else "running",
            }
            if done:
                metrics.update(_final_metrics(run, member, train_loss, best_task_losses[member],
                                              best_params[member], world, data))
                finals[member] = metrics
                stopped.append(row)
            epoch_metrics.append(metrics)
        report(epoch_metrics)
        if len(stopped) == len(active):
            break
        if stopped:
            kept = [row for row in range(len(active)) if row not in stopped]
            run.optimizer = keep_members(run.model, run.optimizer, kept, run.make_optimizer)
            run.net = data_parallel(run.model, device)  # the stack's parameters are new tensors
            active = [active[row] for row in kept]
    return finals


def _final_metrics(run: SyntheticSetup, member: int, train_loss: float, task_losses: list[float],
                   params, world: int, data: SyntheticSet) -> dict:
    """What a member's last report adds: about the data and its best weights."""
    context_length = run.points[member].context_length
    metrics = {
        "final_train_loss": train_loss,
        "world_size": world,
        # the exact Bayes risk of this context length, so analysis can show the gap to it
        "bayes_risk": float(bayes_risk(data.tasks, context_length, data.string_length)),
        "string_length": data.string_length,
        "tasks": json.dumps(np.asarray(data.tasks).tolist()),
        # which tasks the best weights learnt: validation BCE per task, in the task list's order
        "task_val_loss": task_losses,
    }
    if isinstance(run.model.template, BiMLP) and params is not None:
        model = run.build_member(context_length)
        model.load_state_dict(run.model.unstacked(params, context_length))
        metrics["feature_eigenvalues"] = feature_spectrum(model, run.val, context_length)
    return metrics
