"""What every figure shares: a canvas without pyplot, the saved PNG, colours, and log axes labelled
with plain numbers. `analysis.plots` and `analysis.entropy_plots` draw with these; like them, this
module is imported only when something is drawn.

Figures are built as `matplotlib.figure.Figure` and printed by the Agg canvas directly, never
through pyplot, so making a report neither needs a display nor changes the backend of a notebook
that imports them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator


def new_figure(width=7.0, height=4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


PANELS_PER_ROW = 4  # eight data sizes in one row drew each panel a thumbnail wide


def panel_shape(count: int) -> tuple[int, int]:
    """(rows, columns) for `count` panels, one per data size, at most PANELS_PER_ROW a row.

    >>> panel_shape(3), panel_shape(8), panel_shape(5)
    ((1, 3), (2, 4), (2, 4))
    """
    columns = min(count, PANELS_PER_ROW)
    return -(-count // columns), columns


def panel_grid(fig: Figure, rows: int, columns: int, count: int, **share):
    """The (rows, columns) grid of axes and its first `count` axes in reading order; the rest are
    hidden. `share`: subplots' sharex / sharey."""
    grid = fig.subplots(rows, columns, squeeze=False, **share)
    for ax in grid.ravel()[count:]:
        ax.set_visible(False)
    return grid, grid.ravel()[:count]


def save_png(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def colours(values, cmap: str = "viridis", top: float = 0.9) -> dict:
    """One colour per distinct value (data sizes, lengths, thresholds), spread over `cmap` on a log scale."""
    ordered = sorted({float(v) for v in values})
    logs = np.log(ordered)
    span = logs[-1] - logs[0] if len(logs) and logs[-1] > logs[0] else 1.0
    return {v: colormaps[cmap](top * (x - logs[0]) / span) for v, x in zip(ordered, logs)}


def distinct_colours(values) -> dict:
    """One colour per distinct value, told apart at a glance: tab10 by rank up to ten values (on a
    log-spaced colour map neighbouring lengths such as 48 and 64 got near-identical greens), else
    viridis spaced by rank."""
    ordered = sorted({float(v) for v in values})
    if len(ordered) <= 10:
        return {v: colormaps["tab10"](i) for i, v in enumerate(ordered)}
    return {v: colormaps["viridis"](0.9 * i / (len(ordered) - 1)) for i, v in enumerate(ordered)}


def _leading_digit(value: float) -> int:
    return round(value / 10 ** np.floor(np.log10(value)))


def log_axis(ax, which: str, values, label=lambda v: f"{v:g}", ticks_at_values: bool = True) -> None:
    """Log scale on axis `which` ('x' or 'y') labelled with plain numbers (20, 30, 50; never 2×10¹).

    With `ticks_at_values`, a few well-spaced values (a grid of up to 8 lengths or data sizes) get
    one tick each. Otherwise a set spanning under ~1.5 decades is labelled at 1, 2, 3 and 5 × 10^k
    (else a 16..64 grid would show no number at all), a wider one at its decades.
    """
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    values = np.unique(np.asarray(values, dtype=float))
    values = values[np.isfinite(values) & (values > 0)]
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    spaced = len(values) > 1 and np.min(values[1:] / values[:-1]) >= 1.15
    if ticks_at_values and 0 < len(values) <= 8 and (spaced or len(values) == 1):
        axis.set_major_locator(FixedLocator(values))
        axis.set_minor_locator(NullLocator())
    elif len(values) and values.max() / values.min() < 30:
        axis.set_minor_formatter(FuncFormatter(lambda v, _: label(v) if _leading_digit(v) in (2, 3, 5) else ""))


def log_x(ax, values) -> None:
    """Log x axis of context lengths (or other plain numbers), as `log_axis` labels it."""
    log_axis(ax, "x", values)
