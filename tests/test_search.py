"""The adaptive search for l*: its decisions on simulated sweeps with a known optimum (no training),
its settings from a spec, and one real small CPU sweep on Ray that stops on its budget and resumes."""
from __future__ import annotations

import collections
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import optimal_context_length
from analysis.answers import answer_text
from analysis.calibration import simulate_gpu_like_sweep, simulate_smooth_sweep, simulate_step_sweep, study_tasks
from ctxscale import store
from ctxscale.search.plan import Planner, SearchSettings, ladder, replay, step_candidates
from ctxscale.experiments import experiment_of
from ctxscale.search.searcher import DECISIONS_FILE, AdaptiveSearcher, build_search, search_settings
from ctxscale.search.searcher import summary_answer
from ctxscale.spec import SpecError, load_spec, parse_spec
from ctxscale.identity import TRIAL_ID, science_hash

from conftest import TINY_SPEC

PAPER_GRID = [27, 32, 36, 40, 43, 47, 52, 58, 63, 71, 84, 94]
PAPER_SIZES = [50_000, 75_000, 85_000, 100_000, 150_000, 200_000, 400_000, 2_000_000]


def covers(table: pd.DataFrame, truth: dict) -> dict:
    return {float(r.data_size): bool(r.l_star_low - 1e-9 <= truth[float(r.data_size)] <= r.l_star_high + 1e-9)
            for r in table.itertuples()}


def test_step_search_brackets_the_true_optimum_with_a_fifth_of_the_grid():
    candidates, saturation = step_candidates(study_tasks(), 100, 27, 94)
    assert candidates[:3] == [27, 28, 29] and candidates[-2:] == [84, 93] and saturation == 93
    frame, truth = simulate_step_sweep("own", sorted(set(candidates) | set(PAPER_GRID)), PAPER_SIZES, 3, 0.003,
                                       np.random.default_rng(1))
    settings = SearchSettings(tuple(candidates), tuple(PAPER_GRID), tuple(PAPER_SIZES), (0, 1, 2),
                              spacing=2 ** 0.25, saturation=saturation, max_points=288)
    planner, table, launched = replay(settings, frame)
    assert set(planner.stopped) == set(PAPER_SIZES)  # every data size ended, none on the budget
    assert "budget" not in planner.stopped.values()
    assert all(covers(table, truth).values()), (table, truth)
    assert planner.stopped[2_000_000] == "saturated" and truth[2_000_000.0] == 93.0
    widths = (table["l_star_high"] / table["l_star_low"]).dropna()
    assert (widths <= 1.25).all()
    assert len(launched) < len(PAPER_GRID) * len(PAPER_SIZES) * 3 / 4  # the grid's 288 points


def coordinates(frame: pd.DataFrame) -> set:
    return {(int(l), int(d), int(s)) for l, d, s in frame[["context_length", "data_size", "seed"]].to_numpy()}


def test_a_stop_on_the_interval_reopens_when_a_later_size_widens_it():
    """The step estimator fits the excess jointly over data sizes: a later size whose losses follow
    another excess widens the intervals of sizes that had stopped at the target ratio."""
    candidates, saturation = step_candidates(study_tasks(), 100, 27, 94)
    early, _ = simulate_step_sweep("own", candidates, [100_000, 200_000], 1, 0.003, np.random.default_rng(1))
    late, _ = simulate_step_sweep("power", candidates, [400_000], 1, 0.003, np.random.default_rng(2))
    both = pd.concat([early, late], ignore_index=True)
    settings = SearchSettings(tuple(candidates), tuple(PAPER_GRID), (100_000, 200_000, 400_000), (0, 1, 2),
                              spacing=2 ** 0.25, saturation=saturation)
    launched = coordinates(both)
    planner = Planner(settings)
    planner.decide(early, {400_000}, launched)  # 400k's round is still running
    assert planner.stopped == {100_000: "target_ratio", 200_000: "target_ratio"}
    reopened = {d.data_size: d for d in planner.decide(both, set(), launched)}
    for size in (100_000, 200_000):
        decision, est = reopened[size], reopened[size].estimate
        assert est["l_star_high"] / est["l_star_low"] > settings.target_ratio
        assert decision.reason.startswith(f"reopened: interval now [{est['l_star_low']:g}, {est['l_star_high']:g}]; ")
        assert decision.action != "stop" and decision.points and size not in planner.stopped
    # with the budget spent a size that no longer meets its stop ends on the budget, and says why
    spent = Planner(dataclasses.replace(settings, max_points=len(launched)))
    spent.decide(early, {400_000}, launched)
    ended = {d.data_size: d for d in spent.decide(both, set(), launched)}
    assert spent.stopped[200_000] == "budget" and ended[200_000].action == "stop"
    assert ended[200_000].reason.startswith("reopened: interval now [") and ended[200_000].reason.endswith("; budget")
    # a stop that still holds is not repeated
    assert not [d for d in spent.decide(both, set(), launched) if d.data_size != 400_000]


