"""A grid point: the typed spec, validated once by `load_spec`, and the coordinates that pick this
point of its grid. It is what an experiment lists, what travels to a Ray trial (pickled, as the
spec object itself) and what the runner stores a row from: a point's coordinates are set here,
once, and every stored row takes them from here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

COORDINATES = ("model", "context_length", "data_size", "seed")  # in the order tables show them


@dataclass(frozen=True)
class Point:
    trial_id: str  # the point's coordinates and config hash (`ctxscale.identity`)
    config_hash: str
    spec: Any  # the experiment's spec object (one of `ctxscale.spec.AnySpec`)
    # the coordinates an experiment's points have: training (context_length, data_size, seed);
    # parity (data_size, seed: its context lengths are evaluated inside); measure (model, context_length)
    context_length: Optional[int] = None
    data_size: Optional[int] = None
    seed: Optional[int] = None
    model: Optional[str] = None

    def coordinates(self) -> dict:
        """The coordinates this point has, by name (those of other experiments left out).

        >>> Point("d10_s0_0a1b2c3d", "0a1b2c3d", spec=None, data_size=10, seed=0).coordinates()
        {'data_size': 10, 'seed': 0}
        """
        return {key: getattr(self, key) for key in COORDINATES if getattr(self, key) is not None}
