"""Everything a sweep needs before Ray starts: its data, checked and ready.

Runs in the launching process, so bad input surfaces here, before any trial is scheduled. Each
experiment carries its own prepare step (`ctxscale.experiments`); this is the one entry to them.
"""
from __future__ import annotations

from typing import Any, Optional

from ..experiments import experiment_of


def prepare_data(spec, source: Optional[str] = None) -> Any:
    """What every point of the sweep shares (the synthetic set, the measure corpus's folder; None
    where trials read their own data). Raises SpecError naming `source` when the data cannot serve."""
    return experiment_of(spec).prepare(spec, source)
