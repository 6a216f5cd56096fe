"""From a training spec (synthetic, gpt) to its grid points: one trial per (context_length,
data_size, seed), with stable ids. (A measure spec's points and hash: `ctxscale.experiments.measure`.)

A trial id names its grid point and carries a hash of everything that changes the result
(data, model and training sections), so re-running a spec skips what is stored, and an
edited spec gets new ids instead of silently reusing old results. The same hash is stored in
every row as `config_hash`, so that analysis can tell configurations apart and fit only one.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Optional

TRIAL_ID = re.compile(r"l(?P<context_length>\d+)_d(?P<data_size>\d+)_s(?P<seed>-?\d+)_(?P<config_hash>[0-9a-f]+)")


# Fields added after sweeps had stored results, with the value that behaves as before they
# existed: at that value they are left out of the hash, so older specs keep their config_hash
# (and their stored trials); any other value changes it like every other field.
ADDED_FIELDS = {("gpt", "training", "loss_chunk_rows"): 0,
                ("parity", "training", "lr_schedule"): "cosine",
                ("parity", "training", "curriculum_tasks"): 1.0,
                ("parity", "training", "curriculum_steps"): 0,
                ("synthetic", "training", "precision"): "float32"}


def hash_of(payload: dict) -> str:
    """The 8-hex config hash of a spec's dumped sections, ADDED_FIELDS at their old behaviour left out."""
    for (experiment, section, field), old_behaviour in ADDED_FIELDS.items():
        if payload.get("experiment") == experiment and payload[section].get(field) == old_behaviour:
            del payload[section][field]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def science_hash(spec) -> str:
    """Hash of the sections that change what a trial computes (not its name, resources, tracking or search)."""
    return hash_of(spec.model_dump(mode="json", exclude={"name", "resources", "grid", "tracking", "search"}))


def expand_grid(spec) -> list[dict]:
    """Every trial of the spec, as the plain dict that travels to Ray and into the store."""
    spec_dict = spec.model_dump(mode="json")
    digest = science_hash(spec)
    trials = []
    for context_length, data_size, seed in itertools.product(
        spec.grid.context_length, spec.grid.data_size, spec.grid.seed
    ):
        trials.append({
            "trial_id": f"l{context_length}_d{data_size}_s{seed}_{digest}",  # TRIAL_ID reads it back
            "context_length": context_length,
            "data_size": data_size,
            "seed": seed,
            "config_hash": digest,
            "spec": spec_dict,
        })
    return trials


def coordinates_of(trial_id: str) -> Optional[dict]:
    """The grid point a training trial id names (None for another id), e.g. for history rows
    whose trials row is not stored yet.

    >>> coordinates_of("l24_d50000_s0_f7b8b1a6")
    {'context_length': 24, 'data_size': 50000, 'seed': 0}
    """
    match = TRIAL_ID.fullmatch(trial_id)
    return {k: int(v) for k, v in match.groupdict().items() if k != "config_hash"} if match else None
