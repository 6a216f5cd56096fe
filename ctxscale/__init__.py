"""ctxscale: context-length x data-size scaling sweeps on Ray, and the optimal-context-length fits."""
__version__ = "0.1.0"

__all__ = ["load_results", "load_spec"]


def __getattr__(name):
    # imported on first use, so `ctxscale data ...` starts without pandas, pydantic or Ray
    if name == "load_results":
        from .store import load_results

        return load_results
    if name == "load_spec":
        from .spec import load_spec

        return load_spec
    raise AttributeError(f"module 'ctxscale' has no attribute {name!r}")
