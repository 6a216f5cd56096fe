"""ctxscale: context-length x data-size scaling sweeps on Ray, and the optimal-context-length fits."""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "load_results", "load_spec"]

# imported on first use: the `ctxscale` command answers bad input before pandas (or Ray) is loaded
_LAZY = {"load_results": ".store", "load_spec": ".spec"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
