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


# Graphs torch.compile may keep per compiled function in one process. Ray reuses a worker process
# from trial to trial, and every trial brings its own shapes (a context length's training
# micro-batches and its evaluation batch), so at dynamo's default of 8 a worker's ninth shape, and
# every new one after it, ran eagerly with no more than a line in the worker's log. A kept graph
# also serves a later trial of the same shapes (a new model instance of the same architecture)
# without compiling again.
GRAPHS_PER_FUNCTION = 256


def compile_static(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """`torch.compile(model, dynamic=False)` (one graph per input shape; a dynamic-shape graph is
    slower), with room for every shape the trials of a reused worker process bring. `backend`:
    torch.compile's ('eager' traces the graphs without generating kernels, in a fraction of the time)."""
    import torch._dynamo  # noqa: F401 - loads the config module

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, GRAPHS_PER_FUNCTION)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * GRAPHS_PER_FUNCTION)
    return torch.compile(model, dynamic=False, backend=backend)
