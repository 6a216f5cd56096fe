r"""Fits of the optimal context length from stored sweep results (Parquet / pandas only; no Ray, no
torch, and no matplotlib until something is drawn).

Every fit returns a frozen result object with `.table` (a DataFrame), `summary()` and `to_dict()`.

>>> import analysis
>>> trials = ctxscale.store.load_results("results", sweep="synthetic")  # doctest: +SKIP
>>> opt = analysis.optimal_context_length(trials)                        # doctest: +SKIP
>>> opt.table                                                            # doctest: +SKIP
>>> law = analysis.fit_optimal_context_law(opt)                          # doctest: +SKIP
>>> print(opt.summary(), law.summary(), sep="\n")                        # doctest: +SKIP
"""
from .bayes import fit_bayes_risk, synthetic_gap
from .forms import synthetic_bayes_risk
from .optimum import fit_optimal_context_law, optimal_context_length
from .report import run_report, write_report
from .results import BayesRiskFit, OptimalContextLength, OptimalLawFit, StepOptimum, SurfaceFit
from .surface import fit_loss_surface
from .tasks import task_loss_table

__all__ = [
    "optimal_context_length", "fit_optimal_context_law", "fit_loss_surface", "fit_bayes_risk",
    "synthetic_bayes_risk", "synthetic_gap", "task_loss_table", "run_report", "write_report",
    "OptimalContextLength", "StepOptimum", "OptimalLawFit", "BayesRiskFit", "SurfaceFit",
]
