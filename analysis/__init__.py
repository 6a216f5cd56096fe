"""Fits of the optimal context length from stored sweep results (Parquet / pandas only; no Ray, no torch).

>>> import analysis
>>> trials = ctxscale.store.load_results("results", sweep="synthetic")  # doctest: +SKIP
>>> opt = analysis.optimal_context_length(trials)                        # doctest: +SKIP
>>> law = analysis.fit_optimal_context_law(opt)                          # doctest: +SKIP
>>> print(law.summary())                                                 # doctest: +SKIP
"""
from .bayes import fit_bayes_risk, synthetic_gap
from .forms import synthetic_bayes_risk
from .optimum import fit_optimal_context_law, optimal_context_length
from .report import run_report, write_report
from .results import BayesRiskFit, OptimalLawFit, SurfaceFit
from .surface import fit_loss_surface
from .tasks import task_loss_table

__all__ = [
    "optimal_context_length", "fit_optimal_context_law", "fit_loss_surface", "fit_bayes_risk",
    "synthetic_bayes_risk", "synthetic_gap", "task_loss_table", "run_report", "write_report",
    "OptimalLawFit", "BayesRiskFit", "SurfaceFit",
]
