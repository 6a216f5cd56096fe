"""The results store: atomic per-trial Parquet files, replacement without duplicates, corrupt files."""
from __future__ import annotations

import pytest

from ctxscale import store
from ctxscale.cli import main


def _row(loss, status="ok"):
    return {"context_length": 8, "data_size": 100, "seed": 0, "best_val_loss": loss, "status": status}


def test_write_and_read_back(tmp_path):
    store.write_trial(tmp_path, "s", "a", _row(0.5), [{"epoch": 1, "val_loss": 0.6}, {"epoch": 2, "val_loss": 0.5}])
    store.write_trial(tmp_path, "s", "b", _row(0.4), [{"epoch": 1, "val_loss": 0.4}])
    trials = store.load_results(tmp_path)
    assert sorted(trials["trial_id"]) == ["a", "b"] and set(trials["sweep"]) == {"s"}
    assert len(store.load_results(tmp_path / "s", "history")) == 3
    assert store.stored_trials(tmp_path, "s") == {"a": "ok", "b": "ok"}
    assert not [p for p in (tmp_path / "s").rglob("*") if ".tmp-" in p.name]


def test_config_hash_reaches_the_history_and_older_rows_get_it_from_their_id(tmp_path):
    store.write_trial(tmp_path, "s", "l8_d100_s0_0123abcd", _row(0.5) | {"config_hash": "0123abcd"},
                      [{"epoch": 1, "val_loss": 0.5}])
    store.write_trial(tmp_path, "s", "l8_d100_s1_4567cdef", _row(0.4), [{"epoch": 1, "val_loss": 0.4}])  # older row
    store.write_trial(tmp_path, "s", "by-hand", _row(0.3), [{"epoch": 1, "val_loss": 0.3}])
    for table in ("trials", "history"):
        frame = store.load_results(tmp_path, table).set_index("trial_id")
        assert frame["config_hash"].fillna("none").to_dict() == {
            "l8_d100_s0_0123abcd": "0123abcd", "l8_d100_s1_4567cdef": "4567cdef", "by-hand": "none"}


def test_rewriting_a_trial_replaces_it(tmp_path):
    store.write_trial(tmp_path, "s", "a", _row(float("nan"), "failed"), [])
    store.write_trial(tmp_path, "s", "a", _row(0.3), [{"epoch": 1, "val_loss": 0.3}])
    trials = store.load_results(tmp_path, sweep="s")
    assert len(trials) == 1 and trials["status"].iloc[0] == "ok"


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    store.write_trial(tmp_path, "s", "a", _row(0.5), [])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store.base.pq, "write_table", broken)
    with pytest.raises(OSError):
        store.write_trial(tmp_path, "s", "a", _row(0.1), [])
    monkeypatch.undo()
    assert store.load_results(tmp_path)["best_val_loss"].iloc[0] == 0.5
    assert [p.name for p in (tmp_path / "s" / "trials").iterdir()] == ["a.parquet"]


def test_corrupt_file_is_named_and_nothing_is_touched(tmp_path, capsys):
    store.write_trial(tmp_path, "s", "a", _row(0.5), [])
    bad = tmp_path / "s" / "trials" / "b.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(store.StoreError, match="b.parquet: not a readable Parquet file"):
        store.load_results(tmp_path)
    assert main(["results", str(tmp_path)]) == 2
    assert "b.parquet" in capsys.readouterr().err
    assert bad.read_bytes() == b"not parquet at all"


def test_missing_results_folder(tmp_path):
    with pytest.raises(store.StoreError, match="results folder not found"):
        store.load_results(tmp_path / "nope")


def test_a_retried_trial_keeps_one_row_per_evaluation():
    from ctxscale.sweep.storing import _one_row_per_evaluation

    first_try = [{"step": 10, "val_loss": 5.0}, {"step": 20, "val_loss": 4.0}, {"step": 30, "val_loss": 3.9}]
    resumed_from_step_20 = [{"step": 30, "val_loss": 3.5}, {"step": 40, "val_loss": 3.2}]
    rows = _one_row_per_evaluation(first_try + resumed_from_step_20)
    assert [(r["step"], r["val_loss"]) for r in rows] == [(10, 5.0), (20, 4.0), (30, 3.5), (40, 3.2)]
    epochs = _one_row_per_evaluation([{"epoch": 1}, {"epoch": 2}])
    assert [r["epoch"] for r in epochs] == [1, 2]


def _check_writable_many(root: str, times: int) -> None:
    for _ in range(times):
        store.check_writable(root, "shared")


def test_launches_checking_one_results_folder_at_once_do_not_fail_each_other(tmp_path):
    """Two launches started together each write and remove a probe file: neither removes the other's."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_check_writable_many, args=(str(tmp_path), 300)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert not [p for p in (tmp_path / "shared").iterdir()]  # no probe left behind
