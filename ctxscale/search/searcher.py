"""The adaptive search on Ray Tune: a `Searcher` that hands out the planner's rounds as Tune trials.

`build_search` (before Ray starts) lists every point the search may run, as the grid would name it
(`l{l}_d{D}_s{seed}_{config_hash}`, the spec's own config), and reads the stored rows of the
spec's configuration: a grid run's points count, and a stopped launch resumes where it was. While
the sweep runs, `AdaptiveSearch.next_group` plans a data size's next round as soon as its last one
is in (`plan.Planner`), groups the round's points as the experiment groups a grid's (synthetic: one
packed trial per data size and seed) and registers each group in the runner's `groups`, which its
callbacks (storage, progress, curves) look trials up in. A Tune trial's config names its group and
its points (`trial.points`); the trainable finds them in the search's `universe`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import time
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from ray.tune.search import Searcher

from .. import files, store
from ..spec.common import Grid, SpecError
from ..experiments.grid import expand_grid
from ..identity import science_hash
from ..spec.point import Point
from ..sweep.progress import SweepProgress, point_reports, trial_label, trial_name
from .plan import LADDER_RATIO, Planner, SearchSettings, ladder, step_candidates

RESULT_COLUMNS = ("trial_id", "context_length", "data_size", "seed", "best_val_loss", "status", "tasks",
                  "string_length", "bayes_risk")
METRIC_COLUMNS = RESULT_COLUMNS[4:]  # what a point's report adds to its coordinates
DECISIONS_FILE = Path("report") / "search.jsonl"  # in the sweep's folder: one line per decision
MAX_SEEDS = 3  # seeds per point the search may reach, or the grid's count when it lists more


def _usable(spec, length: int) -> bool:
    """Whether the spec accepts `length` as a grid length (GPT: whole sequences fill a step)."""
    raw = spec.model_dump(mode="json")
    raw["grid"] = {**raw["grid"], "context_length": [length]}
    try:
        type(spec).model_validate(raw)
    except ValueError:
        return False
    return True


def _snapped(spec, rungs: list[int], spacing: float) -> list[int]:
    """Each rung, or the nearest length the spec accepts within half a spacing of it."""
    out = set()
    for rung in rungs:
        reach = max(1, int(rung * (math.sqrt(spacing) - 1)))
        found = next((l for d in range(reach + 1) for l in (rung - d, rung + d) if l >= 1 and _usable(spec, l)), None)
        if found is not None:
            out.add(found)
    return sorted(out)


def search_settings(spec) -> SearchSettings:
    """The candidates, start, seeds and stops of the spec's search; SpecError naming the field."""
    grid, search = spec.grid, spec.search
    lo, hi = search.span(grid.context_length)
    where = f"spec {spec.name!r}: search.context_length"
    string_length = getattr(getattr(spec, "data", None), "string_length", None)
    saturation = None
    if spec.experiment == "synthetic":
        from ..spec.synthetic import load_task_list

        if hi > string_length:
            raise SpecError(f"{where}: {hi} exceeds data.string_length = {string_length}")
        candidates, saturation = step_candidates(load_task_list(spec.data.tasks), string_length, lo, hi)
        spacing = LADDER_RATIO
    else:
        spacing = 2 ** 0.5  # a smooth U: its vertex needs the window's curvature, which a wider spacing shows
        candidates = _snapped(spec, ladder([l for l in grid.context_length if lo <= l <= hi] or [lo], lo, hi), LADDER_RATIO)
        if not candidates:
            raise SpecError(f"{where}: no length in [{lo}, {hi}] is usable by this spec")
    start = tuple(l for l in grid.context_length if lo <= l <= hi)
    if not start:
        raise SpecError(f"{where}: [{lo}, {hi}] holds none of grid.context_length {grid.context_length}")
    seeds = list(grid.seed)
    while len(seeds) < MAX_SEEDS:
        seeds.append(max(seeds) + 1)
    return SearchSettings(candidates=tuple(candidates), start=tuple(sorted(start)), data_sizes=tuple(sorted(grid.data_size)),
                          seeds=tuple(seeds), target_ratio=search.target_ratio, max_points=search.max_points,
                          spacing=spacing, saturation=saturation)


