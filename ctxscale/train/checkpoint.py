"""Reading a loop's checkpoint file, the same way for every loop: a checkpoint holds tensors and
plain values, never code to run, and one that cannot be read is one line and a fresh start."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Optional

import torch


def read_checkpoint(path: Path) -> Optional[dict]:
    """The saved state (tensors on the CPU), or None after saying why it cannot be used."""
    try:  # weights_only: never unpickle code
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        print(f"ctxscale: {path}: damaged checkpoint ({str(err).splitlines()[0][:200]}); the trial starts fresh",
              file=sys.stderr, flush=True)
        return None
