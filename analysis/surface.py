"""Joint fit of the whole loss surface loss(l, D) = R_Bayes(l) + L_Approx(l, D).

Parameterisation (forms.loss_surface), with l̃ = l / l_ref:

    loss = c0 + c · l̃^-γ + a · l̃^κ · D^-α(l),   α(l) = α0 · l̃^-b

l_ref is the geometric mean of the grid's context lengths; it only rescales c, a and α0, so the
family of curves does not depend on it, and it keeps the parameters of similar size. D enters
in its own units (d_ref = 1): a reference data size would change the family when b ≠ 0, since
D_ref^α(l) is not a power of l, and the fit would then depend on which sizes the sweep holds.
c0 holds both the Bayes-risk floor C0 and the paper's C0' (losses cannot separate them). The fit
follows the Chinchilla replication (Besiroglu et al. 2024): it is done on log loss, the log of
the sum of the three terms (forms.loss_surface_terms), with a Huber loss (delta 1e-3), by
L-BFGS-B from a grid of starting points, keeping the best; intervals come from refitting
bootstrap resamples of the trials. The amplitudes are fitted as logs, so they stay positive and
the c0 term never vanishes, which keeps the log of the sum finite.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls

try:
    from threadpoolctl import threadpool_limits  # comes with scikit-learn
except ImportError:  # pragma: no cover - without it the fit is only slower
    threadpool_limits = None

from . import _validate, forms, stats
from .present import data_size, number
from .results import SURFACE_PARAMS, SurfaceFit, empty_surface

# theta = (log c0, log c, gamma, log a, kappa, alpha0, b)
_BOUNDS = [(-30, 10), (-30, 10), (1e-3, 5), (-30, 10), (-3, 3), (0, 3), (-2, 3)]
_START_GRID = dict(gamma=(0.3, 1.0), kappa=(0.2, 1.0), alpha0=(0.2, 0.6), b=(0.0, 0.3))  # 16 starts
_DENSE = 401  # points of the context-length grid on which each implied optimum is located


def _natural(theta) -> dict:
    """forms.loss_surface's parameters from theta; theta's rows may be stacked on leading axes."""
    e, lc, gamma, la, kappa, alpha0, b = np.moveaxis(np.asarray(theta, dtype=float), -1, 0)
    return dict(c0=np.exp(e), c=np.exp(lc), gamma=gamma, a=np.exp(la), kappa=kappa, alpha0=alpha0, b=b)


def _objective(theta, u, v, log_y, delta):
    """Σ Huber(log prediction - log loss) / delta and its gradient in theta, for u = log l̃, v = log D."""
    terms = forms.loss_surface_terms(np.exp(u), np.exp(v), **_natural(theta))  # (3, n)
    total = terms.sum(axis=0)
    weight = terms / total  # share of each term in the prediction: d log_pred / d log term
    r = np.log(total) - log_y
    psi = np.clip(r, -delta, delta) / delta
    w0, w1, w2 = psi * weight[0], psi * weight[1], psi * weight[2]
    alpha0, b = theta[5], theta[6]
    decay = forms.data_exponent(np.exp(u), 1.0, b)  # d alpha(l) / d alpha0
    grad = np.array([
        w0.sum(), w1.sum(), -(w1 * u).sum(), w2.sum(), (w2 * u).sum(),
        -(w2 * decay * v).sum(), (w2 * alpha0 * decay * u * v).sum(),
    ])
    return float(forms.huber_loss(r, delta).sum() / delta), grad


def _starting_points(u, v, y):
    """One start per exponent combination of _START_GRID; amplitudes by non-negative least squares."""
    starts = []
    for gamma, kappa, alpha0, b in itertools.product(*_START_GRID.values()):
        # the loss is linear in the three amplitudes: the terms with unit amplitudes are its design
        design = forms.loss_surface_terms(np.exp(u), np.exp(v), 1.0, 1.0, gamma, 1.0, kappa, alpha0, b).T
        amp, _ = nnls(design, y)
        amp = np.log(np.maximum(amp, 1e-6 * y.mean()))  # a zero amplitude still needs a finite log
        starts.append(np.array([amp[0], amp[1], gamma, amp[2], kappa, alpha0, b]))
    return starts


def _minimise(theta0, u, v, log_y, delta, maxiter=500):
    # Well-posed surfaces converge in 40-200 iterations; the cap stops a start that wanders
    # along a flat valley of a degenerate problem (measured: 3,000 iterations, ~1 s each start).
    return minimize(_objective, theta0, args=(u, v, log_y, delta), jac=True, method="L-BFGS-B",
                    bounds=_BOUNDS, options=dict(maxiter=maxiter, ftol=1e-12, gtol=1e-8))


def _implied_optima(thetas: np.ndarray, u_lo: float, u_hi: float, v_sizes: np.ndarray):
    """Minimum over log l̃ in [u_lo, u_hi] of the fitted loss, for each theta row and data size.

    Returns (u_star, side) of shape (B, n_sizes): side -1 / +1 where the minimum sits at the
    range's lower / upper end (u_star is then that end), 0 inside (refined by a parabola
    through the dense grid's three lowest points).
    """
    grid = np.linspace(u_lo, u_hi, _DENSE)
    step = grid[1] - grid[0]
    params = _natural(thetas[:, None, None, :])  # each (B, 1, 1) against (sizes, grid)
    loss = forms.loss_surface(np.exp(grid)[None, :], np.exp(v_sizes)[:, None], **params)  # (B, sizes, grid)
    k = np.argmin(loss, axis=2)
    side = np.where(k == 0, -1, np.where(k == _DENSE - 1, 1, 0))
    kk = np.clip(k, 1, _DENSE - 2)
    y0, y1, y2 = (np.take_along_axis(loss, (kk + s)[..., None], axis=2)[..., 0] for s in (-1, 0, 1))
    curv = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curv > 0, 0.5 * (y0 - y2) / curv, 0.0)
    u_star = np.where(side == 0, grid[kk] + np.clip(shift, -1, 1) * step, grid[k])
    return u_star, side


@_validate.fits_one_configuration
def fit_loss_surface(trials: pd.DataFrame, n_boot: int = 100, seed: int = 0, huber_delta: float = 1e-3,
                     confidence: float = 0.95) -> SurfaceFit:
    """Fit loss(l, D) = c0 + c·l̃^-γ + a·l̃^κ·D^-(α0·l̃^-b) to all usable trials at once.

    Parameters
    ----------
    trials : DataFrame
        Columns context_length, data_size, best_val_loss (and optionally status, seed); only
        usable rows (status 'ok', finite positive loss) enter the fit.
    n_boot : int, default 100
        Bootstrap refits (trials resampled with replacement), each started from the best fit.
    seed : int, default 0
        Seed of the bootstrap.
    huber_delta : float, default 1e-3
        Huber threshold on the log-loss residual.
    confidence : float, default 0.95
        Coverage of the intervals.

    Returns
    -------
    SurfaceFit
        Parameters with bootstrap intervals, R² of log loss, and per data size the optimum the
        surface implies inside the grid's context-length range (`optima`, `optima_frame()`).
        success False with a message when there are too few points to fit seven parameters.

    Examples
    --------
    >>> from analysis.examples import surface_trials
    >>> grid = [8, 16, 32, 64, 128, 256, 512]
    >>> trials = surface_trials(grid, [1e4, 1e5, 1e6], seeds=[0], noise=0.0)
    >>> fit = fit_loss_surface(trials, n_boot=10)
    >>> fit.success, [round(l) for l in fit.optima_frame().l_star]
    (True, [16, 40, 101])
    """
    ok, _ = _validate.split_trials(trials)
    ok = ok[ok["best_val_loss"] > 0]
    lengths, sizes = np.sort(ok["context_length"].unique()), np.sort(ok["data_size"].unique())
    cells = len(ok.groupby(["context_length", "data_size"]))  # seeds repeat a point, they do not add one
    if cells <= len(SURFACE_PARAMS) or len(lengths) < 3 or len(sizes) < 2:
        return empty_surface(
            f"needs more than {len(SURFACE_PARAMS)} distinct (context length, data size) points over at least 3 "
            f"context lengths and 2 data sizes (got {cells} points, {len(lengths)} context lengths, "
            f"{len(sizes)} data sizes)", len(ok))
    l_ref = float(np.exp(np.log(lengths).mean()))
    u = np.log(ok["context_length"].to_numpy(float) / l_ref)
    v = np.log(ok["data_size"].to_numpy(float))  # d_ref = 1 (see the module's docstring)
    log_y = np.log(ok["best_val_loss"].to_numpy(float))
    best, n_starts, boot = _fit_with_bootstrap(u, v, log_y, huber_delta, n_boot, seed)
    point, low, high, se = _parameter_intervals(best.x, boot, confidence)
    resid = np.log(forms.loss_surface(np.exp(u), np.exp(v), **_natural(best.x))) - log_y
    fit = SurfaceFit(
        params=point, params_low=low, params_high=high, params_se=se, l_ref=l_ref, d_ref=1.0,
        r2=stats.r_squared(log_y, float((resid**2).sum())), huber_loss=float(best.fun * huber_delta), n=len(ok),
        n_starts=n_starts, n_boot=len(boot), success=bool(best.success), message="",
        optima=_optima(best.x, boot, lengths, sizes, l_ref, confidence), confidence=confidence,
        context_range=(float(lengths[0]), float(lengths[-1])),
    )
    notes = ([] if best.success else [f"L-BFGS-B: {best.message}"]) + list(parameter_limits(fit).values())
    return dataclasses.replace(fit, message="; ".join(notes))


def _fit_with_bootstrap(u, v, log_y, delta, n_boot, seed):
    """The best of the starts' fits, the number of starts, and `n_boot` refits of resampled points
    (each started from the best fit) as rows of theta."""
    # L-BFGS-B's 7x7 linear algebra is far too small for threads: with BLAS threads on, a
    # busy machine spends >10x longer spinning than computing (measured: 9 s vs 0.7 s).
    with threadpool_limits(1) if threadpool_limits else contextlib.nullcontext():
        starts = _starting_points(u, v, np.exp(log_y))
        best = min((_minimise(s, u, v, log_y, delta) for s in starts), key=lambda f: f.fun)
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(u), len(u))
            boot.append(_minimise(best.x, u[idx], v[idx], log_y[idx], delta, maxiter=300).x)
    return best, len(starts), np.array(boot).reshape(-1, len(SURFACE_PARAMS))


def _parameter_intervals(theta, boot, confidence):
    """Estimate, bootstrap interval and bootstrap standard deviation of each parameter (dicts by name)."""
    tail = (1.0 - confidence) / 2
    point = {name: float(value) for name, value in _natural(theta).items()}
    drawn = _natural(boot)
    low, high, se = {}, {}, {}
    for name in SURFACE_PARAMS:
        values = drawn[name]
        low[name], high[name] = (float(q) for q in np.quantile(values, [tail, 1 - tail])) if len(values) else (
            math.nan, math.nan)
        se[name] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return point, low, high, se


def _optima(theta, boot, lengths, sizes, l_ref, confidence) -> tuple:
    """Per data size, (D, l*, low, high, bracketed, outside) of the fitted surface inside the grid's
    range of lengths; the interval from the bootstrap fits' optima."""
    tail = (1.0 - confidence) / 2
    u_lo, u_hi = math.log(lengths[0] / l_ref), math.log(lengths[-1] / l_ref)
    v_sizes = np.log(sizes)
    u_star, side = _implied_optima(theta[None, :], u_lo, u_hi, v_sizes)
    if len(boot):
        boot_u, _ = _implied_optima(boot, u_lo, u_hi, v_sizes)
        boot_low, boot_high = l_ref * np.exp(np.quantile(boot_u, [tail, 1 - tail], axis=0))
    else:
        boot_low = boot_high = np.full(len(sizes), math.nan)
    optima = []
    for j, size in enumerate(sizes):
        if side[0, j] == 0:
            optima.append((float(size), l_ref * math.exp(u_star[0, j]), float(boot_low[j]), float(boot_high[j]),
                           True, ""))
        else:
            optima.append((float(size), math.nan, math.nan, math.nan, False, "below" if side[0, j] < 0 else "above"))
    return tuple(optima)


