"""ctxscale.files: a file or folder appears whole or not at all, and no temporary is left behind."""
import json

import numpy as np
import pandas as pd
import pytest

from ctxscale import files


class Interrupted(Exception):
    pass


def _interrupted_write(handle):
    handle.write(b"half of the new con")
    raise Interrupted


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary(tmp_path):
    with pytest.raises(Interrupted):
        files.atomic_write(tmp_path / "new.bin", _interrupted_write)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_existing_file_as_it_was(tmp_path):
    path = files.write_text(tmp_path / "kept.txt", "old content")
    with pytest.raises(Interrupted):
        files.atomic_write(path, _interrupted_write)
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_an_existing_file_is_replaced_whole(tmp_path):
    path = files.write_bytes(tmp_path / "f.bin", b"a much longer old content than the new one")
    files.write_bytes(path, b"new")
    assert path.read_bytes() == b"new"  # nothing of the longer old file survives at its end
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_frame_that_cannot_become_parquet_leaves_nothing(tmp_path):
    path = files.write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(Exception):
        files.write_parquet(path, pd.DataFrame({"a": [object(), 1]}))
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.DataFrame({"a": [1, 2]}))
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_typed_helpers_round_trip_and_create_the_folder(tmp_path):
    files.write_json(tmp_path / "a" / "m.json", {"b": 1, "a": [1, 2]})
    files.write_npy(tmp_path / "a" / "x.npy", np.arange(6, dtype=np.uint16).reshape(2, 3))
    assert json.loads((tmp_path / "a" / "m.json").read_text()) == {"b": 1, "a": [1, 2]}
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "x.npy"), np.arange(6).reshape(2, 3))


def test_publish_folder_takes_an_absent_or_empty_target(tmp_path):
    assert files.publish_folder(tmp_path / "new", lambda folder: (folder / "f").write_text("1"))
    (tmp_path / "empty").mkdir()
    assert files.publish_folder(tmp_path / "empty", lambda folder: (folder / "f").write_text("2"))
    assert (tmp_path / "new" / "f").read_text() == "1" and (tmp_path / "empty" / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]


def test_publish_folder_leaves_a_filled_target_alone(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "theirs").write_text("first")
    assert not files.publish_folder(tmp_path / "taken", lambda folder: (folder / "ours").write_text("second"))
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_a_failed_fill_publishes_nothing(tmp_path):
    def fill(folder):
        (folder / "half").write_text("x")
        raise Interrupted

    with pytest.raises(Interrupted):
        files.publish_folder(tmp_path / "set", fill)
    assert list(tmp_path.iterdir()) == []
