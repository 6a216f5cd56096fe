"""What an adaptive search runs next, from the results so far: pure decisions, no Ray, no training.

Per data size, one round at a time (the next round once the last one's points are in):

- start: the grid's lengths for the seeding data sizes (the smallest, the middle and the largest);
  every other data size waits for them, then starts with a window around the l* that a log-log
  line through their estimates predicts (l* rises with D: the line's slope is kept >= 0);
- extend: while the interval (or the point estimate) reaches the shortest or longest length tried,
  the next length out (one window spacing away) runs, past the grid's ends up to the range's limits;
  where the point estimate itself sits at that edge, the next two;
- refine: untried candidates inside the interval run, at most `refine` a round, nearest l* first;
- seed: when no candidate is left inside a too-wide interval, noise keeps it wide: the next seed
  runs at the `window` lengths tried nearest l*, within the interval and one neighbour on each side
  (a wide interval's far lengths rarely hold the minimum, and seeding all of them drains the budget);
- share: past its first round, no data size takes more than an even share of the budget: what the
  stopped sizes left, divided over the others. A size at its share stops with 'share', and goes on
  when a stop elsewhere frees points. Without it the first sizes to ask take everything, and
  marginal sizes, where seeds learn or not by chance, ask most;
- stop: 'target_ratio' (l_high / l_low <= target), 'not_learnt' (nothing learnt, the shortest
  length tried too), 'saturated' (synthetic: l* at the last length where a task can still enter),
  'at_or_below' / 'range_edge' (l* at the range's lower / upper limit: a one-sided answer),
  'resolution' (the interval spans adjacent candidates only), 'noise' (the last seed round did not
  narrow the interval, or every seed the search may add has run), 'failed' (every point of the data
  size failed; they run again next launch), 'share' (see above), 'budget'.
- reopen: the synthetic step estimator fits the excess jointly over data sizes, so a later size's
  results move an earlier size's interval. A stop that reads the interval ('target_ratio',
  'resolution') is re-examined at every estimate; where it no longer holds, the size reopens
  (budget permitting) and its decision says 'reopened: interval now [a, b]'.

l* and its interval come from the project's estimator, `analysis.optimal_context_length`, run on all
results at once, with `ctxscale analyze`'s bootstrap (n_boot, seed) and its row order (by trial id
where the rows carry one): the stops read the estimate that `analyze` prints for the same rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from analysis.report import ANALYZE_N_BOOT, ANALYZE_SEED  # the stops read the l* that `analyze` prints

LADDER_RATIO = 2 ** 0.25  # candidate spacing of a smooth (GPT) search
INTERVAL_STOPS = ("target_ratio", "resolution")  # stops that read the interval: re-examined at each estimate


@dataclass(frozen=True)
class SearchSettings:
    candidates: tuple[int, ...]  # every length the search may try, ascending, inside the range
    start: tuple[int, ...]       # the grid's lengths inside the range: where seeding data sizes start
    data_sizes: tuple[int, ...]
    seeds: tuple[int, ...]       # the order in which seeds are added (the grid's first)
    target_ratio: float = 1.25
    max_points: int = 200
    spacing: float = 2 ** 0.5    # ratio between neighbouring lengths of a window, and of an extension
    window: int = 5              # lengths of a fresh window
    refine: int = 3              # new lengths at most per refinement round
    saturation: Optional[int] = None  # synthetic: the last length where a task can still enter
    n_boot: int = ANALYZE_N_BOOT

    @property
    def seeding(self) -> tuple[int, ...]:
        sizes = sorted(self.data_sizes)
        return tuple(sorted({sizes[0], sizes[len(sizes) // 2], sizes[-1]}))


@dataclass
class Decision:
    data_size: int
    action: str  # start | extend | refine | seed | wait | stop
    points: list[tuple[int, int]] = field(default_factory=list)  # (context_length, seed)
    reason: str = ""
    estimate: dict = field(default_factory=dict)
    ratio: float = math.nan  # a seed round's l_high / l_low: the noise stop compares the next one with it

    def to_dict(self) -> dict:
        return {"data_size": self.data_size, "action": self.action, "points": [list(p) for p in self.points],
                "reason": self.reason, **self.estimate}


def _nearest(candidates, target: float, exclude=()) -> Optional[int]:
    usable = [c for c in candidates if c not in exclude]
    return min(usable, key=lambda c: abs(math.log(c / target))) if usable else None


def window_around(settings: SearchSettings, centre: float) -> list[int]:
    """The candidates nearest centre·spacing^k for the window's k (centred, distinct)."""
    half = settings.window // 2
    picked = {_nearest(settings.candidates, centre * settings.spacing**k) for k in range(-half, half + 1)}
    return sorted(picked)


