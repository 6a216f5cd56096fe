"""The position-weighted multitask sparse-parity task of the study (arXiv 2502.01481 v4, its
controlled experiment), and its exact Bayes risk.

A sample is L random bits and one task token; the answer is the XOR of the two bits the task
names. Bit i (1-based) lies i positions before the answer: the model reads the sequence
bit L, ..., bit 2, bit 1, task token, and answers at the task token, so a context of length l
shows bits 1..l and the bits beyond it are replaced by an UNKNOWN token. Tasks whose farther bit is
nearer are more frequent: task k with farther bit b_k has weight (1 - (b_k - 1) / L)^γ (1 for
b = 1, L^-γ > 0 for b = L), so the Bayes risk falls with l the way the task mass is spread.

Exact Bayes risk at context length l (a task's answer is a deterministic function of the visible
bits when both its bits are visible, and a fair coin independent of them otherwise):

    R(l) = ln 2 × Σ_{k: b_k > l} w_k / Σ_k w_k

Token ids: 0 and 1 are bits, 2 is UNKNOWN, 3 + k is task k. NumPy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNKNOWN = 2
FIRST_TASK_TOKEN = 3


@dataclass(frozen=True)
class ParityTasks:
    """The task set: `near[k] < far[k]` are task k's bits (1-based distances from the answer) and
    `weight[k]` its unnormalised frequency."""

    string_length: int
    near: np.ndarray
    far: np.ndarray
    weight: np.ndarray

    @property
    def n_tasks(self) -> int:
        return len(self.far)

    @property
    def probability(self) -> np.ndarray:
        return self.weight / self.weight.sum()

    @property
    def vocab_size(self) -> int:
        return FIRST_TASK_TOKEN + self.n_tasks


def make_tasks(string_length: int, n_tasks: int, weight_exponent: float, seed: int = 0) -> ParityTasks:
    """Task k's farther bit is evenly spaced over 2..L (k = 0 nearest), its nearer bit drawn
    uniformly below it (seeded); weight (1 - (far - 1) / L)^weight_exponent.

    >>> tasks = make_tasks(10, 3, 1.0)
    >>> tasks.far.tolist(), tasks.weight.round(2).tolist()
    ([2, 6, 10], [0.9, 0.5, 0.1])
    >>> bool((tasks.near < tasks.far).all() and (tasks.near >= 1).all())
    True
    """
    if string_length < 2 or n_tasks < 1:
        raise ValueError(f"need string_length >= 2 and n_tasks >= 1, got {string_length}, {n_tasks}")
    far = np.round(np.linspace(2, string_length, n_tasks)).astype(np.int64)
    rng = np.random.default_rng(seed)
    near = np.array([rng.integers(1, b) for b in far], dtype=np.int64)
    weight = (1.0 - (far - 1) / string_length) ** weight_exponent
    return ParityTasks(string_length, near, far, weight)


def bayes_risk(tasks: ParityTasks, context_length: int) -> float:
    """Exact Bayes risk (nats) of the answer with the bits beyond `context_length` unknown.

    >>> tasks = make_tasks(10, 3, 1.0)
    >>> round(bayes_risk(tasks, 5), 6) == round(math.log(2) * 0.6 / 1.5, 6)
    True
    """
    return math.log(2) * float(tasks.weight[tasks.far > context_length].sum() / tasks.weight.sum())


def sample(tasks: ParityTasks, n: int, rng: np.random.Generator, task: np.ndarray | None = None):
    """n samples: bits (n, L) uint8 (column i-1 is bit i), task index (n,), answer (n,) uint8.
    Tasks are drawn by their frequency unless `task` gives them."""
    if task is None:
        task = rng.choice(tasks.n_tasks, size=n, p=tasks.probability)
    bits = rng.integers(0, 2, size=(n, tasks.string_length), dtype=np.uint8)
    rows = np.arange(n)
    answer = bits[rows, tasks.near[task] - 1] ^ bits[rows, tasks.far[task] - 1]
    return bits, task.astype(np.int64), answer


def encode(bits: np.ndarray, task: np.ndarray, visible) -> np.ndarray:
    """Token sequences (n, L + 1) uint8: bit L first, bit 1 last but one, the task token last; bits
    beyond each row's `visible` count (an int or one per row) are UNKNOWN."""
    n, length = bits.shape
    visible = np.broadcast_to(np.asarray(visible), (n,))
    tokens = np.empty((n, length + 1), dtype=np.uint8)
    distance = np.arange(length, 0, -1)  # position p holds bit L - p
    hidden = distance[None, :] > visible[:, None]
    tokens[:, :length] = np.where(hidden, UNKNOWN, bits[:, ::-1])
    tokens[:, length] = FIRST_TASK_TOKEN + task
    return tokens


def training_visibility(n: int, string_length: int, unmasked_fraction: float, mask_min: int, mask_max: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Visible bits per training sample: all L for a share `unmasked_fraction`, else L - X with X
    uniform on mask_min..mask_max (the study: half unmasked, X in 0..50 of 60).

    >>> v = training_visibility(10_000, 60, 0.5, 0, 50, np.random.default_rng(0))
    >>> int(v.min()) >= 10 and abs(float((v == 60).mean()) - 0.5 - 0.5 / 51) < 0.02
    True
    """
    masked = rng.random(n) >= unmasked_fraction
    hidden = rng.integers(mask_min, mask_max + 1, size=n)
    return np.where(masked, string_length - hidden, string_length).astype(np.int64)


def training_set(tasks: ParityTasks, n: int, unmasked_fraction: float, mask_min: int, mask_max: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` training sequences with their masks applied, and their answers; one seed, one set."""
    rng = np.random.default_rng([seed, 1])
    bits, task, answer = sample(tasks, n, rng)
    visible = training_visibility(n, tasks.string_length, unmasked_fraction, mask_min, mask_max, rng)
    return encode(bits, task, visible), answer


def evaluation_set(tasks: ParityTasks, per_task: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`per_task` samples of every task (bits, task, answer), from a stream apart from training's:
    the CE of each task is averaged with the exact task frequencies, so the estimate carries no
    task-sampling noise."""
    rng = np.random.default_rng([seed, 2])
    task = np.repeat(np.arange(tasks.n_tasks), per_task)
    return sample(tasks, len(task), rng, task=task)


def feature_set(tasks: ParityTasks, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` samples with tasks drawn by frequency: the hidden states whose spectrum and KDE entropy
    are measured follow the task distribution."""
    return sample(tasks, n, np.random.default_rng([seed, 3]))
