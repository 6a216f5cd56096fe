"""What a sweep shows while it runs: the compact progress table, the finished lines, TensorBoard files, curves."""
from __future__ import annotations

import io
import struct

import pandas as pd
from ray.tune.experiment import Trial

from ctxscale import store
from ctxscale.experiments.synthetic import pack_synthetic, synthetic_group_name
from ctxscale.spec import parse_spec
from ctxscale.experiments.grid import expand_grid
from ctxscale.sweep.progress import SweepProgress, TensorBoardCurves

from conftest import TINY_SPEC


def _groups():
    groups = pack_synthetic(expand_grid(parse_spec(TINY_SPEC)))
    return {synthetic_group_name(group): group for group in groups}


def test_progress_is_one_compact_table_and_a_line_per_finished_point():
    groups = _groups()
    out = io.StringIO()
    progress = SweepProgress(groups, out=out)
    name, group = next(iter(groups.items()))
    trial = Trial("plain_trial", config={"trial": {"id": name}}, stub=True)  # a real (unstarted) Tune trial
    progress.on_trial_start(0, [trial], trial)
    first, second = group[0].trial_id, group[1].trial_id
    progress.on_trial_result(0, [trial], trial, {"point": first, "epoch": 1, "val_loss": 0.70, "best_val_loss": 0.70,
                                                 "status": "running"})
    assert out.getvalue() == ""  # nothing per report
    progress.on_trial_result(0, [trial], trial, {"point": first, "epoch": 2, "val_loss": 0.71, "best_val_loss": 0.70,
                                                 "best_epoch": 1, "status": "ok"})
    line = out.getvalue().strip()
    assert line.endswith(f"1/12 {first} ok: best_val_loss 0.7000 at epoch 1"), line
    progress.on_trial_error(0, [trial], trial)  # the rest of its group failed
    assert f"{second} failed" in out.getvalue() and out.getvalue().count("\n") == 1 + len(group) - 1

    table = progress.table().strip().splitlines()
    # one compact table: the points by status, then one row per data size
    assert table[0].endswith("12 points, 9 pending, 1 ok, 2 failed"), table
    assert table[1].split() == ["data_size", "done", "best", "so", "far", "running"]
    assert sorted(line.split()[0] for line in table[2:]) == ["2,000", "4,000"] and len(table) == 4
    size = f"{group[0].data_size:,}"
    row = next(line for line in table if line.strip().startswith(size))
    assert row.split()[1:] == ["3/6", "l8", "0.7000"], row  # 1 ok and 2 failed of 6; none running

    # the other seed's packed group of that data size starts, and reports its three points at once
    other_name = next(n for n, g in groups.items() if n != name and g[0].data_size == group[0].data_size)
    other = Trial("plain_trial", config={"trial": {"id": other_name}}, stub=True)
    progress.on_trial_start(0, [other], other)
    progress.on_trial_result(0, [other], other, {"epoch": 3, "points": [
        {"point": p.trial_id, "epoch": 3, "val_loss": 0.69, "best_val_loss": 0.69 - p.context_length / 1000,
         "status": "running"} for p in groups[other_name]]})
    table = progress.table()
    row = next(line for line in table.splitlines() if line.strip().startswith(size))
    assert row.split()[1:] == ["3/6", "l24", "0.6660", "3", "(l8,", "l16,", "l24)", "at", "epoch", "3"], row
    assert "3 running" in table and "{" not in table and "<NA>" not in table


def _scalars(path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of a TensorBoard event file (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    data, at, out = path.read_bytes(), 0, {}
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_curves_are_where_the_readme_says(synthetic_results):
    history = store.load_results(synthetic_results, "history", sweep="tiny")
    folder = synthetic_results / "tiny" / "tensorboard"
    assert sorted(p.name for p in folder.iterdir()) == sorted(history.trial_id.unique())
    point = history.trial_id.iloc[0]
    (events,) = (folder / point).glob("events.out.tfevents.*")
    scalars = _scalars(events)
    mine = history[history.trial_id == point].sort_values("epoch")
    assert [step for step, _ in scalars["val_loss"]] == mine["epoch"].tolist()
    assert all(abs(logged - stored) < 1e-6 for (_, logged), stored in zip(scalars["val_loss"], mine["val_loss"]))


def test_tensorboard_curves_are_written_off_the_result_path_and_never_stop_a_sweep(tmp_path, capsys):
    # a Tune trial waits at each report until the driver's callbacks return: the writing happens on
    # the callback's own thread, and a folder that cannot be written loses the curves, not the sweep
    groups = _groups()
    name, group = next(iter(groups.items()))
    trial = Trial("plain_trial", config={"trial": {"id": name}}, stub=True)
    report = {"epoch": 1, "points": [{"point": p.trial_id, "epoch": 1, "val_loss": 0.7, "status": "running"}
                                     for p in group]}

    good = TensorBoardCurves(tmp_path / "tensorboard", groups)
    good.setup()
    good.on_trial_result(0, [trial], trial, report)
    good.on_trial_complete(0, [trial], trial)
    good.on_experiment_end([trial])
    assert not good._thread.is_alive() and good.writers == {}
    for point in group:
        (events,) = (tmp_path / "tensorboard" / point.trial_id).glob("events.out.tfevents.*")
        assert _scalars(events)["val_loss"] == [(1, 0.699999988079071)]

    (tmp_path / "blocked").write_text("a file where the curves' folder would go")
    bad = TensorBoardCurves(tmp_path / "blocked", groups)
    bad.setup()
    bad.on_trial_result(0, [trial], trial, report)  # returns: the failure is the writer thread's
    bad.on_trial_result(0, [trial], trial, report | {"epoch": 2})
    bad.on_experiment_end([trial])
    err = capsys.readouterr().err
    assert err.count("TensorBoard curves in") == 1 and "the results store is not affected" in err


def test_learning_curves_from_history_with_and_without_trials_rows(synthetic_results, tmp_path):
    from analysis.plots import plot_learning_curves

    history = store.load_results(synthetic_results, "history", sweep="tiny")
    trials = store.load_results(synthetic_results, "trials", sweep="tiny")
    png = plot_learning_curves(history, trials, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # mid-sweep: evaluations stored, trials rows not yet; the points are placed by their ids
    assert plot_learning_curves(history, pd.DataFrame(), tmp_path / "b.png").stat().st_size > 10_000