def next_out(settings: SearchSettings, edge: int, direction: int) -> Optional[int]:
    """The candidate nearest `edge`·spacing^direction among those beyond `edge` (None at the range's end)."""
    beyond = [c for c in settings.candidates if (c - edge) * direction > 0]
    return _nearest(beyond, edge * settings.spacing**direction)


def estimate_of(row: Optional[pd.Series], tried: list[int]) -> dict:
    """l*, its interval and how to read them, from one row of the estimator's table."""
    def number(key):
        value = row.get(key) if row is not None else None
        return float(value) if value is not None and pd.notna(value) else math.nan

    outside = str(row.get("outside", "") or "") if row is not None else ""
    low, high, l_star = number("l_star_low"), number("l_star_high"), number("l_star")
    point = l_star
    if not math.isfinite(point):  # an end of the lengths: the estimator's own end, else the best tried
        point = {"below": low, "above": high}.get(outside, math.nan)
        point = point if math.isfinite(point) else number("grid_l_best")
    learnt = row.get("learnt", True) if row is not None else True
    status = str(row.get("status", "") or "") if row is not None else ""
    not_learnt = status == "not_learnt" or (learnt is False or learnt == 0) and "not learnt" in str(row.get("note", ""))
    return {"l_star": l_star, "l_star_low": low, "l_star_high": high, "point": point, "outside": outside,
            "status": status, "not_learnt": bool(not_learnt), "tried": list(tried)}


def interval_words(est: dict) -> str:
    """'[a, b]', the estimate's interval ('?' for an end the estimator left open)."""
    ends = [f"{v:g}" if math.isfinite(v) else "?" for v in (est["l_star_low"], est["l_star_high"])]
    return f"[{ends[0]}, {ends[1]}]"


def predict(table: pd.DataFrame, size: int, settings: SearchSettings, stopped: dict) -> Optional[float]:
    """l* at `size` from a log-log line through the seeding sizes' estimates (None until each has one
    or has stopped without one)."""
    points = {}
    for _, row in table.iterrows():
        est = estimate_of(row, [])
        if not est["not_learnt"] and math.isfinite(est["point"]) and row["data_size"] != size:
            points[float(row["data_size"])] = est["point"]
    if any(s not in points and s not in stopped for s in settings.seeding if s != size) or not points:
        return None
    d, l = np.log(list(points)), np.log(list(points.values()))
    if len(points) == 1:
        return float(np.exp(l[0]))
    slope, intercept = np.polyfit(d, l, 1)
    slope = max(slope, 0.0)
    intercept = float(np.mean(l - slope * d))
    return float(np.exp(intercept + slope * math.log(size)))


