"""Saving and loading a loop's checkpoint, the same way for every loop.

A checkpoint is one file in a folder that `report(metrics, checkpoint_dir=folder)` hands on (Ray's
report persists it before it returns; the folder is deleted after). The file holds tensors and
plain values, never code to run: the model's and the optimizer's state dicts, plus what the loop
adds (its step counters, random generator states). One that cannot be read is one line and a fresh
start.
"""
from __future__ import annotations

import pickle
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch


def read_checkpoint(path: Path) -> Optional[dict]:
    """The saved state (tensors on the CPU), or None after saying why it cannot be used."""
    try:  # weights_only: never unpickle code
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        print(f"ctxscale: {path}: damaged checkpoint ({str(err).splitlines()[0][:200]}); the trial starts fresh",
              file=sys.stderr, flush=True)
        return None


def report_with_checkpoint(report: Callable[..., None], metrics: dict, file_name: str, model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer, extra: dict) -> None:
    """Save the model's and the optimizer's state and `extra` (plain values and tensors) as
    `file_name` in a fresh folder, and report `metrics` with that folder; the folder is deleted
    when `report` returns."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}
    with tempfile.TemporaryDirectory(prefix="ctxscale-checkpoint-") as folder:
        torch.save(state, Path(folder) / file_name)
        report(metrics, checkpoint_dir=folder)


def load_checkpoint(resume_dir: str, file_name: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> Optional[dict]:
    """Restore the weights and the optimizer state saved by `report_with_checkpoint` and return the
    whole saved state (the loop restores the rest); None (a fresh start) when the folder holds no
    readable checkpoint."""
    state = read_checkpoint(Path(resume_dir) / file_name)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state


def random_state(rng: np.random.Generator, device: torch.device) -> dict:
    """This process's random generators: `rng`'s, torch's, and the CUDA device's on a GPU."""
    state = {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_random_state(state: dict, rng: np.random.Generator, device: torch.device) -> None:
    """Set the generators `random_state` saved."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