def universe(spec, settings: SearchSettings) -> list[Point]:
    """Every point the search may run, each as the grid would make it (id, hash), carrying the spec itself."""
    lengths = sorted(set(settings.candidates) | set(settings.start))
    wide = spec.model_copy(update={"grid": Grid(context_length=lengths, data_size=list(settings.data_sizes),
                                                seed=list(settings.seeds))})
    return [dataclasses.replace(point, spec=spec) for point in expand_grid(wide)]


def analysed_trials(results_dir: Path, spec) -> pd.DataFrame:
    """Every stored row of the spec's configuration, as `ctxscale analyze` reads them (by trial id)."""
    if not store.stored_trials(results_dir, spec.name):
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    rows = store.load_results(results_dir, sweep=spec.name)
    return rows[rows["config_hash"] == science_hash(spec)].reset_index(drop=True)


def stored_results(results_dir: Path, spec) -> pd.DataFrame:
    """The finished rows stored under the spec's configuration (a grid run's and earlier launches')."""
    rows = analysed_trials(results_dir, spec)
    rows = rows[rows["status"].isin(("ok", "diverged")) & rows["data_size"].isin(spec.grid.data_size)]
    return rows[[c for c in RESULT_COLUMNS if c in rows.columns]].reset_index(drop=True)