def test_the_stops_read_the_estimate_that_analyze_prints():
    """The planner's table is `optimal_context_length` with analyze's bootstrap, on the rows in the
    store's order (by trial id): what the search stopped on is what `analyze` shows."""
    candidates, saturation = step_candidates(study_tasks(), 100, 27, 94)
    frame, _ = simulate_step_sweep("collapse", sorted(set(candidates) | set(PAPER_GRID)), PAPER_SIZES, 3, 0.03,
                                   np.random.default_rng(3))
    settings = SearchSettings(tuple(candidates), tuple(PAPER_GRID), tuple(PAPER_SIZES), (0, 1, 2), spacing=2 ** 0.25,
                              saturation=saturation)
    planner, table, launched = replay(settings, frame)
    results = frame[frame.set_index(["context_length", "data_size", "seed"]).index.isin(list(launched))]
    pd.testing.assert_frame_equal(table, optimal_context_length(results).table)
    ratio = table.set_index("data_size").eval("l_star_high / l_star_low")
    assert all(ratio[size] <= settings.target_ratio for size, why in planner.stopped.items() if why == "target_ratio")
    # rows that carry trial ids are read in their order, whatever order they came in
    named = results.assign(trial_id=[f"l{l}_d{d}_s{s}_0a1b2c3d" for l, d, s in results[
        ["context_length", "data_size", "seed"]].to_numpy()])
    shuffled = named.sample(frac=1.0, random_state=0)
    in_store_order = named.sort_values("trial_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(planner.table(shuffled), optimal_context_length(in_store_order).table)


class SimulatedTune:
    """Tune's side of a search, without Ray: asks the searcher for trials and completes each with the
    simulated losses of its points, storing their rows as the sweep's storage callback would."""

    def __init__(self, spec, frame: pd.DataFrame, results_dir):
        self.spec, self.results_dir, self.count = spec, results_dir, 0
        self.lookup = frame.set_index(["context_length", "data_size", "seed"])["best_val_loss"]
        self.tasks = frame["tasks"].iloc[0]

    def step(self, searcher: AdaptiveSearcher):
        """One trial: suggested, 'trained', stored and completed; the suggestion (None / FINISHED as given)."""
        trial_id = f"trial{self.count}"
        self.count += 1
        config = searcher.suggest(trial_id)
        if isinstance(config, dict):
            self.complete(searcher, trial_id, config)
        return config

    def complete(self, searcher: AdaptiveSearcher, trial_id: str, config: dict) -> None:
        reports = []
        for point_id in config["trial"]["points"]:
            point = searcher.search.universe[point_id][0]
            loss = float(self.lookup[(point.context_length, point.data_size, point.seed)])
            reports.append({"point": point_id, "status": "ok", "best_val_loss": loss, "tasks": self.tasks,
                            "string_length": 100})
            row = {**point.coordinates(), **reports[-1], "config_hash": point.config_hash, "experiment": "synthetic",
                   "finished_at": pd.Timestamp.now(tz="UTC")}
            store.write_trial(self.results_dir, self.spec.name, point_id, row, [])
        searcher.on_trial_complete(trial_id, {"points": reports})


def paper_search(results_dir, max_points: int):
    """An adaptive search of the study's grid (a real spec and store), and simulated losses for it."""
    spec = load_spec("sweeps/synthetic-paper.yaml", ["search.method=adaptive", f"search.max_points={max_points}"])
    settings = search_settings(spec)
    frame, _ = simulate_step_sweep("collapse", sorted(set(settings.candidates) | set(PAPER_GRID)), PAPER_SIZES, 3,
                                   0.03, np.random.default_rng(4))
    return spec, SimulatedTune(spec, frame, results_dir)


def test_the_search_summary_agrees_with_analyze(tmp_path):
    spec, tune = paper_search(tmp_path, max_points=40)
    searcher = AdaptiveSearcher(build_search(spec, experiment_of(spec), tmp_path))
    while isinstance(tune.step(searcher), dict):
        pass
    search = searcher.search
    assert len(search.launched) == 40 and "budget" in search.planner.stopped.values()
    stored = store.load_results(tmp_path, sweep=spec.name)
    expected = optimal_context_length(stored).table  # what `ctxscale analyze` fits (its defaults)
    pd.testing.assert_frame_equal(search.final_table()[1], expected)
    summary = search.summary()
    bracketed = [row for _, row in expected.iterrows() if row["status"] == "bracketed"]
    assert bracketed and all(f"D = {row['data_size']:>12,}: {answer_text(row)};" in summary for row in bracketed)


def searcher_state(searcher: AdaptiveSearcher) -> dict:
    """What a searcher holds, with points as their ids (a restored one has copies of the points)."""
    search = searcher.search
    return {"results": search.results, "launched": search.launched, "open": search.open, "ran": search.ran,
            "rounds": search.rounds, "trials": searcher.trials, "stopped": search.planner.stopped,
            "seeded": search.planner.seeded,
            "groups": {name: [p.trial_id for p in group] for name, group in search.groups.items()},
            "queue": [(size, [p.trial_id for p in group]) for size, group in search.queue]}


def test_a_restored_searcher_goes_on_as_the_original(tmp_path):
    """Tune saves a searcher with the experiment and restores it into a fresh one when a stopped
    launch resumes: the state comes back, and the search goes on with the same rounds."""
    spec, tune = paper_search(tmp_path, max_points=60)
    original = AdaptiveSearcher(build_search(spec, experiment_of(spec), tmp_path))
    while not (original.search.planner.stopped and len(original.search.queue) >= 2):  # some stopped, some mid-search
        assert isinstance(tune.step(original), dict)
    running = original.suggest("running")  # a trial under way when Tune saves
    assert isinstance(running, dict) and original.search.queue and original.search.rounds
    original.save(str(tmp_path / "searcher.pkl"))
    restored = AdaptiveSearcher(build_search(spec, experiment_of(spec), tmp_path))
    assert searcher_state(restored) != searcher_state(original)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert searcher_state(restored) == searcher_state(original)
    for searcher in (original, restored):  # the running trial ends; then each goes on to its end
        tune.complete(searcher, "running", running)
    suggested = {id(searcher): [] for searcher in (original, restored)}
    for searcher in (original, restored):
        while isinstance(config := tune.step(searcher), dict):
            suggested[id(searcher)].append((config["trial"]["id"], config["trial"]["points"]))
    assert suggested[id(original)] and suggested[id(original)] == suggested[id(restored)]
    assert searcher_state(restored) | {"trials": {}} == searcher_state(original) | {"trials": {}}
    assert len(original.search.launched) == 60


def test_a_one_sided_answer_never_contradicts_the_lengths_tried():
    """D = 200k tried lengths up to 55 while the others tried up to 80: the joint fit puts its l* at the
    sweep's longest candidate, 77 (status 'above'), with the interval's low end at 45. It once read
    'l* >= 45 (above the lengths tried)', with 47 and 55 tried."""
    grid, short = [20, 24, 32, 48, 64, 80], [20, 24, 29, 34, 40, 47, 55]
    candidates, _ = step_candidates(study_tasks(), 100, 20, 80)
    frame, _ = simulate_step_sweep("power", sorted(set(candidates) | set(grid)), [50_000, 100_000, 200_000], 1, 0.03,
                                   np.random.default_rng(5))
    here = frame["data_size"] == 200_000
    rows = frame[(~here & frame["context_length"].isin(grid)) | (here & frame["context_length"].isin(short))]
    row = optimal_context_length(rows, n_boot=200).table.set_index("data_size").loc[200_000]
    assert row["status"] == "above" and row["l_star_low"] < max(short) < row["l_star_high"] == 77
    words = summary_answer(row)
    assert words == f"l* >= {row['l_star_low']:g}: its estimate, 77, is the longest length searched; l* may lie above"
    assert words == answer_text(row)  # the summary words it as analyze does


@pytest.mark.parametrize("rng_seed", [0, 6])
def test_the_study_grid_search_meets_a_median_width_of_six(rng_seed):
    """Issue 22's target for synthetic-paper: a median interval of at most 6 lengths, far fewer
    points than the grid's 288, with the spec's own search settings and the GPU runs' noise."""
    settings = search_settings(load_spec("sweeps/synthetic-paper.yaml", ["search.method=adaptive"]))
    assert settings.target_ratio == 1.25
    frame, truth = simulate_gpu_like_sweep("collapse", sorted(set(settings.candidates) | set(PAPER_GRID)), PAPER_SIZES,
                                  np.random.default_rng(rng_seed))
    planner, table, launched = replay(settings, frame)
    assert all(covers(table, truth).values()), (table, truth)
    bracketed = table[table["status"] == "bracketed"]
    assert len(bracketed) >= 6 and (bracketed["l_star_high"] - bracketed["l_star_low"]).median() <= 6
    assert len(launched) <= 120 and "budget" not in planner.stopped.values()


def test_no_data_size_takes_more_than_its_share_of_the_budget():
    """Where every data size's interval stays wide (seeds that learn or not by chance), each asks for
    point after point: past the grid's start, each gets an even share of the budget, whatever the
    order in which the sizes ask, and the whole budget is spent."""
    settings = search_settings(load_spec("sweeps/synthetic-paper.yaml", ["search.method=adaptive",
                                                                          "search.max_points=150"]))
    frame, _ = simulate_gpu_like_sweep("collapse", sorted(set(settings.candidates) | set(PAPER_GRID)), PAPER_SIZES,
                              np.random.default_rng(0))

    def always_wide(results, n_boot, seed):  # the estimator's table: l* = 40 in [22, 84] everywhere
        sizes = sorted(set(results["data_size"]))
        table = pd.DataFrame({"data_size": sizes, "status": "bracketed", "l_star": 40.0, "l_star_low": 22.0,
                              "l_star_high": 84.0, "outside": ""})
        return type("Fit", (), {"table": table})()

    planner, _, launched = replay(settings, frame, estimator=always_wide)
    used = collections.Counter(size for _, size, _ in launched)
    assert len(launched) == 150 and max(used.values()) <= math.ceil(150 / len(PAPER_SIZES))
    assert min(used.values()) >= 150 // len(PAPER_SIZES) - 2, used
    assert set(planner.stopped.values()) <= {"share", "budget"}


def test_smooth_search_brackets_the_true_optimum_with_fewer_points_than_the_ladder():
    grid, sizes = [32, 64, 128, 256, 512, 1024], [625_000, 1_250_000, 2_500_000, 5_000_000]
    candidates = ladder(grid, 16, 4096)
    assert candidates[:3] == [16, 19, 23] and 1024 in candidates and candidates[-1] == 4096
    frame, truth = simulate_smooth_sweep(candidates, sizes, 3, 0.003, np.random.default_rng(0))
    settings = SearchSettings(tuple(candidates), tuple(grid), tuple(sizes), (0, 1, 2), max_points=200)
    planner, table, launched = replay(settings, frame)
    assert set(planner.stopped) == set(sizes) and "budget" not in planner.stopped.values()
    assert all(covers(table, truth).values()), (table, truth)
    assert len(launched) < len(candidates) * len(sizes) * 3 / 4
    assert len(launched) < 100


def test_the_budget_stops_every_data_size():
    candidates, saturation = step_candidates(study_tasks(), 100, 27, 94)
    frame, _ = simulate_step_sweep("own", sorted(set(candidates) | set(PAPER_GRID)), PAPER_SIZES, 1, 0.003,
                                   np.random.default_rng(2))
    settings = SearchSettings(tuple(candidates), tuple(PAPER_GRID), tuple(PAPER_SIZES), (0,), spacing=2 ** 0.25,
                              saturation=saturation, max_points=30)
    planner, _, launched = replay(settings, frame)
    assert len(launched) == 30
    assert "budget" in planner.stopped.values()


def test_settings_from_specs(tmp_path):
    paper = load_spec("sweeps/synthetic-paper.yaml", ["search.method=adaptive"])
    settings = search_settings(paper)
    assert settings.start == tuple(PAPER_GRID) and settings.seeds == (0, 1, 2) and settings.saturation == 93
    assert settings.candidates[0] == 21 and max(settings.candidates) == 93  # the spec's range: [21, 100]
    # GPT: the ladder, each length one whose whole sequences fill a step (within 1 %)
    gpt = load_spec("sweeps/gpt2-gpu.yaml", ["search.method=adaptive", "search.context_length=[16, 4096]"])
    settings = search_settings(gpt)
    assert settings.candidates[0] == 16 and settings.candidates[-1] == 4096 and 1024 in settings.candidates
    from ctxscale.train.gpt import plan_batches

    t = gpt.training
    steps = [plan_batches(t.tokens_per_step, l, t.micro_batch_tokens, 1).tokens_per_step for l in settings.candidates]
    assert all(abs(step - t.tokens_per_step) <= 0.01 * t.tokens_per_step for step in steps)
    assert len(settings.candidates) >= 25 and settings.seeds == (0, 1, 2)
    # the section changes which points run, not what they compute
    assert science_hash(paper) == science_hash(load_spec("sweeps/synthetic-paper.yaml"))


def test_bad_search_sections_are_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"search.context_length: .*lo < hi"):
        parse_spec(TINY_SPEC | {"search": {"method": "adaptive", "context_length": [32, 8]}})
    with pytest.raises(SpecError, match=r"search.target_ratio"):
        parse_spec(TINY_SPEC | {"search": {"target_ratio": 1.0}})
    spec = parse_spec(TINY_SPEC | {"search": {"method": "adaptive", "context_length": [8, 64]}})
    with pytest.raises(SpecError, match=r"search.context_length: 64 exceeds data.string_length = 32"):
        search_settings(spec)


