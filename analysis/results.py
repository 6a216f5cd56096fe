"""Frozen result objects of the fits: numbers computed once in the fit, then only read.

Each result carries its parameters, their uncertainty, R², the number of points, `success` and a
`message`, and offers `summary()` (text) and `to_dict()` (JSON-safe: NaN becomes None). A fit
that cannot run (too few points) returns a result with success False instead of raising, so a
report can say why a number is missing.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from . import forms


def json_safe(value):
    """Turn NumPy scalars/arrays, tuples and non-finite floats into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value, digits=4):
    return "nan" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


class _Result:
    def to_dict(self) -> dict:
        """All fields as plain JSON values (NaN → None)."""
        return json_safe(dataclasses.asdict(self))


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

    def summary(self) -> str:
        if not self.success:
            return f"law l* = k·D^β: not fitted ({self.message})"
        pct = round(100 * self.confidence)
        return (
            f"law l* = k·D^β: k = {_fmt(self.coefficient)}, β = {_fmt(self.exponent, 3)} "
            f"[{_fmt(self.exponent_low, 3)}, {_fmt(self.exponent_high, 3)}] ({pct} % interval), "
            f"R² = {_fmt(self.r2, 3)}, {self.n} points" + (f"; {self.message}" if self.message else "")
        )


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

    def predict(self, context_length):
        """c0 + c / l ** gamma."""
        return forms.bayes_risk_law(context_length, self.c0, self.c, self.gamma)

    def summary(self) -> str:
        if not self.success:
            return f"Bayes-risk law C0 + C/l^γ: not fitted ({self.message})"
        return (
            f"Bayes-risk law C0 + C/l^γ: C0 = {_fmt(self.c0)} ± {_fmt(self.c0_se, 2)}, "
            f"C = {_fmt(self.c)} ± {_fmt(self.c_se, 2)}, γ = {_fmt(self.gamma, 3)} ± {_fmt(self.gamma_se, 2)}, "
            f"R² = {_fmt(self.r2, 4)}, {self.n} points" + (f"; {self.message}" if self.message else "")
        )


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

    def predict(self, context_length, data_size):
        """The fitted loss at (l, D)."""
        return forms.loss_surface(context_length, data_size, **self.params, l_ref=self.l_ref, d_ref=self.d_ref)

    def bayes_risk(self, context_length):
        """The fitted R_Bayes(l) part (it carries c0, which also holds the paper's C0')."""
        p = self.params
        return forms.bayes_risk_law(np.asarray(context_length, dtype=float) / self.l_ref, p["c0"], p["c"], p["gamma"])

    def optima_frame(self):
        """The implied optima as a DataFrame, one row per data size."""
        import pandas as pd  # the result itself stays plain data

        columns = ["data_size", "l_star", "l_star_low", "l_star_high", "bracketed", "outside"]
        return pd.DataFrame([dict(zip(columns, row)) for row in self.optima], columns=columns)

    def summary(self) -> str:
        if not self.success:
            return f"surface fit: not fitted ({self.message})"
        parts = ", ".join(
            f"{name} = {_fmt(self.params[name], 3)} [{_fmt(self.params_low[name], 3)}, {_fmt(self.params_high[name], 3)}]"
            for name in SURFACE_PARAMS
        )
        return (
            f"surface fit loss = c0 + c·l̃^-γ + a·l̃^κ·D^-(α0·l̃^-b) (l̃ = l/{_fmt(self.l_ref)}): "
            f"{parts}; R²(log loss) = {_fmt(self.r2, 4)}, {self.n} points, {self.n_boot} bootstrap fits"
            + (f"; {self.message}" if self.message else "")
        )


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


@dataclass(frozen=True)
class StepOptimum(_Result):
    """Optimal context lengths of a synthetic sweep (see the module's docstring).

    `table`: one row per data size (columns OPTIMAL_COLUMNS); `increase`: per pair of consecutive
    learnt data sizes, the bootstrap probabilities that l* does not fall / strictly rises;
    `candidates`: the lengths l* can take; `terms` and `theta`: the excess model.
    """

    table: pd.DataFrame
    increase: pd.DataFrame
    candidates: tuple
    terms: tuple
    theta: tuple
    confidence: float
    n_boot: int
    message: str = ""
    boot: np.ndarray = field(default=None, repr=False)  # (n_boot, learnt sizes) bootstrap l*

    def summary(self) -> str:
        lines = [f"optimal context length per data size ({self.confidence:.0%} interval; step estimator: "
                 f"exact Bayes risk + a smooth excess; candidates {_short(self.candidates)})"]
        for _, r in self.table.iterrows():
            lines.append(f"  D = {r['data_size']:>12,.0f}: " + _row_text(r))
        for _, r in self.increase.iterrows():
            lines.append(f"  D {r['data_size']:,.0f} -> {r['next_data_size']:,.0f}: P(l* does not fall) = "
                         f"{r['p_not_lower']:.2f}, P(l* rises) = {r['p_higher']:.2f}")
        if self.message:
            lines.append("  " + self.message)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return json_safe({
            "estimator": "step", "confidence": self.confidence, "n_boot": self.n_boot, "message": self.message,
            "candidates": list(self.candidates), "terms": list(self.terms), "theta": list(self.theta),
            "table": self.table.to_dict(orient="records"), "increase": self.increase.to_dict(orient="records"),
        })


def _short(values) -> str:
    values = [int(v) for v in values]
    return ", ".join(map(str, values)) if len(values) <= 12 else f"{values[0]}, {values[1]}, ..., {values[-1]} ({len(values)})"


def _row_text(r) -> str:
    if not r["learnt"]:
        return r["note"]
    if r["bracketed"]:
        text = f"l* = {r['l_star']:g} [{r['l_star_low']:g}, {r['l_star_high']:g}]"
    else:
        text = f"optimum at the grid's {'lower' if r['outside'] == 'below' else 'upper'} end (l* {'<=' if r['outside'] == 'below' else '>='} {r['l_star_low' if r['outside'] == 'below' else 'l_star_high']:g})"
    text += f"  grid best {r['grid_l_best']:g}, {r['n_seeds']} seed(s); top candidates {r['top_candidates']}"
    return text + (f"  ({r['note']})" if r["note"] else "")
