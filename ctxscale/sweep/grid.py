"""From a training spec (synthetic, gpt) to its grid points: one trial per (context_length,
data_size, seed), with stable ids. (A measure spec's points and hash: `ctxscale.experiments.measure`.)

A trial id names its grid point and carries a hash of everything that changes the result
(data, model and training sections), so re-running a spec skips what is stored, and an
edited spec gets new ids instead of silently reusing old results. The same hash is stored in
every row as `config_hash`, so that analysis can tell configurations apart and fit only one.
"""
from __future__ import annotations

import itertools

from ..identity import grid_trial_id, science_hash


def expand_grid(spec) -> list[dict]:
    """Every trial of the spec, as the plain dict that travels to Ray and into the store."""
    spec_dict = spec.model_dump(mode="json")
    digest = science_hash(spec)
    trials = []
    for context_length, data_size, seed in itertools.product(
        spec.grid.context_length, spec.grid.data_size, spec.grid.seed
    ):
        trials.append({
            "trial_id": grid_trial_id(context_length, data_size, seed, digest),
            "context_length": context_length,
            "data_size": data_size,
            "seed": seed,
            "config_hash": digest,
            "spec": spec_dict,
        })
    return trials
