"""One configuration per fit: stored rows name their configuration, fits refuse mixtures,
`ctxscale analyze` picks one (the most recent unless told), older frames and stores still work."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from analysis import fit_bayes_risk, fit_loss_surface, fit_optimal_context_law, optimal_context_length
from analysis._validate import select_configuration
from analysis.entropy import ce_law_fits, one_configuration_per_model
from analysis.examples import surface_trials
from ctxscale import files, store
from ctxscale.cli import main

GRID = [8, 11, 16, 23, 32, 45, 64, 91, 128]
SIZES = [1e4, 1e5, 3e5]
OLD, NEW = "0a0a0a0a", "1b1b1b1b"
FAST = dict(n_boot=50)


def _mixed() -> pd.DataFrame:
    """The same grid twice, as an edited spec leaves it: one configuration per copy."""
    first = surface_trials(GRID, SIZES, seeds=[0], rng=1).assign(config_hash=OLD)
    second = surface_trials(GRID, SIZES, seeds=[0], rng=2).assign(config_hash=NEW)
    return pd.concat([first, second], ignore_index=True)


@pytest.mark.parametrize("fit", [optimal_context_length, fit_loss_surface], ids=lambda f: f.__name__)
def test_fits_refuse_a_frame_of_two_configurations(fit):
    with pytest.raises(ValueError, match=f"mix 2 configurations.*{OLD}: 27 rows, {NEW}: 27 rows"):
        fit(_mixed(), **FAST)
    one = _mixed().query("config_hash == @NEW")
    assert fit(one, **FAST) is not None
    # a row without a hash beside hashed ones is not known to be the same experiment
    with pytest.raises(ValueError, match=r"\(no config_hash\): 1 rows"):
        fit(pd.concat([one, surface_trials([8], [1e4], seeds=[5])], ignore_index=True), **FAST)


def test_the_optimal_table_carries_the_hash_into_the_law_fit():
    optimal = optimal_context_length(_mixed().query("config_hash == @OLD"), **FAST)
    assert set(optimal.table["config_hash"]) == {OLD}
    assert fit_optimal_context_law(optimal, n_boot=50).success
    other = optimal_context_length(_mixed().query("config_hash == @NEW"), **FAST)
    with pytest.raises(ValueError, match=f"fit_optimal_context_law.*{OLD}.*{NEW}"):
        fit_optimal_context_law(pd.concat([optimal.table, other.table], ignore_index=True))


def test_frames_without_the_column_work_as_before():
    trials = surface_trials(GRID, SIZES, seeds=[0, 1])
    optimal = optimal_context_length(trials, **FAST)
    assert "config_hash" not in optimal.table.columns and optimal.table["bracketed"].sum() == 3
    assert fit_optimal_context_law(optimal, n_boot=50).success
    assert fit_loss_surface(trials, n_boot=5).success
    chosen = select_configuration(trials)
    assert chosen.config_hash is None and chosen.rows is trials and chosen.summary() == ""


def test_bayes_risk_fit_and_measurements_refuse_mixed_points():
    l = np.array([16, 32, 64, 128, 256, 512])
    loss = 1.5 + 4.0 / l**0.6
    assert fit_bayes_risk(l, loss, config_hash=[OLD] * 6).success
    with pytest.raises(ValueError, match=f"fit_bayes_risk.*{OLD}: 3 rows, {NEW}: 3 rows"):
        fit_bayes_risk(l, loss, config_hash=[OLD] * 3 + [NEW] * 3)
    ce = pd.DataFrame({"model": "m", "context_length": l, "ce": loss, "config_hash": [OLD] * 3 + [NEW] * 3})
    with pytest.raises(ValueError, match="fit_bayes_risk.*mix 2 configurations"):
        ce_law_fits(ce)


def test_each_model_keeps_its_most_recent_measurements():
    now = datetime.now(timezone.utc)
    ce = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 2, "context_length": [8, 16, 32, 64, 8, 16],
                       "ce": [4.0, 3.5, 3.2, 3.0, 5.0, 4.0],
                       # m measured at 8..64, then again at 8..32 with another protocol: 64 is stale
                       "config_hash": [NEW, NEW, NEW, OLD, "2c2c2c2c", "2c2c2c2c"],
                       "stored_at": [now, now, now, now - timedelta(days=1), now, now]})
    kept, lines = one_configuration_per_model(ce)
    assert sorted(zip(kept["model"], kept["context_length"])) == [("m", 8), ("m", 16), ("m", 32), ("n", 8), ("n", 16)]
    assert lines == [f"m: configuration {NEW} (the most recent); 1 rows of other configurations left out ({OLD}: 1)"]
    kept, _ = one_configuration_per_model(ce, OLD)  # m as asked; n has no such hash and keeps its own
    assert sorted(zip(kept["model"], kept["context_length"])) == [("m", 64), ("n", 8), ("n", 16)]


def _row(trial, config_hash, finished_at, status="ok"):
    return dict(experiment="gpt", context_length=int(trial.context_length), data_size=int(trial.data_size),
                seed=int(trial.seed), status=status, best_val_loss=float(trial.best_val_loss), best_epoch=1,
                final_train_loss=1.0, error="", wall_s=1.0, samples_per_s=1.0, config_hash=config_hash,
                finished_at=finished_at)


def _two_configurations(root) -> None:
    """A sweep run with one configuration, then again after the spec was edited (fewer data sizes)."""
    earlier = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for digest, sizes, start, rng in ((OLD, SIZES, earlier, 1), (NEW, SIZES[1:], earlier + timedelta(days=1), 2)):
        for i, trial in surface_trials(GRID, sizes, seeds=[0], rng=rng).iterrows():
            trial_id = f"l{trial.context_length}_d{int(trial.data_size)}_s0_{digest}"
            store.write_trial(root, "edited", trial_id, _row(trial, digest, start + timedelta(minutes=i)),
                              [{"epoch": 1, "val_loss": float(trial.best_val_loss)}])


def test_analyze_uses_the_most_recent_configuration(tmp_path, capsys):
    _two_configurations(tmp_path)
    history = store.load_results(tmp_path, "history")
    assert history.groupby("config_hash").size().to_dict() == {OLD: 27, NEW: 18}

    assert main(["analyze", str(tmp_path), "--sweep", "edited"]) == 0
    out = capsys.readouterr().out
    assert f"sweep edited: configuration {NEW} (the most recent); 27 rows of other configurations left out ({OLD}: 27)" in out
    assert "sweep edited: 18 trials, 18 used" in out
    optimal = pd.read_csv(tmp_path / "edited" / "report" / "optimal_context_length.csv")
    assert optimal["data_size"].tolist() == SIZES[1:] and set(optimal["config_hash"]) == {NEW}

    assert main(["analyze", str(tmp_path), "--config-hash", OLD, "--out", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    assert f"configuration {OLD} (as asked); 18 rows of other configurations left out ({NEW}: 18)" in out
    assert "27 trials, 27 used" in out
    assert set(pd.read_csv(tmp_path / "old" / "optimal_context_length.csv")["config_hash"]) == {OLD}

    assert main(["analyze", str(tmp_path), "--config-hash", "ffffffff"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'ffffffff'" in err and f"sweep edited: {OLD}, {NEW}" in err


def test_an_older_store_is_split_by_its_trial_ids_and_file_times(tmp_path, capsys):
    """Rows written before config_hash and finished_at existed: the hash ends every trial id, and the
    files' times say which configuration ran last."""
    _two_configurations(tmp_path)
    for path in (tmp_path / "edited").glob("*/*.parquet"):
        frame = pd.read_parquet(path).drop(columns=["config_hash", "finished_at"], errors="ignore")
        files.write_parquet(path, frame)
        newer = 2_000_000_000 if path.stem.endswith(NEW) else 1_000_000_000
        os.utime(path, (newer, newer))
    trials = store.load_results(tmp_path, sweep="edited")
    assert "finished_at" not in trials and trials.groupby("config_hash").size().to_dict() == {OLD: 27, NEW: 18}
    assert set(store.load_results(tmp_path, "history")["config_hash"]) == {OLD, NEW}
    assert main(["analyze", str(tmp_path)]) == 0
    assert f"configuration {NEW} (the most recent); 27 rows" in capsys.readouterr().out


def test_results_table_shows_the_hash_beside_the_point(tmp_path, capsys):
    _two_configurations(tmp_path)
    assert main(["results", str(tmp_path), "--sweep", "edited"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["trial_id", "context_length", "data_size", "seed", "config_hash"]
    assert sum(OLD in r for r in rows) == 27 and sum(NEW in r for r in rows) == 18
