"""The `search:` section of a training spec: every grid point (the default), or an adaptive search
for l* that spends trials where they decide it (`ctxscale.search`).

The section changes which points run, never what a point computes: it stays out of the
config hash (`ctxscale.sweep.grid.science_hash`), so a grid run's stored points count for a
search of the same spec and the other way round.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from .common import Section


class Search(Section):
    method: Literal["grid", "adaptive"] = Field(
        default="grid",
        description="'grid': run every grid point. 'adaptive': per data size, run the context lengths that "
        "narrow its l* interval, starting from the grid's lengths (see ctxscale.search).",
    )
    context_length: Optional[list[int]] = Field(
        default=None,
        description="[lo, hi]: the context lengths the adaptive search may try (default: the grid's span).",
    )
    target_ratio: float = Field(
        default=1.25, gt=1.0, description="A data size is done when l_high / l_low is at most this.")
    max_points: int = Field(
        default=200, ge=1,
        description="Budget of the whole sweep in points (context length x data size x seed), stored ones included.",
    )

    @field_validator("context_length")
    @classmethod
    def _a_range(cls, value):
        if value is None:
            return value
        if len(value) != 2 or not 1 <= value[0] < value[1]:
            raise ValueError(f"must be [lo, hi] with 1 <= lo < hi, got {value}")
        return value

    def span(self, grid_lengths: list[int]) -> tuple[int, int]:
        """The range the search may try: the section's, else the grid's lengths' span."""
        if self.context_length is not None:
            return self.context_length[0], self.context_length[1]
        return min(grid_lengths), max(grid_lengths)
