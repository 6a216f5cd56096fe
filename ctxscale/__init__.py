"""ctxscale: context-length x data-size scaling sweeps on Ray."""
__version__ = "0.1.0"