# --- What to make of the fit: parameters at their bounds, and its optima beside l* ------------------

_AMPLITUDES = ("c0", "c", "a")  # fitted as logs: their natural lower bound is 0
_NEGLIGIBLE = 1e-6  # a term below this share of every fitted loss cannot be told from no term
_BOUND_TOLERANCE = 2e-3  # of a parameter's allowed range (in the fitted scale: logs for amplitudes)


def _bound_side(name: str, value: float) -> str:
    """'lower' / 'upper' where `value` sits at that bound of parameter `name`, else ''."""
    if not np.isfinite(value) or (name in _AMPLITUDES and value <= 0):
        return ""
    lo, hi = _BOUNDS[SURFACE_PARAMS.index(name)]
    x = math.log(value) if name in _AMPLITUDES else value
    tolerance = _BOUND_TOLERANCE * (hi - lo)
    return "lower" if x - lo < tolerance else "upper" if hi - x < tolerance else ""


def _largest_term_shares(fit: SurfaceFit) -> dict:
    """Per amplitude, the largest share its term takes of the fitted loss over the grid's lengths
    and data sizes."""
    lengths = np.geomspace(*fit.context_range, 50)
    sizes = np.array([row[0] for row in fit.optima], dtype=float)
    l_grid, d_grid = (g.ravel() for g in np.meshgrid(lengths, sizes))
    terms = forms.loss_surface_terms(l_grid, d_grid, **fit.params, l_ref=fit.l_ref, d_ref=fit.d_ref)
    return dict(zip(_AMPLITUDES, (terms / terms.sum(axis=0)).max(axis=1)))


