"""Frozen result objects of the fits: numbers computed once in the fit, then only read.

Every result offers `.table` (a DataFrame), `summary()` (text) and `to_dict()` (JSON-safe: NaN
becomes None). A fit of parameters (the law, the Bayes-risk law, the surface, a line) carries
its parameters, their uncertainty, R², the number of points, `success` and a `message`, and its
`.table` has one row per parameter. An estimate per data size (`OptimalContextLength`,
`StepOptimum`) holds its `.table` of one row per data size. A fit that cannot run (too few
points) returns a result with success False instead of raising, so a report can say why a
number is missing. Numbers are written by `analysis.present`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from . import forms
from .answers import Status, optimum_text
from .present import data_size, json_safe, number, percent

PARAMETER_COLUMNS = ["parameter", "estimate", "low", "high", "se"]


class _Result:
    def to_dict(self) -> dict:
        """All fields as plain JSON values (NaN → None); fields kept out of the repr (bootstrap
        draws) are left out."""
        return json_safe({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr})


def _parameters(rows) -> pd.DataFrame:
    """A `.table` of parameters from (name, estimate, low, high, se) tuples."""
    return pd.DataFrame(rows, columns=PARAMETER_COLUMNS)


def _with_message(text: str, message: str) -> str:
    return text + (f"; {message}" if message else "")


@dataclass(frozen=True)
class OptimalLawFit(_Result):
    """The law l*(D) = coefficient · D ** exponent, fitted in log-log to bracketed optima.

    `exponent_low/high` and `coefficient_low/high` form the `confidence` bootstrap interval;
    `cov_log` is the bootstrap covariance of (log coefficient, exponent), used for bands.
    """

    coefficient: float
    exponent: float
    exponent_low: float
    exponent_high: float
    coefficient_low: float
    coefficient_high: float
    exponent_se: float
    r2: float
    n: int
    success: bool
    message: str
    confidence: float = 0.95
    n_boot: int = 0
    data_size: tuple = ()
    l_star: tuple = ()
    cov_log: tuple = (math.nan, math.nan, math.nan)  # var(log k), cov(log k, β), var(β)
    # per one-sided answer: data_size, status, side ('<=' / '>='), bound, the law's prediction there
    # (predicted, with its band predicted_low / predicted_high) and whether the band reaches the bound
    checks: tuple = ()

    @property
    def table(self) -> pd.DataFrame:
        """coefficient and exponent with their interval (and the exponent's standard error)."""
        return _parameters([("coefficient", self.coefficient, self.coefficient_low, self.coefficient_high, math.nan),
                            ("exponent", self.exponent, self.exponent_low, self.exponent_high, self.exponent_se)])

    def replace(self, **changes) -> "OptimalLawFit":
        """A copy with `changes` (the fit is frozen)."""
        return dataclasses.replace(self, **changes)

    def predict(self, data_size):
        """l* = coefficient · D ** exponent."""
        return forms.power_law(data_size, self.coefficient, self.exponent)

    def band(self, data_size, z: float = 1.959964):
        """Pointwise band of the law from the bootstrap covariance (normal in log l*)."""
        log_d = np.log(np.asarray(data_size, dtype=float))
        var_k, cov, var_b = self.cov_log
        sd = np.sqrt(np.maximum(var_k + 2 * cov * log_d + var_b * log_d**2, 0.0))
        centre = np.log(self.predict(data_size))
        return np.exp(centre - z * sd), np.exp(centre + z * sd)

    def points_table(self) -> pd.DataFrame:
        """Every point the law saw: the fitted optima and the checked one-sided answers, by D."""
        fitted = [{"data_size": d, "role": "fitted", "status": Status.BRACKETED, "side": "=", "bound": l,
                   "predicted": float(self.predict(d)) if self.success else math.nan, "respected": None}
                  for d, l in zip(self.data_size, self.l_star)]
        checked = [{**check, "role": "checked"} for check in self.checks]
        columns = ["data_size", "role", "status", "side", "bound", "predicted", "predicted_low", "predicted_high",
                   "respected"]
        return pd.DataFrame(fitted + checked, columns=columns).sort_values("data_size", ignore_index=True)

    def _point_lines(self) -> list[str]:
        """One line per point: fitted (a bracketed l*) or checked (a one-sided answer and the law's verdict)."""
        lines = []
        for _, p in self.points_table().iterrows():
            text = f"  {p['role']:<8} D = {data_size(p['data_size']):>12}: l* {p['side']} {number(p['bound'])}"
            if p["role"] == "checked":
                text += f" ({p['status'].replace('_', ' ')})"
                if np.isfinite(p["predicted"]):
                    verdict = {True: "respects it", False: "CONTRADICTS it", None: "no verdict"}[p["respected"]]
                    text += (f"; the law gives {number(p['predicted'], 3)} [{number(p['predicted_low'], 3)}, "
                             f"{number(p['predicted_high'], 3)}]: {verdict}")
            lines.append(text)
        return lines

    def summary(self) -> str:
        if not self.success:
            head = f"law l* = k·D^β: not fitted ({self.message})"
        else:
            head = _with_message(
                f"law l* = k·D^β: k = {number(self.coefficient)}, β = {number(self.exponent, 3)} "
                f"[{number(self.exponent_low, 3)}, {number(self.exponent_high, 3)}] ({percent(self.confidence)} interval), "
                f"R² = {number(self.r2, 3)}, {self.n} points", self.message)
        return "\n".join([head] + (self._point_lines() if self.checks else []))


@dataclass(frozen=True)
class BayesRiskFit(_Result):
    """R_Bayes(l) = c0 + c / l ** gamma, least squares; standard errors from the covariance."""

    c0: float
    c: float
    gamma: float
    c0_se: float
    c_se: float
    gamma_se: float
    r2: float
    rmse: float
    n: int
    success: bool
    message: str

    @property
    def table(self) -> pd.DataFrame:
        """c0, c and gamma with their standard errors."""
        return _parameters([(name, getattr(self, name), math.nan, math.nan, getattr(self, f"{name}_se"))
                            for name in ("c0", "c", "gamma")])

    def predict(self, context_length):
        """c0 + c / l ** gamma."""
        return forms.bayes_risk_law(context_length, self.c0, self.c, self.gamma)

    def summary(self) -> str:
        if not self.success:
            return f"Bayes-risk law C0 + C/l^γ: not fitted ({self.message})"
        return _with_message(
            f"Bayes-risk law C0 + C/l^γ: C0 = {number(self.c0)} ± {number(self.c0_se, 2)}, "
            f"C = {number(self.c)} ± {number(self.c_se, 2)}, γ = {number(self.gamma, 3)} ± {number(self.gamma_se, 2)}, "
            f"R² = {number(self.r2)}, {self.n} points", self.message)


@dataclass(frozen=True)
class LinearFit(_Result):
    """y = intercept + slope · x by least squares, with standard errors, Pearson r and R²."""

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    r: float
    r2: float
    n: int
    success: bool
    message: str

    @property
    def table(self) -> pd.DataFrame:
        """intercept and slope with their standard errors."""
        return _parameters([("intercept", self.intercept, math.nan, math.nan, self.intercept_se),
                            ("slope", self.slope, math.nan, math.nan, self.slope_se)])

    def predict(self, x):
        """intercept + slope · x."""
        return self.intercept + self.slope * np.asarray(x, dtype=float)

    def summary(self) -> str:
        if not self.success:
            return f"linear fit: not fitted ({self.message})"
        return (f"y = {number(self.intercept)} + {number(self.slope)}·x (± {number(self.slope_se, 2)}), "
                f"r = {number(self.r)}, R² = {number(self.r2)}, {self.n} points")


SURFACE_PARAMS = ("c0", "c", "gamma", "a", "kappa", "alpha0", "b")


@dataclass(frozen=True)
class SurfaceFit(_Result):
    """The joint fit loss(l, D) = c0 + c·l̃^-γ + a·l̃^κ·(D/d_ref)^-α(l), α(l) = α0·l̃^-b.

    l̃ = l / l_ref (the grid's geometric mean; d_ref is 1, see analysis.surface). `params`,
    `params_low`, `params_high` and `params_se` map SURFACE_PARAMS to the estimate, the bootstrap
    interval and the bootstrap standard deviation. `optima` holds, per data size, the optimum the
    surface implies inside the grid's context-length range:
    (data_size, l_star, l_star_low, l_star_high, bracketed, outside).
    """

    params: dict
    params_low: dict
    params_high: dict
    params_se: dict
    l_ref: float
    d_ref: float
    r2: float
    huber_loss: float
    n: int
    n_starts: int
    n_boot: int
    success: bool
    message: str
    optima: tuple = ()
    confidence: float = 0.95
    context_range: tuple = (math.nan, math.nan)

    @property
    def table(self) -> pd.DataFrame:
        """The seven parameters with their bootstrap interval and standard deviation."""
        return _parameters([(name, self.params[name], self.params_low[name], self.params_high[name],
                             self.params_se[name]) for name in SURFACE_PARAMS])

    def predict(self, context_length, data_size):
        """The fitted loss at (l, D)."""
        return forms.loss_surface(context_length, data_size, **self.params, l_ref=self.l_ref, d_ref=self.d_ref)

    def bayes_risk(self, context_length):
        """The fitted R_Bayes(l) part (it carries c0, which also holds the paper's C0')."""
        p = self.params
        return forms.bayes_risk_law(np.asarray(context_length, dtype=float) / self.l_ref, p["c0"], p["c"], p["gamma"])

    def optima_frame(self) -> pd.DataFrame:
        """The implied optima as a DataFrame, one row per data size."""
        columns = ["data_size", "l_star", "l_star_low", "l_star_high", "bracketed", "outside"]
        return pd.DataFrame([dict(zip(columns, row)) for row in self.optima], columns=columns)

    def summary(self) -> str:
        if not self.success:
            return f"surface fit: not fitted ({self.message})"
        parts = ", ".join(f"{name} = {number(self.params[name], 3)} [{number(self.params_low[name], 3)}, "
                          f"{number(self.params_high[name], 3)}]" for name in SURFACE_PARAMS)
        return _with_message(
            f"surface fit loss = c0 + c·l̃^-γ + a·l̃^κ·D^-(α0·l̃^-b) (l̃ = l/{number(self.l_ref)}): "
            f"{parts}; R²(log loss) = {number(self.r2)}, {self.n} points, {self.n_boot} bootstrap fits", self.message)


def empty_surface(message: str, n: int, l_ref=math.nan, d_ref=math.nan) -> SurfaceFit:
    nan = {name: math.nan for name in SURFACE_PARAMS}
    return SurfaceFit(
        params=nan, params_low=dict(nan), params_high=dict(nan), params_se=dict(nan), l_ref=l_ref, d_ref=d_ref,
        r2=math.nan, huber_loss=math.nan, n=n, n_starts=0, n_boot=0, success=False, message=message,
    )


def failed_law(message: str, n: int, data_size=(), l_star=(), confidence=0.95) -> OptimalLawFit:
    nan = math.nan
    return OptimalLawFit(
        coefficient=nan, exponent=nan, exponent_low=nan, exponent_high=nan, coefficient_low=nan,
        coefficient_high=nan, exponent_se=nan, r2=nan, n=n, success=False, message=message,
        confidence=confidence, data_size=tuple(data_size), l_star=tuple(l_star),
    )


# --- Optimal context length per data size ----------------------------------------------------------


class OptimumResult(_Result):
    """What both estimators of l* per data size return: `.table` with one row per data size.

    `result[column]` and `result.columns` read the table, so code written when
    `optimal_context_length` returned the bare table keeps working.
    """

    estimator: ClassVar[str]  # each subclass also has the fields table, confidence and message

    def _method(self) -> str:
        raise NotImplementedError

    def _interval_words(self) -> str:
        raise NotImplementedError

    def _extra_lines(self) -> list[str]:
        """P(l* does not fall) and P(l* rises) per pair of consecutive data sizes (`.increase`)."""
        increase = getattr(self, "increase", None)
        if increase is None:
            return []
        return [f"  D {data_size(r['data_size'])} -> {data_size(r['next_data_size'])}: P(l* does not fall) = "
                f"{r['p_not_lower']:.2f}, P(l* rises) = {r['p_higher']:.2f}" for _, r in increase.iterrows()]

    def summary(self) -> str:
        """A line per data size: l* with its interval, or why there is none."""
        lines = [f"optimal context length per data size ({percent(self.confidence)} interval; {self._method()})",
                 f"  [low, high]: the {percent(self.confidence)} interval of l* ({self._interval_words()}); "
                 "'or below' / 'or above': an end of the lengths searched, l* may lie beyond"]
        lines += [f"  D = {data_size(r['data_size']):>12}: {optimum_text(r)}" for _, r in self.table.iterrows()]
        lines += self._extra_lines()
        if self.message:
            lines.append("  " + self.message)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"estimator": self.estimator, **super().to_dict()}