class AdaptiveSearch:
    """The driver's state of one launch's search (see the module docstring)."""

    def __init__(self, spec, experiment, results_dir: Path, points: list[Point], stored: pd.DataFrame):
        self.spec, self.experiment, self.results_dir = spec, experiment, Path(results_dir)
        self.settings = search_settings(spec)
        self.planner = Planner(self.settings)
        self.points = points
        self.universe = {point.trial_id: [point] for point in points}  # what the trainable looks points up in
        self.by_coordinates = {(p.context_length, p.data_size, p.seed): p for p in points}
        self.results: list[dict] = stored.to_dict("records")
        self.launched = {(int(r["context_length"]), int(r["data_size"]), int(r["seed"])) for r in self.results}
        self.groups: dict[str, list[Point]] = {}  # every group handed out: the runner's callbacks read it
        self.queue: list[tuple[int, list[Point]]] = []  # (data size, group) planned, not handed out yet
        self.open: dict[str, int] = {}  # group handed out and not closed -> its data size
        self.ran: set[str] = set()  # the points this launch handed to Tune
        self.rounds: dict[int, int] = {}
        self.dirty = True  # results changed since the last plan

    # ---------------------------------------------------------------- planning
    def _busy(self) -> set:
        return set(self.open.values()) | {size for size, _ in self.queue}

    def _plan(self) -> None:
        frame = pd.DataFrame(self.results, columns=None) if self.results else pd.DataFrame(columns=list(RESULT_COLUMNS))
        for decision in self.planner.decide(frame, self._busy(), self.launched):
            if decision.action == "wait":
                continue
            size = decision.data_size
            self.rounds[size] = self.rounds.get(size, 0) + 1
            chosen = [self.by_coordinates[(l, size, seed)] for l, seed in decision.points]
            self.launched |= {(l, size, seed) for l, seed in decision.points}
            self.queue += [(size, group) for group in self.experiment.group(chosen)]
            self._log({"round": self.rounds[size], **decision.to_dict()})
        self.dirty = False

    def _log(self, entry: dict) -> None:
        path = store.sweep_dir(self.results_dir, self.spec.name) / DECISIONS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in entry.items()}
        with open(path, "a") as out:
            out.write(json.dumps({"time": time.time(), **clean}) + "\n")

    def next_group(self) -> Any:
        """(group name, group) to run next; None: nothing now; Searcher.FINISHED: the search is done."""
        if not self.queue and self.dirty:
            self._plan()
        if not self.queue:
            return Searcher.FINISHED if not self.open else None
        size, group = self.queue.pop(0)
        name = self.experiment.group_name(group)
        while name in self.groups:  # a later round's group may span the same lengths
            name = f"{name}_r{self.rounds[size]}"
        self.groups[name], self.open[name] = group, size
        self.ran |= {point.trial_id for point in group}
        return name, group

    # ---------------------------------------------------------------- results
    def record(self, name: str, result: dict) -> None:
        for point_id, metrics in point_reports(self.groups[name], result):
            if metrics.get("status") in ("ok", "diverged"):
                point = self.universe[point_id][0]
                row = {k: getattr(point, k) for k in ("trial_id", "context_length", "data_size", "seed")}
                row.update({k: metrics[k] for k in METRIC_COLUMNS if k in metrics})
                self.results = [r for r in self.results if (r["context_length"], r["data_size"], r["seed"]) !=
                                (row["context_length"], row["data_size"], row["seed"])] + [row]

    def close(self, name: str) -> None:
        self.open.pop(name, None)
        self.dirty = True

    # ---------------------------------------------------------------- the end
    def final_table(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(trials, l* table): the rows `ctxscale analyze` reads for this sweep's configuration, in its
        order, and the estimator's table for them with analyze's bootstrap: the summary and analyze agree."""
        trials = analysed_trials(self.results_dir, self.spec)
        return trials, self.planner.table(trials)

    def summary(self) -> str:
        """Per data size: l* with its interval, the lengths tried, and why it stopped."""
        frame, table = self.final_table()
        rows = {int(r["data_size"]): r for _, r in table.iterrows()}
        lines = [f"adaptive search of {self.spec.name!r}: {len(self.launched)} points of {self.settings.max_points} "
                 "(stored ones included)"]
        for size in self.settings.data_sizes:
            here = frame[(frame["data_size"] == size) & (frame["status"] == "ok")]
            tried = sorted({int(l) for l in here["context_length"]})
            row = rows.get(size)
            why = self.planner.stopped.get(size, "budget" if len(self.launched) >= self.settings.max_points else "running")
            why = "budget (its even share of it)" if why == "share" else why
            answer = summary_answer(row) if row is not None else "no estimate"
            lines.append(f"  D = {size:>12,}: {answer}; tried {tried} ({len(here)} points); stopped: {why}")
        return "\n".join(lines)

    def finish(self, verbose: int) -> None:
        """Log and print the summary: it is the search's result, so `--quiet` prints it too."""
        text = self.summary()
        self._log({"action": "end", "summary": text})
        print(text, flush=True)


def summary_answer(row) -> str:
    """A data size's answer in the words `ctxscale analyze` prints it (`analysis.answers`)."""
    from analysis.answers import Status, answer_text, row_status

    if row_status(row) == Status.NOT_LEARNT:
        return "not learnt"
    note = row.get("note")
    return answer_text(row) or "no estimate" + (f" ({note})" if isinstance(note, str) and note else "")


class AdaptiveSearcher(Searcher):
    """Ray Tune's view of an `AdaptiveSearch`: each suggestion is one group of points."""

    def __init__(self, search: AdaptiveSearch):
        super().__init__()
        self.search = search
        self.trials: dict[str, str] = {}  # Tune trial id -> group name

    def suggest(self, trial_id: str):
        picked = self.search.next_group()
        if picked is None or picked == Searcher.FINISHED:
            return picked
        name, group = picked
        self.trials[trial_id] = name
        label = trial_label(name, group)
        return {"trial": {"id": name, "points": [p.trial_id for p in group]},
                **{k: v for k, v in label.items() if k != "id"}}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.trials:
            self.search.record(self.trials[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self.trials:
            if result:
                self.search.record(self.trials[trial_id], result)
            self.search.close(self.trials[trial_id])

    _STATE = ("results", "launched", "groups", "queue", "open", "ran", "rounds", "dirty")

    def save(self, checkpoint_path: str) -> None:
        state = {key: getattr(self.search, key) for key in self._STATE}
        state.update(trials=self.trials, stopped=self.search.planner.stopped, seeded=self.search.planner.seeded)
        files.write_bytes(Path(checkpoint_path), pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        self.trials = state.pop("trials")
        self.search.planner.stopped = state.pop("stopped")
        self.search.planner.seeded = state.pop("seeded", {})
        for key, value in state.items():
            setattr(self.search, key, value)
        self.search.dirty = True


class SearchProgress(SweepProgress):
    """The sweep's progress table for groups the search makes as it goes: a group's rows join when it starts."""

    def on_trial_start(self, iteration, trials, trial, **info):
        name = trial_name(trial)
        fresh = SweepProgress({name: self.groups[name]}).points
        self.points.update({k: v for k, v in fresh.items() if k not in self.points})
        super().on_trial_start(iteration, trials, trial, **info)



def build_search(spec, experiment, results_dir: Path) -> AdaptiveSearch:
    """The search of an adaptive spec, before Ray starts: its points, and the rows stored for it."""
    points = universe(spec, search_settings(spec))
    return AdaptiveSearch(spec, experiment, results_dir, points, stored_results(results_dir, spec))