@pytest.mark.slow
def test_an_adaptive_sweep_stores_grid_ids_and_resumes(tmp_path, ray_cluster):
    from ctxscale.sweep.prepare import prepare_data
    from ctxscale.sweep.runner import run_sweep

    raw = TINY_SPEC | {"name": "adaptive", "search": {"method": "adaptive", "context_length": [8, 32], "max_points": 4}}
    spec = parse_spec(raw)
    first = run_sweep(spec, tmp_path, data=prepare_data(spec), verbose=0)
    stored = store.load_results(tmp_path, sweep="adaptive")
    digest = science_hash(spec)
    assert len(first.ran) == 4 and sorted(stored["trial_id"]) == sorted(first.ran)
    assert all(TRIAL_ID.fullmatch(i) and i.endswith(f"_{digest}") for i in stored["trial_id"])
    assert set(stored["status"]) == {"ok"}
    # the seeding data sizes start at the grid's lengths, the first seed only
    assert set(stored["seed"]) == {0} and set(stored.query("data_size == 2000")["context_length"]) == {8, 16, 24}
    finished_before = stored.set_index("trial_id")["finished_at"]

    more = parse_spec(raw | {"search": raw["search"] | {"max_points": 7}})
    second = run_sweep(more, tmp_path, data=prepare_data(more), verbose=0)
    assert not set(second.ran) & set(first.ran) and set(first.ran) <= set(second.skipped)
    assert 1 <= len(second.ran) <= 3
    after = store.load_results(tmp_path, sweep="adaptive").set_index("trial_id")
    assert len(after) == 4 + len(second.ran)
    assert after.loc[finished_before.index, "finished_at"].equals(finished_before)  # stored points not rerun
    decisions = [json.loads(line) for line in (tmp_path / "adaptive" / DECISIONS_FILE).read_text().splitlines()]
    assert decisions[0]["action"] == "start" and decisions[-1]["action"] == "end"
    assert any(d.get("reason") == "budget" for d in decisions)


