"""Where tensors go: one rule for every loop and measurement."""
from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """'cpu', 'cuda' or 'auto' (CUDA when torch sees a device). Asking for CUDA without one is an error.

    Under DDP the launcher (Ray Train, torchrun) has already bound this process to its GPU, so the
    current device is the right one.
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device is {requested!r} but torch sees no CUDA device")
    return torch.device("cuda", torch.cuda.current_device())
