"""Functional forms of the analysis, one tiny pure function each, formula in the docstring.

Everything here is NumPy in, NumPy out, with no fitting and no I/O, so the fits, the plots and
the tests all evaluate the same formulas. Notation as in the study (arXiv 2502.01481): l = context
length, D = training-data size.
"""
from __future__ import annotations

import numpy as np



def power_law(x, coefficient, exponent):
    """y = coefficient · x ** exponent (the law l*(D) = k · D^β).

    >>> float(power_law(100.0, 2.0, 0.5))
    20.0
    """
    return coefficient * np.asarray(x, dtype=float) ** exponent


def bayes_risk_law(context_length, c0, c, gamma):
    """R_Bayes(l) = c0 + c / l ** gamma: falls with l and flattens at c0.

    >>> float(bayes_risk_law(4.0, 1.0, 2.0, 0.5))
    2.0
    """
    return c0 + c * np.asarray(context_length, dtype=float) ** (-gamma)


def data_exponent(context_length, alpha0, b, l_ref=1.0):
    """alpha(l) = alpha0 · (l / l_ref) ** (-b): the data exponent, falling with l when b > 0.

    The paper ties the fall to the intrinsic dimension growing with l; a power of l keeps alpha
    positive for every l, which alpha0 - alpha1 · log l would not.

    >>> float(data_exponent(4.0, 0.5, 0.5))
    0.25
    """
    return alpha0 * (np.asarray(context_length, dtype=float) / l_ref) ** (-b)


def approximation_loss(context_length, data_size, a, kappa, alpha0, b, l_ref=1.0, d_ref=1.0):
    """L_Approx(l, D) = a · (l/l_ref) ** kappa / (D/d_ref) ** alpha(l), alpha(l) as in data_exponent.

    The constant C0' of the paper is folded into the Bayes-risk constant c0: the two cannot be
    told apart from losses alone.

    >>> round(float(approximation_loss(1.0, 100.0, 3.0, 1.0, 0.5, 0.0)), 6)
    0.3
    """
    l_rel = np.asarray(context_length, dtype=float) / l_ref
    d_rel = np.asarray(data_size, dtype=float) / d_ref
    return a * l_rel**kappa * d_rel ** (-data_exponent(l_rel, alpha0, b))


def loss_surface_terms(context_length, data_size, c0, c, gamma, a, kappa, alpha0, b, l_ref=1.0, d_ref=1.0):
    """The three terms of loss_surface, stacked on a new first axis: c0, c·l̃^-γ, a·l̃^κ·D̃^-α(l).

    Their sum is the loss; the surface fit also needs each term's share of it (its gradient).
    Parameters broadcast with l and D, so one call evaluates many parameter sets.

    >>> loss_surface_terms(1.0, 1.0, 0.5, 1.0, 0.5, 2.0, 0.5, 0.3, 0.0).tolist()
    [0.5, 1.0, 2.0]
    """
    l_rel = np.asarray(context_length, dtype=float) / l_ref
    return np.stack(np.broadcast_arrays(
        c0, bayes_risk_law(l_rel, 0.0, c, gamma), approximation_loss(context_length, data_size, a, kappa, alpha0, b,
                                                                     l_ref, d_ref)))


def loss_surface(context_length, data_size, c0, c, gamma, a, kappa, alpha0, b, l_ref=1.0, d_ref=1.0):
    """loss(l, D) = c0 + c · (l/l_ref)^(-gamma) + a · (l/l_ref)^kappa · (D/d_ref)^(-alpha(l)).

    R_Bayes(l) + L_Approx(l, D) of the paper, with alpha(l) = alpha0 · (l/l_ref)^(-b): the sum of
    loss_surface_terms. With b = 0 the optimum is exactly a power law in D (see surface_optimum_b0).

    >>> float(loss_surface(1.0, 1.0, 0.5, 1.0, 0.5, 2.0, 0.5, 0.3, 0.0))
    3.5
    """
    return loss_surface_terms(context_length, data_size, c0, c, gamma, a, kappa, alpha0, b, l_ref, d_ref).sum(axis=0)


