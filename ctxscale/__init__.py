"""ctxscale: context-length x data-size scaling sweeps on Ray, and the optimal-context-length fits."""
from .spec import load_spec
from .store import load_results

__version__ = "0.1.0"

__all__ = ["__version__", "load_results", "load_spec"]