def test_an_estimate_at_the_range_edge_extends_two_lengths_at_once():
    """gpt2-gpu on one H100: at 2.5M and 5M tokens the best loss was at 4,096, the longest length
    tried. Each round waits for its trials, so the next round runs the next two lengths out."""
    settings = search_settings(load_spec("sweeps/gpt2-gpu.yaml", ["search.method=adaptive"]))

    def at_the_top(results, n_boot, seed):  # the estimator's table: l* >= 1,024, estimate 4,096
        table = pd.DataFrame({"data_size": [5_000_000], "status": "above", "l_star": math.nan,
                              "l_star_low": 1024.0, "l_star_high": math.nan, "outside": "above",
                              "grid_l_best": 4096.0})
        return type("Fit", (), {"table": table})()

    tried = [(l, 5_000_000, 0) for l in (64, 256, 1024, 4096)]
    results = pd.DataFrame([{"context_length": l, "data_size": d, "seed": s, "best_val_loss": 4.0, "status": "ok"}
                            for l, d, s in tried])
    planner = Planner(dataclasses.replace(settings, data_sizes=(5_000_000,)), at_the_top)
    (decision,) = planner.decide(results, set(), set(tried))
    assert decision.action == "extend" and decision.points == [(5515, 0), (8192, 0)]