class Planner:
    """Decides each idle data size's next round from all results so far (see the module docstring)."""

    def __init__(self, settings: SearchSettings, estimator: Optional[Callable] = None):
        self.settings = settings
        if estimator is None:
            from analysis import optimal_context_length as estimator
        self.estimator = estimator
        self.stopped: dict[int, str] = {}  # data size -> why it stopped
        self.seeded: dict[int, float] = {}  # data size -> l_high / l_low when its last seed round ran

    def table(self, results: pd.DataFrame) -> pd.DataFrame:
        """The estimator's table for `results`, as `ctxscale analyze` computes it: its bootstrap, and
        the rows in the store's order (by trial id), since the bootstrap draws seed deviations in row order."""
        ok = results[results["status"] == "ok"] if len(results) else results
        if ok.empty:
            return pd.DataFrame(columns=["data_size"])
        if "trial_id" in results.columns:
            results = results.sort_values("trial_id", kind="stable").reset_index(drop=True)
        return self.estimator(results, n_boot=self.settings.n_boot, seed=ANALYZE_SEED).table

    def decide(self, results: pd.DataFrame, busy: set, launched: set) -> list[Decision]:
        """Decisions for every data size that is neither running a round nor stopped.

        `results`: finished points (context_length, data_size, seed, best_val_loss, status, and the
        Bayes-risk columns of a synthetic sweep); `launched`: every (l, D, seed) run or running, stored
        ones included (the budget counts them, and none runs twice)."""
        table = self.table(results)
        rows = {int(r["data_size"]): r for _, r in table.iterrows()}
        wanted = []  # (size, decision, the stop it held): first every size's wish, then the budget
        for size in self.settings.data_sizes:
            held = self.stopped.get(size)
            if size in busy or (held is not None and held not in INTERVAL_STOPS + ("share",)):
                continue
            here = results[(results["data_size"] == size) & (results["status"] == "ok")] if len(results) else results
            tried = sorted(int(l) for l in set(here["context_length"])) if len(here) else []
            mine = {(l, s) for l, d, s in launched if d == size}
            decision = self._one(size, rows.get(size), tried, mine, table)
            if decision.action == "stop":
                self.stopped[size] = decision.reason
            if not (held is not None and decision.action == "stop" and decision.reason == held):
                wanted.append((size, decision, held))  # else the stop still holds: nothing new to say
        # the share: what the sizes that stopped left, evenly over the others (at least one point)
        used = {size: sum(1 for _, d, _ in launched if d == size) for size in self.settings.data_sizes}
        done = [size for size, why in self.stopped.items() if why != "share"]
        share = math.ceil((self.settings.max_points - sum(used[size] for size in done))
                          / max(len(used) - len(done), 1))
        left = self.settings.max_points - len(launched)
        decisions = []
        for size, decision, held in wanted:
            if decision.points and left <= 0:
                decision = Decision(size, "stop", [], "budget", decision.estimate)
            mine_left = len(decision.points) if decision.action == "start" else share - used[size]  # the grid's, whole
            if decision.points and left > 0 and mine_left <= 0:
                if held == "share":
                    continue  # still at its share: nothing new to say
                decision = Decision(size, "stop", [], "share", decision.estimate)
            decision.points = decision.points[:max(min(left, mine_left), 0)]
            left -= len(decision.points)
            if decision.action == "seed" and decision.points:
                self.seeded[size] = decision.ratio
            self.stopped.pop(size, None)
            if decision.action == "stop":
                self.stopped[size] = decision.reason
            if held == "share" and decision.points:
                decision.reason = f"resumed: a stop elsewhere freed budget; {decision.reason}"
            elif held is not None and held != "share":  # a stop on the interval that no longer holds
                decision.reason = f"reopened: interval now {interval_words(decision.estimate)}; {decision.reason}"
            decisions.append(decision)
        return decisions

    def _one(self, size: int, row, tried: list[int], mine: set, table) -> Decision:
        s = self.settings
        est = estimate_of(row, tried)
        first_seed = s.seeds[0]

        def fresh(lengths, seed=first_seed):
            return [(l, seed) for l in sorted(set(lengths)) if (l, seed) not in mine]

        if not tried:
            if mine:  # every point of this size ran and none is usable
                return Decision(size, "stop", [], "failed", est)
            centre = predict(table, size, s, self.stopped)
            if centre is None:
                if size in s.seeding:
                    return Decision(size, "start", fresh(s.start), "the grid's lengths", est)
                return Decision(size, "wait", [], "waits for the seeding data sizes", est)
            return Decision(size, "start", fresh(window_around(s, centre)), f"window around predicted l* {centre:.4g}", est)
        if est["not_learnt"]:
            lowest = s.candidates[0]
            if lowest not in tried and fresh([lowest]):
                return Decision(size, "extend", fresh([lowest]), "not learnt so far: tries the shortest length", est)
            more = fresh([l for l in s.start if l not in tried]) or fresh(window_around(s, tried[-1]))
            if len(tried) >= 3 or not more:
                return Decision(size, "stop", [], "not_learnt", est)
            return Decision(size, "extend", more, "not learnt so far: the grid's other lengths", est)
        if est["status"] == "saturated":
            return Decision(size, "stop", [], "saturated", est)
        if len(tried) < 3:
            points = fresh(window_around(s, est["point"] if math.isfinite(est["point"]) else tried[0]))
            if points:
                return Decision(size, "extend", points, "fewer than 3 lengths", est)
        return self._narrow(size, est, tried, mine, fresh)

    def _narrow(self, size: int, est: dict, tried: list[int], mine: set, fresh) -> Decision:
        s = self.settings
        low, high, point = est["l_star_low"], est["l_star_high"], est["point"]
        lo_t, hi_t = tried[0], tried[-1]
        point_low = est["outside"] == "below" or point <= lo_t  # the estimate itself at an edge
        point_high = est["outside"] == "above" or point >= hi_t
        below, above = next_out(s, lo_t, -1), next_out(s, hi_t, 1)
        # an edge of the tried lengths that can still be the optimum: go one length further out, and
        # where the estimate itself sits there, two (each round waits for its trials, and the
        # optimum is likely further out still)
        out = []
        for first, direction, hit, at_point in (
                (below, -1, point_low or (math.isfinite(low) and low <= lo_t), point_low),
                (above, 1, point_high or (math.isfinite(high) and high >= hi_t), point_high)):
            if hit and first is not None:
                second = next_out(s, first, direction) if at_point else None
                out += [first] if second is None else [first, second]
        if fresh(out):
            return Decision(size, "extend", fresh(out), "an edge of the lengths tried can still be the optimum", est)
        if point_low and below is None:
            return Decision(size, "stop", [], "at_or_below", est)
        # past the last length where a task can enter, the risk is flat and the excess rises
        if s.saturation is not None and point >= s.saturation:
            return Decision(size, "stop", [], "saturated", est)
        if point_high and above is None:
            return Decision(size, "stop", [], "range_edge", est)
        if not (math.isfinite(low) and math.isfinite(high)):  # no noise estimate: the grid minimum's neighbours
            below, above = [l for l in tried if l < point], [l for l in tried if l > point]
            low, high = (below[-1] if below else lo_t), (above[0] if above else hi_t)
        if high / low <= s.target_ratio:
            return Decision(size, "stop", [], "target_ratio", est)
        inside = [c for c in s.candidates if low < c < high and c not in tried]
        if inside:
            inside.sort(key=lambda c: abs(math.log(c / point)) if math.isfinite(point) else 0.0)
            return Decision(size, "refine", fresh(inside[:s.refine]), "untried candidates inside the interval", est)
        between = [c for c in s.candidates if low <= c <= high]
        if len(between) <= 2:
            return Decision(size, "stop", [], "resolution", est)
        # noise, not spacing: one more seed over the interval and a neighbour on each side
        span = [l for l in tried if low <= l <= high]
        span += [l for l in (max([l for l in tried if l < low], default=None),
                             min([l for l in tried if l > high], default=None)) if l is not None]
        points = []
        for length in sorted(set(span), key=lambda l: abs(math.log(l / point)) if math.isfinite(point) else 0.0):
            seed = next((sd for sd in s.seeds if (length, sd) not in mine), None)
            if seed is not None:
                points.append((length, seed))
        points = sorted(points[:s.window])
        # a seed round that did not narrow the interval: seeds draw chance failures, not a sharper U
        if points and high / low >= self.seeded.get(size, math.inf):
            return Decision(size, "stop", [], "noise", est)
        if points:
            return Decision(size, "seed", points, "noise keeps the interval wide: one more seed", est, high / low)
        return Decision(size, "stop", [], "noise", est)


