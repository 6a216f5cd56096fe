"""The store at scale: stable schemas (every column in every file), compaction that a kill -9 at
any moment cannot make lose or duplicate a row, the indexed skip check, the Parquet export."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ctxscale import store
from ctxscale.cli import main
from ctxscale.experiments.grid import trial_rows
from ctxscale.experiments.synthetic import SYNTHETIC
from ctxscale.spec import parse_spec
from ctxscale.experiments.grid import expand_grid

from conftest import TINY_SPEC

SPEC = parse_spec(TINY_SPEC)


def _store_point(root, point, reports, status="ok", error="", sweep=SPEC.name):
    """A point stored the way the runner stores it (`StoreCallback`)."""
    columns, tables = trial_rows(point, reports)
    row = {"experiment": "synthetic", **columns, **point.coordinates(), "status": status, "error": error,
           "config_hash": point.config_hash, "config": json.dumps(point.spec.model_dump(mode="json"), sort_keys=True)}
    store.write_trial(root, sweep, point.trial_id, row, tables["history"], SYNTHETIC.schemas)


def _reports(epochs, loss=0.5):
    return [{"epoch": e, "train_loss": loss + 0.1, "val_loss": loss + 1 / e, "best_val_loss": loss + 1 / e,
             "best_epoch": e, "samples_per_s": 1e4, "wall_s": 0.1 * e, "status": "running" if e < epochs else "ok",
             "final_train_loss": loss if e == epochs else float("nan")} for e in range(1, epochs + 1)]


def test_a_folder_whose_first_file_is_a_failed_trial_reads_every_column(tmp_path):
    points = sorted(expand_grid(SPEC), key=lambda p: p.trial_id)
    _store_point(tmp_path, points[0], [], status="failed", error="killed before its first report")
    for point in points[1:4]:
        _store_point(tmp_path, point, _reports(3))
    folder = tmp_path / SPEC.name / "trials"
    assert sorted(folder.iterdir())[0].stem == points[0].trial_id  # the failed one comes first
    data = ds.dataset(folder, format="parquet").to_table()  # schema from the first file, as DuckDB and polars do
    full = pq.read_schema(sorted(folder.iterdir())[1])
    assert data.schema.names == full.names and len(full.names) > 60
    assert {"best_val_loss", "epoch", "config.training.lr", "config.model.hidden"} <= set(full.names)
    frame = data.to_pandas().set_index("trial_id")
    assert frame["val_loss"].isna().tolist() == [True, False, False, False]
    assert (frame["config.training.lr"] == SPEC.training.lr).all() and (frame["config.data.val_rows"] == 1000).all()
    assert json.loads(frame["config.grid.context_length"].iloc[0]) == [8, 16, 24]


def _a_store(root, n, epochs=3):
    lengths = list(range(1, min(n, 30) + 1))
    grid = {"context_length": lengths, "data_size": [1000 + i for i in range(n // len(lengths))], "seed": [0]}
    points = expand_grid(parse_spec(TINY_SPEC | {"grid": grid}))
    for i, point in enumerate(points):
        if i % 10 == 3:
            _store_point(root, point, _reports(1), status="failed", error="boom")
        else:
            _store_point(root, point, _reports(epochs, loss=i / n))
    return points


def _snapshot(root):
    trials = store.load_results(root, sweep=SPEC.name).sort_values("trial_id")
    history = store.load_results(root, "history", sweep=SPEC.name)
    return (trials[["trial_id", "status", "best_val_loss"]].to_dict("list"),
            sorted(zip(history["trial_id"], history["epoch"], history["val_loss"])))


def test_compaction_folds_finished_trials_and_keeps_failed_ones_in_their_files(tmp_path):
    _a_store(tmp_path, 30)
    before = _snapshot(tmp_path)
    assert main(["results", str(tmp_path), "--compact"]) == 0
    assert _snapshot(tmp_path) == before
    trials = sorted(p.name for p in (tmp_path / SPEC.name / "trials").iterdir())
    assert len(trials) == 1 + 3 and trials[-1].startswith("part-")  # one part, the 3 failed trials' own files
    statuses = store.stored_trials(tmp_path, SPEC.name)
    assert len(statuses) == 30 and sum(s == "failed" for s in statuses.values()) == 3
    # a plain glob (DuckDB, polars) sees each row once: no trial is both in a part and in its own file
    assert ds.dataset(tmp_path / SPEC.name / "trials", format="parquet").count_rows() == 30


def test_the_skip_check_reads_only_files_that_changed(tmp_path):
    points = _a_store(tmp_path, 12)
    assert len(store.stored_trials(tmp_path, SPEC.name)) == 12  # builds the index
    victim = tmp_path / SPEC.name / "trials" / f"{points[0].trial_id}.parquet"
    os.utime(victim)  # same content, but the index no longer vouches for it: it is read again
    victim.write_bytes(b"damaged")
    with pytest.raises(store.StoreError, match=f"{points[0].trial_id}.parquet"):
        store.stored_trials(tmp_path, SPEC.name)
    other = _a_store(tmp_path / "b", 12)
    bad_index = tmp_path / "b" / SPEC.name / "_index" / "trial-status.parquet"
    store.stored_trials(tmp_path / "b", SPEC.name)
    _store_point(tmp_path / "b", other[3], _reports(2))  # a failed trial run again, now ok
    assert store.stored_trials(tmp_path / "b", SPEC.name)[other[3].trial_id] == "ok"
    bad_index.write_bytes(b"not an index")  # only a cache: rebuilt
    assert store.stored_trials(tmp_path / "b", SPEC.name)[other[3].trial_id] == "ok"


@pytest.mark.parametrize("moment", ["writing the history part", "removing the folded files"])
def test_a_kill_during_compaction_loses_and_duplicates_nothing(tmp_path, moment):
    _a_store(tmp_path, 150, epochs=60)  # a long history: its part takes a while to write
    before = _snapshot(tmp_path)
    trials_dir, history_dir = tmp_path / SPEC.name / "trials", tmp_path / SPEC.name / "history"

    def reached():
        if moment == "writing the history part":
            return any(p.name.startswith(".part-") for p in history_dir.iterdir())
        return any(p.name.startswith("part-") for p in trials_dir.iterdir())

    proc = subprocess.Popen([sys.executable, "-m", "ctxscale.cli", "results", str(tmp_path), "--compact"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not reached() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "compaction ended before the kill"
    assert _snapshot(tmp_path) == before  # the state a kill left: every row once
    assert main(["results", str(tmp_path), "--compact"]) == 0  # the next compaction finishes the job
    assert _snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert len([p for p in trials_dir.iterdir() if p.name.startswith("part-")]) == 1
    assert len(list(history_dir.iterdir())) == 1 + 15  # one part, and the failed trials' histories


def test_a_trial_in_a_part_and_in_its_own_file_is_read_from_its_own_file(tmp_path):
    points = _a_store(tmp_path, 5)
    store.compact(tmp_path, SPEC.name)
    _store_point(tmp_path, points[0], _reports(2, loss=9.0))  # written again after compaction
    trials = store.load_results(tmp_path, sweep=SPEC.name)
    assert len(trials) == 5 and trials.set_index("trial_id").loc[points[0].trial_id, "best_val_loss"] > 9
    history = store.load_results(tmp_path, "history", sweep=SPEC.name)
    assert (history["trial_id"] == points[0].trial_id).sum() == 2
    times = store.load_results(tmp_path, sweep=SPEC.name, file_times=True)
    assert times["stored_at"].notna().all()


def test_file_times_of_a_compacted_table_are_its_rows_own(tmp_path):
    _a_store(tmp_path, 3)  # all ok: everything goes into the parts
    before = store.load_results(tmp_path, sweep=SPEC.name, file_times=True)
    store.compact(tmp_path, SPEC.name)
    assert [p.name[:5] for p in (tmp_path / SPEC.name / "trials").iterdir()] == ["part-"]
    after = store.load_results(tmp_path, sweep=SPEC.name, file_times=True)
    assert after["stored_at"].tolist() == before["stored_at"].tolist()


def test_results_exports_one_parquet_file(tmp_path, capsys):
    _a_store(tmp_path, 10)
    store.compact(tmp_path, SPEC.name)
    _store_point(tmp_path, expand_grid(SPEC)[0], _reports(2), sweep="other")  # a second sweep: 11 rows in all
    out = tmp_path / "all.parquet"
    assert main(["results", str(tmp_path), "--format", "parquet", "--out", str(out)]) == 0
    exported = pq.read_table(out)
    assert exported.num_rows == 11 and "config.training.lr" in exported.column_names
    assert capsys.readouterr().out == ""  # the file is the output: no prose on stdout
    assert main(["results", str(tmp_path), "--format", "parquet"]) == 2
    assert "--out" in capsys.readouterr().err