@dataclass(frozen=True)
class OptimalContextLength(OptimumResult):
    """Optimal context lengths of a smooth sweep (analysis.optimum): `table` has one row per data
    size (columns analysis.optimum.OPTIMAL_COLUMNS)."""

    estimator: ClassVar[str] = "smooth"
    table: pd.DataFrame
    confidence: float
    n_boot: int
    window: int
    message: str = ""
    # per pair of consecutive data sizes with bootstrap curves: P(l* does not fall), P(l* rises);
    # a curve whose minimum is at a grid end counts at that end
    increase: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["data_size", "next_data_size", "p_not_lower", "p_higher"]))

    def _method(self) -> str:
        return f"smooth estimator: a polynomial in log l through at most {self.window} grid points around the grid minimum"

    def _interval_words(self) -> str:
        return "the minimum of bootstrap curves"


@dataclass(frozen=True)
class StepOptimum(OptimumResult):
    """Optimal context lengths of a synthetic sweep (analysis.step_optimum).

    `table`: one row per data size (columns analysis.step_optimum.OPTIMAL_COLUMNS); `increase`:
    per pair of consecutive learnt data sizes, the bootstrap probabilities that l* does not fall /
    strictly rises; `candidates`: the lengths l* can take; `terms` and `theta`: the excess model.
    """

    estimator: ClassVar[str] = "step"
    table: pd.DataFrame
    increase: pd.DataFrame
    candidates: tuple
    terms: tuple
    theta: tuple
    confidence: float
    n_boot: int
    message: str = ""
    boot: np.ndarray = field(default=None, repr=False)  # (n_boot, learnt sizes) bootstrap l*

    def _method(self) -> str:
        values = [int(v) for v in self.candidates]
        if not values:
            return "step estimator: no candidate lengths"
        if len(values) == values[-1] - values[0] + 1 and len(values) > 12:  # R known on the grid only
            where = f"any length from {values[0]} to {values[-1]} (the Bayes risk is known at the grid lengths only)"
        else:
            where = f"one of the {len(values)} lengths from {values[0]} to {values[-1]} where the Bayes risk steps"
        return f"step estimator: the exact Bayes risk plus a smooth excess; l* is {where}"

    def _interval_words(self) -> str:
        return "bootstrap refits, widened where the smooth excess fails to every length the data allow"