def parameter_limits(fit: SurfaceFit) -> dict:
    """What the bounds of the fit did to each parameter, in words, by name (parameters they left
    alone are not listed).

    An amplitude whose term is under 1e-6 of every fitted loss is at its lower bound 0 (its fitted
    value only says where the optimiser stopped feeling it, and its bootstrap interval is that one
    value again). A parameter at an edge of the box the optimiser searched is at that bound. An
    interval that reaches a bound is cut there: the data do not fix the parameter on that side.
    """
    if not fit.success:
        return {}
    shares = _largest_term_shares(fit)
    notes = {}
    for name in SURFACE_PARAMS:
        value, low, high = fit.params[name], fit.params_low[name], fit.params_high[name]
        side = _bound_side(name, value)
        lo, hi = (math.exp(x) if name in _AMPLITUDES else x for x in _BOUNDS[SURFACE_PARAMS.index(name)])
        if name in shares and shares[name] < _NEGLIGIBLE:
            notes[name] = f"{name} at its lower bound 0 (fitted {number(value, 3)}: under 1e-6 of every fitted loss)"
        elif side:
            notes[name] = f"{name} at its {side} bound {number(lo if side == 'lower' else hi, 3)}"
        elif _bound_side(name, low) == "lower" and _bound_side(name, high) == "upper":
            notes[name] = (f"{name} = {number(value, 3)}, undetermined (its interval is the whole allowed range "
                           f"[{number(lo, 3)}, {number(hi, 3)}])")
        elif _bound_side(name, low) or _bound_side(name, high):
            cut = "lower" if _bound_side(name, low) else "upper"
            notes[name] = f"{name} = {number(value, 3)} [{number(low, 3)}, {number(high, 3)}, cut at its {cut} bound]"
    return notes


