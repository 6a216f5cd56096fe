"""The Bayes-risk side: the law C0 + C / l^γ, and the synthetic task's exact Bayes risk vs trained loss."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit

from . import _validate, forms, stats
from .present import data_size, number
from .results import BayesRiskFit

_GAMMA_GRID = np.geomspace(1e-2, 10.0, 61)  # profile over gamma for the starting point


def fit_bayes_risk(context_length, loss, config_hash=None) -> BayesRiskFit:
    """Fit R_Bayes(l) = c0 + c / l ** gamma by least squares.

    For a fixed gamma the model is linear in (c0, c), so the start is the best gamma of a grid
    with its exact (c0, c); `scipy.optimize.curve_fit` then refines all three, and the standard
    errors are the square roots of its covariance (residual variance × (JᵀJ)⁻¹).

    Parameters
    ----------
    context_length : array-like
        Context lengths l (positive).
    loss : array-like
        Cross-entropy (or any loss) at those lengths, e.g. a pretrained model's measured CE.
    config_hash : array-like, optional
        The configuration of each point, e.g. the `config_hash` column of the frame the points
        come from: points of several configurations raise ValueError naming the hashes.

    Returns
    -------
    BayesRiskFit
        c0, c, gamma with standard errors, R², RMSE; success False with a message when there
        are fewer than 3 points. With exactly 3 points the curve passes through them and the
        standard errors are NaN.

    Examples
    --------
    >>> l = np.array([16, 32, 64, 128, 256, 512])
    >>> fit = fit_bayes_risk(l, 1.5 + 4.0 / l ** 0.6)
    >>> round(fit.c0, 4), round(fit.c, 4), round(fit.gamma, 4)
    (1.5, 4.0, 0.6)
    """
    _validate.one_configuration(config_hash, "fit_bayes_risk")
    l, y = _validate.positive_pairs(context_length, loss, "context_length", "loss")
    n = len(l)
    nan = math.nan
    if n < 3 or len(np.unique(l)) < 3:
        return BayesRiskFit(nan, nan, nan, nan, nan, nan, nan, nan, n, False,
                            f"needs at least 3 distinct context lengths, got {len(np.unique(l))}")
    # at a fixed gamma, c0 + c · l^-gamma is a line in x = l^-gamma: one line fit per grid gamma
    profile = stats.least_squares(stats.line_design(l[None, :] ** -_GAMMA_GRID[:, None]), y)
    best = int(np.argmin(profile.sse))
    (c0, c), gamma = profile.coef[best], _GAMMA_GRID[best]
    message = ""
    try:
        with warnings.catch_warnings():
            # an exact fit (3 points) has no covariance: reported below as NaN standard errors
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(forms.bayes_risk_law, l, y, p0=[c0, c, gamma],
                                   bounds=([-np.inf, -np.inf, 1e-4], [np.inf, np.inf, 50.0]), max_nfev=20000)
        success = True
    except RuntimeError as err:  # no convergence: keep the profile start, say so
        popt, pcov, success, message = np.array([c0, c, gamma]), np.full((3, 3), np.inf), False, str(err)
    ss_res = float(((y - forms.bayes_risk_law(l, *popt)) ** 2).sum())
    se = np.sqrt(np.diag(pcov)) if n > 3 else np.full(3, nan)
    se = np.where(np.isfinite(se), se, nan)
    if n == 3:
        message = "3 points: the curve passes through them, no standard errors"
    return BayesRiskFit(
        c0=float(popt[0]), c=float(popt[1]), gamma=float(popt[2]), c0_se=float(se[0]), c_se=float(se[1]),
        gamma_se=float(se[2]), r2=stats.r_squared(y, ss_res), rmse=math.sqrt(ss_res / n), n=n,
        success=success, message=message,
    )


def is_synthetic(trials: pd.DataFrame) -> bool:
    """True for a synthetic sweep's trials: they carry the exact Bayes risk (a task list or a
    stored bayes_risk), which the step estimator and the synthetic plots need."""
    return isinstance(trials, pd.DataFrame) and any(
        c in trials.columns and trials[c].notna().any() for c in ("tasks", "bayes_risk"))


def with_exact_risk(rows: pd.DataFrame, who: str) -> pd.DataFrame:
    """`rows` with their exact Bayes risk in `bayes_risk`; ValueError naming `who` when they carry none."""
    if not ({"tasks", "bayes_risk"} & set(rows.columns)):
        raise ValueError(f"{who} needs the exact Bayes risk: a 'tasks' or 'bayes_risk' column (a synthetic sweep's trials)")
    return rows.assign(bayes_risk=_exact_risk(rows))


def _exact_risk(rows: pd.DataFrame) -> np.ndarray:
    """Exact Bayes risk of each row: from its task list when stored, else its bayes_risk column."""
    risk = rows["bayes_risk"].to_numpy(float) if "bayes_risk" in rows.columns else np.full(len(rows), np.nan)
    if "tasks" not in rows.columns:
        return risk
    risk = risk.copy()
    lengths = rows["string_length"] if "string_length" in rows.columns else pd.Series(100, index=rows.index)
    for (tasks, length), idx in rows.groupby([rows["tasks"].astype(str), lengths]).groups.items():
        if tasks in ("", "None", "nan"):
            continue
        pos = rows.index.get_indexer(idx)
        risk[pos] = forms.synthetic_bayes_risk(tasks, rows.loc[idx, "context_length"].to_numpy(float), int(length))
    return risk


def synthetic_gap(trials: pd.DataFrame) -> pd.DataFrame:
    """Trained best loss against the exact Bayes risk, per (context length, data size).

    Parameters
    ----------
    trials : DataFrame
        A synthetic sweep's trials: besides the usual columns, `tasks` (JSON [l, a] list) and
        `string_length`, or a stored `bayes_risk` column.

    Returns
    -------
    DataFrame
        context_length, data_size, best_loss (mean over usable seeds), best_loss_sd, n_seeds,
        bayes_risk (nats), gap = best_loss - bayes_risk and relative_gap = gap / bayes_risk (NaN
        where the risk is 0). The gap is the approximation loss L_Approx(l, D) the model left.

    Examples
    --------
    >>> trials = pd.DataFrame({"context_length": [2, 5], "data_size": 100, "best_val_loss": [0.5, 0.3],
    ...                        "tasks": "[[2, 1], [5, 3], [150, 4]]", "string_length": 100})
    >>> synthetic_gap(trials)[["bayes_risk", "gap"]].round(4).values.tolist()
    [[0.4621, 0.0379], [0.231, 0.069]]
    """
    ok = with_exact_risk(_validate.split_trials(trials)[0], "synthetic_gap")
    grouped = ok.groupby(["context_length", "data_size"])
    table = grouped.agg(best_loss=("best_val_loss", "mean"), best_loss_sd=("best_val_loss", "std"),
                        n_seeds=("best_val_loss", "size"), bayes_risk=("bayes_risk", "mean")).reset_index()
    table["gap"] = table["best_loss"] - table["bayes_risk"]
    with np.errstate(divide="ignore", invalid="ignore"):
        table["relative_gap"] = np.where(table["bayes_risk"] > 0, table["gap"] / table["bayes_risk"], np.nan)
    return table.sort_values(["data_size", "context_length"]).reset_index(drop=True)


def gap_summary(gap: pd.DataFrame) -> str:
    """One line on the largest data size's gap to the exact Bayes risk (a `synthetic_gap` table).

    No model beats the Bayes risk on average; a best loss below it is noise of the validation
    rows, and the line says so with its size against the seed-to-seed spread there.

    >>> gap = pd.DataFrame({"data_size": 2e6, "context_length": [84, 94], "gap": [-0.0002, 0.0007],
    ...                     "best_loss_sd": [0.0003, 0.0002], "n_seeds": 3})
    >>> print(gap_summary(gap))  # doctest: +NORMALIZE_WHITESPACE
    synthetic: at D = 2,000,000 best loss − exact Bayes risk ranges -0.0002 .. 0.0007 nats (synthetic_gap.csv);
    below zero is noise: no model beats the Bayes risk on average, and -0.0002 nats at l = 84 is 1.2 standard
    errors of its 3 seeds' mean (sd 0.0003)
    """
    largest = gap[gap["data_size"] == gap["data_size"].max()]
    low, high = largest["gap"].min(), largest["gap"].max()
    text = (f"synthetic: at D = {data_size(largest['data_size'].iloc[0])} best loss − exact Bayes risk ranges "
            f"{number(low, 3)} .. {number(high, 3)} nats (synthetic_gap.csv)")
    if not low < 0:
        return text
    cell = largest.loc[largest["gap"].idxmin()]
    where = f"{number(low, 3)} nats at l = {number(cell['context_length'])}"
    spread = cell["best_loss_sd"] / np.sqrt(cell["n_seeds"]) if cell["n_seeds"] > 1 else np.nan
    size = (f" is {-low / spread:.1f} standard errors of its {int(cell['n_seeds'])} seeds' mean "
            f"(sd {number(cell['best_loss_sd'], 2)})" if np.isfinite(spread) and spread > 0
            else " (one seed: no spread to compare it with)")
    return f"{text}; below zero is noise: no model beats the Bayes risk on average, and {where}{size}"


def synthetic_risk_curve(trials: pd.DataFrame, points: int = 200) -> pd.DataFrame:
    """The exact Bayes risk on a fine grid of integer context lengths over the sweep's range (for plots)."""
    ok, _ = _validate.split_trials(trials)
    if "tasks" not in ok.columns or ok.empty:
        table = synthetic_gap(trials)
        return table[["context_length", "bayes_risk"]].drop_duplicates().sort_values("context_length")
    lo, hi = int(ok["context_length"].min()), int(ok["context_length"].max())
    length = int(ok["string_length"].iloc[0]) if "string_length" in ok.columns else 100
    top = max(hi, min(hi * 1.5, length))  # no context is longer than the string
    lengths = np.unique(np.round(np.geomspace(max(lo / 1.5, 1), top, points)).astype(int))
    risk = forms.synthetic_bayes_risk(str(ok["tasks"].iloc[0]), lengths, length)
    return pd.DataFrame({"context_length": lengths, "bayes_risk": risk})