def surface_optimum_b0(data_size, c, gamma, a, kappa, alpha0, l_ref=1.0, d_ref=1.0):
    """The exact optimum of loss_surface when b = 0 (alpha constant):

    d loss / d l = 0  ⇔  (l/l_ref)^(gamma + kappa) = gamma · c · (D/d_ref)^alpha0 / (kappa · a),

    so l* = k · D^β with β = alpha0 / (gamma + kappa). Needs kappa > 0 (else no interior optimum).

    >>> round(float(surface_optimum_b0(1.0, 1.0, 1.0, 1.0, 1.0, 0.5)), 6)
    1.0
    """
    d_rel = np.asarray(data_size, dtype=float) / d_ref
    ratio = gamma * c * d_rel**alpha0 / (kappa * a)
    return l_ref * ratio ** (1.0 / (gamma + kappa))


def synthetic_bayes_risk(tasks, context_length, string_length=100):
    """Exact Bayes risk (nats) of the synthetic XOR task at each context length.

    A task (l, a) labels a string with bit[a-1] XOR bit[l-1]; a model that sees the first c bits
    predicts it perfectly when both bits are visible and is reduced to a fair coin otherwise
    (also when a bit lies beyond the string, max(l, a) > string_length). A task l == a inside the
    string has the constant label 0 and costs nothing at any c. Rows cycle through the tasks
    evenly, so

        R_Bayes(c) = (fraction of tasks with max(l, a) > min(c, string_length), l == a <= string_length
                      excepted) · ln 2.

    This delegates to `ctxscale.data.synthetic.bayes_risk`, the formula the generator's labels obey.

    Parameters
    ----------
    tasks : array-like of shape (T, 2) or JSON string
        The [l, a] task list.
    context_length : int or array-like
        Context length(s) c.
    string_length : int, default 100
        Bits per string (L_max).

    Returns
    -------
    float or ndarray
        The risk, shaped like `context_length`.

    Examples
    --------
    >>> tasks = [[2, 1], [5, 3], [150, 4]]
    >>> synthetic_bayes_risk(tasks, [1, 2, 5, 100]) / np.log(2)
    array([1.        , 0.66666667, 0.33333333, 0.33333333])
    """
    if isinstance(tasks, str):
        import json  # only a JSON string needs it

        tasks = json.loads(tasks)
    # one formula for the generator and the analysis (that module needs only numpy)
    from ctxscale.data.synthetic import bayes_risk

    return bayes_risk(tasks, context_length, string_length)


EXCESS_TERMS = ("1", "x", "x2", "y", "xy")


def excess_design(x, y, terms=EXCESS_TERMS):
    """The columns of log E of smooth_excess: 1, x, x², y, x·y (those named in `terms`, in their
    order) for x = log l and y = log D, both centred by the caller.

    >>> excess_design(np.array([1.0, 2.0]), 3.0, ("1", "x2", "xy")).tolist()
    [[1.0, 1.0, 3.0], [1.0, 4.0, 6.0]]
    """
    x, y = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    columns = {"1": np.ones_like(x), "x": x, "x2": x * x, "y": y, "xy": x * y}
    return np.column_stack([columns[t] for t in terms])


def smooth_excess(design, theta):
    """E = exp(design · θ): what training adds to a synthetic sweep's exact Bayes risk, smooth in
    log l and log D (the step estimator's model; design from excess_design). theta (P,) or
    (B, P) gives (n,) or (B, n). The exponent is clipped to [-40, 5], so that a wild step of the
    fit neither overflows nor underflows to an excess of exactly 0.

    >>> smooth_excess(excess_design(np.array([0.0, 1.0]), 0.0, ("1", "x")), np.array([np.log(0.01), 1.0])).round(5).tolist()
    [0.01, 0.02718]
    """
    return np.exp(np.clip(theta @ design.T, -40, 5))


def huber_loss(residual, delta=1e-3):
    """Huber ρ(r) = r²/2 for |r| ≤ delta, delta · (|r| - delta/2) beyond (Hoffmann et al. 2022).

    >>> huber_loss(np.array([0.0005, 0.01]), 1e-3)
    array([1.25e-07, 9.50e-06])
    """
    r = np.abs(np.asarray(residual, dtype=float))
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))
