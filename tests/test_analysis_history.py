"""The history table read per trial: best evaluations and trials stopped on a plateau (issue 22's
GPT sweep at D = 5M, where l512 stopped at step 1,600 while l1024 fell to 3.49 by step 2,750)."""
import numpy as np
import pandas as pd

from analysis.history import best_evaluations, plateau_lines, plateau_stops, with_coordinates

D = 5_000_000


def _curve(trial_id, length, steps, losses, size=D, seed=0):
    return pd.DataFrame({"trial_id": trial_id, "context_length": length, "data_size": size, "seed": seed,
                         "step": steps, "val_loss": losses})


def gpt_history() -> pd.DataFrame:
    """Four lengths at D = 5M as the H100 sweep ran them, and one at another data size."""
    every = np.arange(250, 3001, 250)
    fall = lambda end: np.linspace(5.2, end, len(every))  # noqa: E731 - a steady fall to `end`
    l512 = [5.0, 4.6, 4.3, 4.1, 4.0, 3.95, 3.94, 3.93, 3.95, 3.94]  # plateau from step 1,300 on
    l512_steps = [250, 500, 750, 1000, 1300, 1450, 1500, 1600, 1800, 1900]  # stopped at 1,900
    l1024 = [5.0, 4.6, 4.3, 4.05, 4.04, 4.05, 4.0, 3.8, 3.6, 3.55, 3.49, 3.5]  # the plateau breaks after 1,750
    return pd.concat([
        _curve("l256_d5000000_s0_abcd0123", 256, every, fall(3.70)),        # best at its last step
        _curve("l512_d5000000_s0_abcd0123", 512, l512_steps, l512),
        _curve("l1024_d5000000_s0_abcd0123", 1024, every, l1024),
        _curve("l2048_d5000000_s0_abcd0123", 2048, every, fall(3.60)),
        _curve("l512_d1000000_s0_abcd0123", 512, every[:6], fall(4.4)[:6], size=1_000_000),  # alone at its D
    ], ignore_index=True)


def test_the_trial_stopped_on_a_plateau_is_named_with_its_neighbour():
    stops = plateau_stops(gpt_history())
    assert stops["trial_id"].tolist() == ["l512_d5000000_s0_abcd0123"]
    row = stops.iloc[0]
    assert (row["best_at"], row["best"], row["last_at"]) == (1600, 3.93, 1900)
    # its neighbours: l256 (best 3.70 at 3,000) and l1024 (3.49 at 2,750); the lower loss is shown
    assert (row["neighbour_length"], row["neighbour_best_at"], row["neighbour_best"]) == (1024, 2750, 3.49)
    (heading, line) = plateau_lines(stops)
    assert heading.startswith("stopped on a plateau? 1 trial(s)")
    assert line == ("  l512_d5000000_s0_abcd0123: best 3.93 at step 1,600, stopped at 1,900; "
                    "l = 1,024 at D = 5,000,000 reached 3.49 at step 2,750")


def test_trials_that_ran_as_long_as_their_neighbours_are_not_listed():
    history = gpt_history()
    history = history[history["trial_id"] != "l512_d5000000_s0_abcd0123"]
    assert plateau_stops(history).empty and plateau_lines(plateau_stops(history)) == []
    # l512 given the steps its neighbours had, and no worse a loss: nothing to report either
    longer = _curve("l512_d5000000_s0_abcd0123", 512, np.arange(250, 3001, 250), np.linspace(5.2, 3.4, 12))
    assert plateau_stops(pd.concat([history, longer])).empty


def test_a_trial_at_its_bayes_risk_had_nothing_left_to_learn():
    # synthetic: l = 20 sees no task (Bayes risk ln 2), stops at epoch 7; its neighbour learns on
    ln2 = float(np.log(2))
    on_first_row = lambda risk, n: [risk] + [np.nan] * (n - 1)  # noqa: E731 - as the store keeps it
    history = pd.concat([
        _curve("l20", 20, range(1, 8), [ln2] * 7, size=50_000).assign(bayes_risk=on_first_row(ln2, 7)),
        _curve("l24", 24, range(1, 15), np.linspace(ln2, 0.59, 14), size=50_000).assign(
            bayes_risk=on_first_row(0.5545, 14)),
        _curve("l32", 32, range(1, 8), [ln2 + 0.001] * 7, size=50_000).assign(bayes_risk=on_first_row(0.388, 7)),
    ]).rename(columns={"step": "epoch"})
    stops = plateau_stops(history)
    assert stops["trial_id"].tolist() == ["l32"]  # l20 sits at its Bayes risk; l32 is 0.3 above its own
    assert plateau_lines(stops, "epoch")[1].startswith("  l32: best 0.6941 at epoch 1, stopped at 7")


def test_best_evaluations_and_coordinates_from_the_trials_table_or_the_id():
    history = gpt_history()[["trial_id", "step", "val_loss"]]
    trials = pd.DataFrame({"trial_id": ["l256_d5000000_s0_abcd0123"], "context_length": [256],
                           "data_size": [D], "seed": [3]})  # this row wins over the id
    placed = with_coordinates(history, trials)
    best = best_evaluations(placed).set_index("trial_id")
    assert best.loc["l256_d5000000_s0_abcd0123", "seed"] == 3
    assert best.loc["l1024_d5000000_s0_abcd0123", ["context_length", "data_size", "best_at", "last_at"]].tolist() == [
        1024, D, 2750, 3000]
    assert len(best) == 5


def test_a_trial_that_stopped_overfitting_is_not_on_a_plateau():
    # gpt2-gpu on one H100, D = 2.5M: l = 1,024 had its best (4.225) at step 1,250 and rose to 4.62
    # by step 2,500, while l = 4,096 fell to 4.064 by step 3,900: early stopping did its job there
    steps = np.arange(250, 2501, 250)
    rising = [5.0, 4.6, 4.4, 4.3, 4.225, 4.3, 4.4, 4.5, 4.56, 4.62]
    history = pd.concat([_curve("l1024", 1024, steps, rising, size=2_500_000),
                         _curve("l4096", 4096, np.arange(300, 3901, 300), np.linspace(5.5, 4.064, 13),
                                size=2_500_000)])
    assert plateau_stops(history).empty
    flat = rising[:5] + [4.24, 4.23, 4.25, 4.24, 4.26]  # the same trial ending flat is listed
    history = pd.concat([history[history["trial_id"] != "l1024"], _curve("l1024", 1024, steps, flat, size=2_500_000)])
    assert plateau_stops(history)["trial_id"].tolist() == ["l1024"]
