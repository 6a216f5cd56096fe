"""The config hash of every shipped training spec, pinned: a stored trial is found again by it, so
a hash that moves silently orphans every result stored under the old one (they are not lost, but a
sweep runs them again and `analyze` picks the new configuration). Change a pin only together with
the spec's science; a new field that behaves as before at its default goes in
`ctxscale.identity.ADDED_FIELDS` instead."""
from pathlib import Path

import pytest

from ctxscale.identity import parity_hash
from ctxscale.spec import load_spec
from ctxscale.identity import science_hash

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

PINNED = {
    "synthetic.yaml": "e7580903",
    "synthetic-paper.yaml": "6d96d54d",  # bfloat16 products, measured on an H200 (its header)
    "gpt2-local.yaml": "5c882869",
    "gpt2-gpu.yaml": "125d85c8",      # patience_fraction 1; the README's H200 results were stored under 777eea8b
    "gpt2-owt.yaml": "6c1213ce",
    "parity-local.yaml": "6d1a010b",  # kept when the curriculum fields were added (a bug moved it once)
    "parity-paper.yaml": "caf588c4",  # 60 epochs, measured on an H200 to step 25,564 (its header)
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_shipped_spec_keeps_its_config_hash(name):
    spec = load_spec(SWEEPS / name)
    digest = parity_hash(spec) if spec.experiment == "parity" else science_hash(spec)
    assert digest == PINNED[name], f"sweeps/{name}: config_hash moved from {PINNED[name]} to {digest}"


def test_every_shipped_training_spec_is_pinned():
    shipped = {p.name for p in SWEEPS.glob("*.yaml") if not p.name.startswith("measure")}
    assert shipped == set(PINNED)
