"""The text the `ctxscale` command prints: the progress of a running sweep, its summary at the
end, and stored tables shown as a reader wants them (grid coordinates first, sorted as numbers)."""
from __future__ import annotations

import io
from collections import Counter

import pandas as pd

STATUSES = ("running", "pending", "ok", "diverged", "failed")
COORDINATES = ("context_length", "data_size", "seed")  # a point of a training sweep
SORT_KEYS = ("model", *COORDINATES, "step", "epoch")  # rows sort by these, where present


def status_counts(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "none stored"


def best_loss_table(trials: pd.DataFrame) -> str:
    """Best validation loss (mean over seeds) per context length (rows) and data size (columns);
    '*' marks the best context length of each data size."""
    ok = trials[trials["status"] == "ok"]
    if ok.empty:
        return "(no successful trials)"
    table = ok.pivot_table(index="context_length", columns="data_size", values="best_val_loss", aggfunc="mean")
    best = table.idxmin(axis=0)
    cells = {
        size: [("" if pd.isna(v) else f"{v:.4f}" + ("*" if length == best[size] else " "))
               for length, v in table[size].items()]
        for size in table.columns
    }
    shown = pd.DataFrame(cells, index=table.index)
    shown.columns = [f"D={size:,}" for size in table.columns]
    shown.index.name = "context_length"
    footer = "best context length per data size: " + ", ".join(
        f"D={size:,}: {best[size]}" for size in table.columns)
    return shown.to_string() + "\n" + footer


# --- while a sweep runs (sweep.progress.SweepProgress) ---------------------------------------

def _point_name(point: dict) -> str:
    return f"l{point['context_length']}" if "context_length" in point else str(point.get("model", "?"))


def _running_cell(running: list[dict]) -> str:
    """'6 (l20 ... l80) at epoch 12': how many run, which, and how far they are."""
    if not running:
        return ""
    names = [_point_name(point) for point in running]
    shown = ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"
    for key in ("step", "epoch"):
        values = sorted({int(point[key]) for point in running if key in point})
        if values:
            at = f"{key} {values[0]}" if len(values) == 1 else f"{key}s {values[0]}-{values[-1]}"
            return f"{len(running)} ({shown}) at {at}"
    return f"{len(running)} ({shown}) starting"


def _best_cell(points: list[dict]) -> str:
    """The lowest loss reported so far (running points' best included), and whose it is."""
    scored = [point for point in points if "best" in point]
    if not scored:
        return ""
    best = min(scored, key=lambda point: point["best"][1])
    return f"{_point_name(best)} {best['best'][1]:.4f}"


def progress_table(points: list[dict], elapsed: str) -> str:
    """One progress update: the points by status, then a row per data size (per model for a
    measure sweep) with how many of its points are done, the best loss so far and the running ones.
    Each point is its coordinates, `status`, the latest `epoch`/`step` and `best` = (name, loss)."""
    counts = Counter(point["status"] for point in points)
    head = f"== {elapsed} elapsed: {len(points)} points, " + ", ".join(
        f"{counts[status]} {status}" for status in STATUSES if counts[status])
    by = next((key for key in ("data_size", "model") if all(key in point for point in points)), None)
    groups: dict = {}
    for point in points:
        groups.setdefault(point[by] if by else "all", []).append(point)
    rows = []
    for key in sorted(groups):
        members = groups[key]
        done = sum(point["status"] not in ("pending", "running") for point in members)
        rows.append({by or "points": f"{key:,}" if isinstance(key, int) else key, "done": f"{done}/{len(members)}",
                     "best so far": _best_cell(members),
                     "running": _running_cell([point for point in members if point["status"] == "running"])})
    return f"\n{head}\n{pd.DataFrame(rows).to_string(index=False)}"


# --- after a sweep (`ctxscale sweep`) ---------------------------------------------------------

def sweep_summary(name: str, folder, trials: pd.DataFrame, table: str) -> str:
    """What a finished launch prints: its points by status, each distinct error once (its last
    line), and the experiment's table of results (`table`, empty when nothing is stored)."""
    failed = trials[trials["status"] == "failed"] if not trials.empty else trials
    lines = ["", f"sweep {name}: {status_counts(trials) if not trials.empty else 'none stored yet'}; "
             f"results in {folder}"]
    for error in dict.fromkeys(failed["error"] if not failed.empty else []):
        lines.append(f"failed: {(error.strip().splitlines() or ['(no message)'])[-1]}")
    return "\n".join(lines + ([table] if table else []))


# --- stored tables (`ctxscale results`) ------------------------------------------------------

def with_coordinates(frame: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """`frame` (a history, a point's own table) with the grid coordinates of its rows' points,
    from the trials rows, where it lacks them: placed after `trial_id`."""
    wanted = [c for c in COORDINATES if c not in frame and c in trials]
    if "trial_id" not in frame or "trial_id" not in trials or not wanted:
        return frame
    points = trials.drop_duplicates("trial_id").set_index("trial_id")[wanted]
    joined = frame.join(points, on="trial_id")
    order = [c for c in frame.columns if c != "trial_id"]
    return joined[["trial_id", *wanted, *order]]


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in grid order: by model, context length, data size, seed, then step or epoch, as
    numbers (an id sorted as text puts l20_d100000 before l20_d50000)."""
    keys = [key for key in SORT_KEYS if key in frame]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True) if keys else frame


def bulky_columns(frame: pd.DataFrame, width: int = 60) -> list[str]:
    """Text columns, but `error`, with a value longer than `width` (JSON lists and specs, e.g.
    `tasks`, `config`): they drown a table."""
    bulky = []
    for column in frame.columns.drop("error", errors="ignore"):
        text = frame[column][frame[column].map(lambda v: isinstance(v, str))]
        if len(text) and text.str.len().max() > width:
            bulky.append(column)
    return bulky


def for_terminal(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The columns a terminal table shows, and a note naming those left out: not the bulky text
    columns or the flat `config.*` spec (csv and json keep them), an error as its last line; first
    the row's point (its id and coordinates), then `config_hash`, which tells configurations apart."""
    bulky = bulky_columns(frame)
    flat = [c for c in frame if c.startswith("config.")]
    note = ""
    if bulky or flat:
        frame = frame.drop(columns=bulky + flat)
        note = f"not shown: {', '.join(bulky + ([f'{len(flat)} config.* columns'] if flat else []))} (--columns to choose)"
    if "error" in frame:
        frame = frame.assign(error=frame["error"].map(
            lambda e: e.strip().splitlines()[-1][:80] if isinstance(e, str) and e.strip() else e))
    lead = [c for c in ("trial_id", "model", *COORDINATES, "config_hash") if c in frame]
    return frame[lead + [c for c in frame.columns if c not in lead]], note


def render(frame: pd.DataFrame, form: str) -> str:
    """`frame` as csv, json (records; times readable, not epoch ms) or an aligned text table."""
    if form == "csv":
        out = io.StringIO()
        frame.to_csv(out, index=False)
        return out.getvalue().rstrip("\n")
    if form == "json":
        return frame.to_json(orient="records", indent=1, date_format="iso")
    with pd.option_context("display.max_rows", 500, "display.max_columns", 40, "display.width", 200):
        return frame.to_string(index=False)
