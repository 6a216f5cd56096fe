"""The learning-rate schedule every loop trains with: linear warm-up, then a cosine decay or a
constant rate (nanoGPT's schedule). A pure function of the step, so a resumed trial continues on
the same curve from its saved step."""
from __future__ import annotations

import math
from typing import Optional


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, decay_steps: Optional[int]) -> float:
    """Learning rate for optimizer step `step` (0-based).

    lr · (step + 1) / warmup_steps during the warm-up; then, with progress
    p = (step − warmup_steps) / (decay_steps − warmup_steps),
    min_lr + ½ (1 + cos π p) (lr − min_lr) up to `decay_steps`, and `min_lr` from there on.
    `decay_steps=None`: `lr` from the end of the warm-up on (constant).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if decay_steps is None:
        return lr
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