def replay(settings: SearchSettings, frame: pd.DataFrame, rounds: int = 300, estimator: Optional[Callable] = None):
    """Run a search offline on known losses: (planner, its final table, the points launched).

    `frame` holds a row for every point the search may ask for (context_length, data_size, seed,
    best_val_loss, status and, for synthetic, the Bayes-risk columns); each round's points are
    'trained' by looking their row up. For simulated sweeps with a known l*, and for replaying a
    stored run (bench/search_offline.py). `estimator`: the Planner's (default: the project's)."""
    lookup = frame.set_index(["context_length", "data_size", "seed"])
    planner, rows, launched = Planner(settings, estimator), [], set()
    for _ in range(rounds):
        results = pd.DataFrame(rows, columns=list(frame.columns))
        new = [(l, d.data_size, s) for d in planner.decide(results, set(), launched) for l, s in d.points]
        if not new:
            break
        for point in new:
            launched.add(point)
            rows.append({**lookup.loc[point].to_dict(), "context_length": point[0], "data_size": point[1],
                         "seed": point[2]})
    results = pd.DataFrame(rows, columns=list(frame.columns))
    return planner, planner.table(results), launched


def step_candidates(tasks, string_length: int, lo: int, hi: int) -> tuple[list[int], Optional[int]]:
    """(candidates, saturation) of a synthetic search: the range's lower limit and every length in
    (lo, hi] where the Bayes risk steps (a task's farthest bit, max(l, a), enters); saturation is the
    last such length within the string (None when the range stops short of it)."""
    reach = sorted({max(l, a) for l, a in tasks if l != a and max(l, a) <= string_length})
    last = reach[-1] if reach else None
    steps = [r for r in reach if lo < r <= hi]
    return sorted({lo, *steps}), (last if last is not None and last <= hi else None)


def ladder(anchors, lo: int, hi: int, ratio: float = LADDER_RATIO) -> list[int]:
    """A geometric ladder through the smallest anchor (the grid's shortest length), ratio apart,
    inside [lo, hi], with the anchors and the range's limits."""
    base = min(anchors)
    k_lo, k_hi = math.ceil(math.log(lo / base, ratio) - 1e-9), math.floor(math.log(hi / base, ratio) + 1e-9)
    rungs = {round(base * ratio**k) for k in range(k_lo, k_hi + 1)}
    return sorted(l for l in rungs | set(anchors) | {lo, hi} if lo <= l <= hi)
