"""A synthetic set (`SyntheticSet`), its packed bits, its task list, and the exact Bayes risk
that the labelling rule implies (see the package docstring for the task)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

TaskList = Union[Sequence[Sequence[int]], np.ndarray]


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field by field has no single truth value
class SyntheticSet:
    """A generated (or loaded) synthetic set: packed strings, labels and the task list.

    Rows ``[0, train_rows)`` are the training split and ``[train_rows, train_rows + val_rows)``
    the validation split. Arrays are read-only (memory maps when loaded with ``mmap=True``).
    """

    bits: np.ndarray  # (train_rows + val_rows, ceil(L / 8)) uint8, packed big-endian, pad bits 0
    labels: np.ndarray  # (train_rows + val_rows,) uint8 in {0, 1}
    tasks: np.ndarray  # (T, 2) int32 rows of [l, a]
    string_length: int
    train_rows: int
    val_rows: int
    seed: int

    def __post_init__(self):
        rows, width = self.train_rows + self.val_rows, packed_width(self.string_length)
        if self.bits.shape != (rows, width) or self.labels.shape != (rows,):
            raise ValueError(
                f"bits {self.bits.shape} / labels {self.labels.shape} do not match "
                f"{self.train_rows} + {self.val_rows} rows of {self.string_length} bits"
            )
        if self.tasks.ndim != 2 or self.tasks.shape[1] != 2 or len(self.tasks) == 0:
            raise ValueError(f"tasks must have shape (T, 2) with T >= 1, got {self.tasks.shape}")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.labels.nbytes + self.tasks.nbytes)

    def task_index(self, start: int, stop: int) -> np.ndarray:
        """Task of each row in ``[start, stop)`` of one split (split row numbers start at 0)."""
        return np.arange(start, stop, dtype=np.int64) % self.num_tasks

    def train(self, n: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, labels, task_index)`` of the first ``n`` training rows (all when None)."""
        n = self.train_rows if n is None else n
        if not 0 <= n <= self.train_rows:
            raise ValueError(f"asked for {n} training rows; the set has {self.train_rows}")
        return self.bits[:n], self.labels[:n], self.task_index(0, n)

    def val(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, labels, task_index)`` of the validation rows."""
        return self.bits[self.train_rows:], self.labels[self.train_rows:], self.task_index(0, self.val_rows)


def packed_width(string_length: int) -> int:
    """Bytes per string of `string_length` bits, packed."""
    return (string_length + 7) // 8


def as_tasks(tasks: TaskList) -> np.ndarray:
    """`tasks` checked and copied into a (T, 2) int32 array of [l, a] rows."""
    array = np.asarray(tasks)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(f"tasks must be a non-empty list of [l, a] pairs, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or (array < 1).any():
        raise ValueError("tasks must hold positive integer bit positions [l, a]")
    if (array > np.iinfo(np.int32).max).any():
        raise ValueError("task bit positions must fit in int32")
    return np.array(array, dtype=np.int32)  # a copy: generate() makes it read-only


def packed_prefix(bits: np.ndarray, context_length: int) -> np.ndarray:
    """The bytes of each packed row that hold its first ``context_length`` bits (big-endian);
    raises ``ValueError`` where ``bits`` is not (n, bytes) or holds fewer bits."""
    if bits.ndim != 2:
        raise ValueError(f"bits must be (n, bytes), got shape {bits.shape}")
    if not 0 <= context_length <= 8 * bits.shape[1]:
        raise ValueError(f"context_length {context_length} outside 0..{8 * bits.shape[1]}")
    return bits[:, :packed_width(context_length)]


def unpack_bits(bits: np.ndarray, context_length: int) -> np.ndarray:
    """The first ``context_length`` bits of each packed row: (n, context_length) uint8 in {0, 1}.

    Examples
    --------
    >>> unpack_bits(np.array([[0b10110000]], dtype=np.uint8), 4)
    array([[1, 0, 1, 1]], dtype=uint8)
    """
    return np.unpackbits(packed_prefix(bits, context_length), axis=1, count=context_length, bitorder="big")


def task_bayes_risk(tasks: TaskList, context_length, string_length: int = 100) -> np.ndarray:
    """Exact Bayes risk (nats) of each task at a context length: shape ``(..., T)``.

    Follows the labelling rule of `generate` task by task:

    - a bit beyond the string (``max(l, a) > L``): the label is a fair coin, risk ln 2 at every
      context length;
    - ``l == a <= L``: the label is bit XOR itself, always 0, so it is known without seeing a
      single bit: risk 0 at every context length;
    - otherwise the label is a deterministic function of the two bits, and it is independent of
      every other bit unless both are visible (XOR with an unseen uniform bit is uniform): risk 0
      when ``max(l, a) <= min(c, L)``, else ln 2.

    Examples
    --------
    >>> task_bayes_risk([[3, 1], [4, 4], [120, 7]], [2, 3], string_length=100) / np.log(2)
    array([[1., 0., 1.],
           [0., 0., 1.]])
    """
    task_array = as_tasks(tasks)
    reach = task_array.max(axis=1)
    constant = (task_array[:, 0] == task_array[:, 1]) & (reach <= string_length)
    visible = np.minimum(np.asarray(context_length), string_length)
    hidden = (reach > visible[..., None]) & ~constant
    return hidden * np.log(2)


def bayes_risk(tasks: TaskList, context_length, string_length: int = 100):
    """Exact Bayes risk (nats) of the task mixture at a context length.

    Rows cycle through the tasks evenly, so the risk is the mean over tasks of `task_bayes_risk`:
    ``ln 2 * mean_t [ task t is a coin or has a bit beyond min(c, L) ]``, where a task ``l == a``
    inside the string is never a coin (its label is always 0). Vectorised over
    ``context_length``; a scalar gives a float.

    Examples
    --------
    >>> import math
    >>> round(bayes_risk([[3, 1], [5, 4], [9, 2], [120, 7]], 5, string_length=100) / math.log(2), 3)
    0.5
    """
    risk = task_bayes_risk(tasks, context_length, string_length).mean(axis=-1)
    return float(risk) if np.ndim(context_length) == 0 else risk

