"""What names a stored point: its config hash and its trial id (built here, and read back here).

A config hash is 8 hex digits of the SHA-256 of the JSON of what changes a point's numbers; each
experiment picks that payload (`science_hash`, `parity_hash`, `measure_hash`). A trial id names
the point's coordinates and ends in its config hash, so re-running a spec skips what is stored and
an edited spec gets new ids instead of silently reusing old results:

    synthetic, gpt   l<context_length>_d<data_size>_s<seed>_<hash>     (`grid_trial_id`, `TRIAL_ID`)
    parity           d<data_size>_s<seed>_<hash>                       (`parity_trial_id`)
    measure          <model slug>_l<context_length>_<hash>             (`measure_trial_id`)

Only the standard library: the store reads ids with it, and nothing here knows a spec class.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Optional

# every id `grid_trial_id` builds: a seed may be negative, the hash is always 8 hex digits
TRIAL_ID = re.compile(r"l(?P<context_length>\d+)_d(?P<data_size>\d+)_s(?P<seed>-?\d+)_(?P<config_hash>[0-9a-f]{8})")

# Fields added after sweeps had stored results, with the value that behaves as before they
# existed: at that value they are left out of the hash, so older specs keep their config_hash
# (and their stored trials); any other value changes it like every other field.
ADDED_FIELDS = {("gpt", "training", "loss_chunk_rows"): 0,
                ("gpt", "training", "patience_fraction"): 0.0,
                ("parity", "training", "lr_schedule"): "cosine",
                ("parity", "training", "curriculum_tasks"): 1.0,
                ("parity", "training", "curriculum_steps"): 0,
                ("synthetic", "training", "precision"): "float32"}


def hash_of(payload: dict) -> str:
    """The 8-hex config hash of a JSON-able payload, ADDED_FIELDS at their old behaviour left out."""
    for (experiment, section, field), old_behaviour in ADDED_FIELDS.items():
        if payload.get("experiment") == experiment and payload[section].get(field) == old_behaviour:
            del payload[section][field]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def science_hash(spec) -> str:
    """A training spec's hash (synthetic, gpt): the sections that change what a trial computes, not
    its name, resources, grid or tracking."""
    return hash_of(spec.model_dump(mode="json", exclude={"name", "resources", "grid", "tracking", "search"}))


def parity_hash(spec) -> str:
    """A parity spec's hash: not the name, resources, data sizes or seeds; its context lengths are
    in it (a point is evaluated at all of them)."""
    payload = spec.model_dump(mode="json", exclude={"name", "resources"})
    payload["grid"] = {"context_length": payload["grid"]["context_length"]}
    del payload["training"]["checkpoint_every_s"]  # when to save, not what is computed
    return hash_of(payload)


def measure_hash(spec, model: str, corpus_sha256: str) -> str:
    """A measured model's hash: the model, the corpus split's content, the protocol, layer, KDE
    settings, dtype and tokenizer; not the name, resources, batch size or spectrum thresholds."""
    return hash_of({"model": model, "corpus_sha256": corpus_sha256, "protocol": spec.protocol.model_dump(mode="json"),
                    "layer": spec.spectra.layer, "kde": [spec.spectra.kde_dims, spec.spectra.kde_max_samples],
                    "dtype": spec.inference.dtype, "tokenizer": spec.inference.tokenizer})


def grid_trial_id(context_length: int, data_size: int, seed: int, config_hash: str) -> str:
    """The id of a training point; `TRIAL_ID` reads it back.

    >>> grid_trial_id(24, 50000, -1, "f7b8b1a6")
    'l24_d50000_s-1_f7b8b1a6'
    """
    return f"l{context_length}_d{data_size}_s{seed}_{config_hash}"


def parity_trial_id(data_size: int, seed: int, config_hash: str) -> str:
    return f"d{data_size}_s{seed}_{config_hash}"


def model_slug(model: str) -> str:
    """A file-name-safe, collision-free name for a model string.

    >>> model_slug("meta-llama/Llama-3.1-8B")
    'meta-llama-Llama-3.1-8B-693323'
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")[-60:] or "model"
    return f"{readable}-{hashlib.sha1(model.encode()).hexdigest()[:6]}"


def measure_trial_id(model: str, context_length: int, config_hash: str) -> str:
    return f"{model_slug(model)}_l{context_length}_{config_hash}"


def packed_group_name(data_size: int, seed: int, context_lengths: list[int], config_hash: str) -> str:
    """The Tune trial (and its storage folder) of packed training points: 'd<data size>_s<seed>_l<shortest>-<longest>_<hash>'."""
    return f"d{data_size}_s{seed}_l{min(context_lengths)}-{max(context_lengths)}_{config_hash}"


def coordinates_of(trial_id: str) -> Optional[dict]:
    """The grid point a training trial id names (None for another id), e.g. for history rows
    whose trials row is not stored yet.

    >>> coordinates_of("l24_d50000_s0_f7b8b1a6")
    {'context_length': 24, 'data_size': 50000, 'seed': 0}
    """
    match = TRIAL_ID.fullmatch(trial_id)
    return {k: int(v) for k, v in match.groupdict().items() if k != "config_hash"} if match else None


def hash_in_trial_id(trial_id: str) -> Optional[str]:
    """The config hash a training trial id ends in (None for another id).

    >>> hash_in_trial_id("l24_d50000_s0_f7b8b1a6"), hash_in_trial_id("d10_s0_f7b8b1a6")
    ('f7b8b1a6', None)
    """
    match = TRIAL_ID.fullmatch(trial_id)
    return match["config_hash"] if match else None
