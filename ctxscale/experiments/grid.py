"""A training spec's (synthetic, gpt) grid points: one per (context_length, data_size, seed)."""
from __future__ import annotations

import itertools

from ..identity import grid_trial_id, science_hash
from ..spec.point import Point


def expand_grid(spec) -> list[Point]:
    """Every point of the spec's grid, in grid order (context length slowest), all of one config hash."""
    digest = science_hash(spec)
    return [Point(grid_trial_id(length, size, seed, digest), digest, spec, context_length=length, data_size=size,
                  seed=seed)
            for length, size, seed in itertools.product(spec.grid.context_length, spec.grid.data_size, spec.grid.seed)]
