"""`--smoke`: any spec shrunk to a pipeline check that runs on a CPU in about a minute.

Same experiment and data source; a corner of the grid (shortest, middle and longest context
length — for GPT only those up to 2,048 — the two smallest data sizes, one seed), a few epochs
or steps, 10,000 synthetic validation rows at most, the tiny GPT preset, CPU only, plain trials. The numbers it stores say nothing about the science; its results go to a sweep
named `<name>-smoke` so they never mix with the real ones.
"""
from __future__ import annotations

from . import parse_spec

GPT_SMOKE_MAX_CONTEXT = 2048


def _corner(values: list) -> list:
    ordered = sorted(values)
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]})


def smoke(spec):
    """A shrunken copy of `spec` (see the module docstring)."""
    raw = spec.model_dump(mode="json", exclude_defaults=False)
    raw["name"] = f"{spec.name}-smoke"
    raw["grid"]["context_length"] = _corner(raw["grid"]["context_length"])
    if "data_size" in raw["grid"]:
        raw["grid"]["data_size"] = sorted(raw["grid"]["data_size"])[:2]
        raw["grid"]["seed"] = raw["grid"]["seed"][:1]
    # one CPU per trial: a spec written for a GPU machine's cores still fits a 2-core laptop
    raw["resources"].update(gpus_per_trial=0.0, cpus_per_trial=1, num_workers=0, max_concurrent_trials=None)
    if spec.experiment == "synthetic":
        raw["training"].update(max_epochs=min(spec.training.max_epochs, 3), device="cpu")
        # generate only what the smaller grid reads, and validate on few rows: evaluation dominates on a CPU
        raw["data"].update(train_rows=None, val_rows=min(spec.data.val_rows, 10_000))
    elif spec.experiment == "gpt":
        # a CPU holds the (tokens x 50k vocabulary) logits of a few thousand tokens, not of 15k
        kept = [c for c in raw["grid"]["context_length"] if c <= GPT_SMOKE_MAX_CONTEXT]
        raw["grid"]["context_length"] = kept or [min(raw["grid"]["context_length"])]
        context = max(raw["grid"]["context_length"])
        raw["model"] = {"preset": "tiny"}
        raw["training"].update(tokens_per_step=2 * context, micro_batch_tokens=context, max_steps=4,
                               warmup_steps=1, eval_every=2, eval_tokens=context, compile=False,
                               device="cpu", lr_decay_steps=None)
    elif spec.experiment == "parity":
        raw["training"].update(epochs=1, device="cpu", compile=False, precision="float32")
        raw["data"].update(eval_per_task=min(spec.data.eval_per_task, 10), feature_rows=min(spec.data.feature_rows, 500))
    elif spec.experiment == "measure":
        raw["protocol"]["max_chunks"] = 8
        raw["inference"].update(device="cpu", dtype="float32")
    return parse_spec(raw, f"{spec.name} (smoke)")
