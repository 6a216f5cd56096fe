"""Generated trials tables with a known optimum, for examples, tests and trying the fits.

The surface of forms.loss_surface with b = 0 has the exact optimum law l*(D) = k · D^β
(forms.surface_optimum_b0), so a table generated from it says what every fit should find.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from . import forms

#: A surface with l*(D) = 0.402 · D^0.4 (about 16 at D = 1e4 and 255 at D = 1e7).
EXAMPLE_SURFACE = dict(c0=0.5, c=2.0, gamma=0.5, a=2.0 / 0.402, kappa=0.5, alpha0=0.4, b=0.0)


def surface_trials(context_lengths, data_sizes, seeds=(0, 1, 2), noise=0.002, params=None,
                   rng=0) -> pd.DataFrame:
    """A trials table whose best_val_loss is loss_surface(l, D) · (1 + noise · N(0, 1)).

    Parameters
    ----------
    context_lengths, data_sizes, seeds : sequences
        The grid; every combination is one trial with status 'ok'.
    noise : float, default 0.002
        Relative standard deviation of the loss noise (seed to seed).
    params : dict, optional
        Parameters of forms.loss_surface (default EXAMPLE_SURFACE).
    rng : int or numpy Generator, default 0
        Source of the noise.

    Examples
    --------
    >>> trials = surface_trials([8, 16, 32], [1e4], seeds=[0])
    >>> list(trials.columns[:4]), len(trials)
    (['context_length', 'data_size', 'seed', 'best_val_loss'], 3)
    """
    params = dict(EXAMPLE_SURFACE if params is None else params)
    rng = np.random.default_rng(rng)
    grid = list(itertools.product(data_sizes, context_lengths, seeds))
    d = np.array([g[0] for g in grid], dtype=float)
    l = np.array([g[1] for g in grid], dtype=float)
    loss = forms.loss_surface(l, d, **params) * (1.0 + noise * rng.standard_normal(len(grid)))
    return pd.DataFrame({
        "context_length": [g[1] for g in grid], "data_size": [g[0] for g in grid], "seed": [g[2] for g in grid],
        "best_val_loss": loss, "status": "ok",
    })


def true_optimum(data_size, params=None):
    """l*(D) of a b = 0 surface (EXAMPLE_SURFACE by default), from forms.surface_optimum_b0."""
    p = dict(EXAMPLE_SURFACE if params is None else params)
    if p.get("b", 0.0) != 0.0:
        raise ValueError("the closed-form optimum needs b = 0")
    return forms.surface_optimum_b0(data_size, p["c"], p["gamma"], p["a"], p["kappa"], p["alpha0"])