def parameter_text(fit: SurfaceFit) -> str:
    """The seven parameters with their intervals, or what their bounds did to them, on one line."""
    notes = parameter_limits(fit)
    return "; ".join(notes.get(name) or f"{name} = {number(fit.params[name], 3)} [{number(fit.params_low[name], 3)}, "
                     f"{number(fit.params_high[name], 3)}]" for name in SURFACE_PARAMS)


def optima_beside_l_star(fit: SurfaceFit, optimal: pd.DataFrame) -> pd.DataFrame:
    """The per-data-size estimates (data_size, l_star, l_star_low, l_star_high, bracketed) beside
    the optima the surface implies (the same columns, prefixed `surface_`)."""
    implied = fit.optima_frame()
    return optimal[["data_size", "l_star", "l_star_low", "l_star_high", "bracketed"]].merge(
        implied.rename(columns={c: f"surface_{c}" for c in implied.columns if c != "data_size"}),
        on="data_size", how="left")


def disagreement_text(fit: SurfaceFit, comparison: pd.DataFrame) -> str:
    """Where the surface's optimum falls outside l*'s interval, which of the two to trust and why
    ('' where they agree).

    l* rests on the losses near each data size's optimum: the smooth estimator fits them alone,
    and the step estimator (synthetic) adds an excess, smooth in l and D, to the exact Bayes risk
    and widens the interval wherever those losses disagree with it. The surface forces the
    study's functional form through every data size, so where the two disagree that form does not
    fit those losses.
    """
    both = comparison[comparison["bracketed"].eq(True) & comparison["surface_bracketed"].eq(True)]
    outside = both[(both["surface_l_star"] < both["l_star_low"]) | (both["surface_l_star"] > both["l_star_high"])]
    if outside.empty:
        return ""
    where = "; ".join(f"D = {data_size(r['data_size'])}: {number(r['surface_l_star'], 3)} against l* = "
                      f"{number(r['l_star'], 3)} [{number(r['l_star_low'], 3)}, {number(r['l_star_high'], 3)}]"
                      for _, r in outside.iterrows())
    return (f"surface vs l*: the surface's optimum falls outside l*'s interval at {where}. Trust l*: it rests on "
            "the losses near each data size's optimum, and its interval widens where they disagree with its model; "
            "the surface forces one functional form through all data sizes "
            f"(R²(log loss) = {number(fit.r2, 3)}), which these losses do not follow.")


def surface_residuals(fit: SurfaceFit, trials: pd.DataFrame) -> pd.DataFrame:
    """The usable trials with the fitted loss and the residual log(loss) - log(fitted) beside them."""
    ok, _ = _validate.split_trials(trials)
    ok = ok[ok["best_val_loss"] > 0].copy()
    ok["fitted_loss"] = fit.predict(ok["context_length"].to_numpy(float), ok["data_size"].to_numpy(float))
    ok["log_residual"] = np.log(ok["best_val_loss"]) - np.log(ok["fitted_loss"])
    return ok
