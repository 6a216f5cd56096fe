"""Tests of ctxscale.data.synthetic: labels, coins, distinct strings, files and the cache."""
from __future__ import annotations

import json
import math
import multiprocessing

import numpy as np
import pytest

from ctxscale.data import synthetic as S
from ctxscale.data.synthetic import distinct, storage

# Positions on both sides of byte boundaries, the last bit of the string, and tasks whose bits
# lie beyond it (through l, through a, through both).
TASKS = [[8, 9], [1, 100], [16, 17], [3, 3], [64, 33], [150, 2], [5, 101], [200, 300]]
LENGTH = 100


def _reference_labels(row_bits: np.ndarray, task_ids: np.ndarray, tasks) -> list:
    """Per-row labels written the plain way; None where the task is a coin flip."""
    out = []
    for bits, t in zip(row_bits, task_ids):
        l, a = tasks[t]
        out.append(int(bits[a - 1]) ^ int(bits[l - 1]) if l <= LENGTH and a <= LENGTH else None)
    return out


def test_labels_are_the_xor_of_the_task_bits():
    data = S.generate(300, 90, TASKS, LENGTH, seed=3)
    for bits, labels, task_ids in (data.train(), data.val()):
        unpacked = np.unpackbits(bits, axis=1, bitorder="big")[:, :LENGTH]
        expected = _reference_labels(unpacked, task_ids, TASKS)
        checked = [(int(y), e) for y, e in zip(labels, expected) if e is not None]
        assert len(checked) > len(labels) // 2
        assert all(y == e for y, e in checked)
    assert set(np.unique(data.labels).tolist()) <= {0, 1}


def test_tasks_beyond_the_string_are_fair_coins_independent_of_the_bits():
    tasks = [[3, 1], [150, 2], [5, 101], [200, 300]]
    data = S.generate(40_000, 0, tasks, LENGTH, seed=11)
    coin_rows = np.isin(data.task_index(0, data.train_rows), [1, 2, 3])
    labels = data.labels[coin_rows].astype(float)
    n = labels.size
    # 5 sigma: a fixed seed makes this deterministic, the bound only has to be loose enough to be honest
    assert abs(labels.mean() - 0.5) < 5 * 0.5 / math.sqrt(n)
    bits = S.unpack_bits(data.bits[coin_rows], LENGTH).astype(float)
    corr = ((bits - bits.mean(0)) * (labels - labels.mean())[:, None]).mean(0) / (bits.std(0) * labels.std())
    assert np.abs(corr).max() < 5 / math.sqrt(n)
    # ... and in particular not the XOR the in-string half of the task would give
    xor_like = bits[:, 1] == labels
    assert abs(xor_like.mean() - 0.5) < 5 * 0.5 / math.sqrt(n)


def test_same_seed_same_data_other_seed_other_data():
    a = S.generate(500, 100, TASKS, LENGTH, seed=7)
    b = S.generate(500, 100, TASKS, LENGTH, seed=7)
    c = S.generate(500, 100, TASKS, LENGTH, seed=8)
    np.testing.assert_array_equal(a.bits, b.bits)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.bits, c.bits)
    assert not np.array_equal(a.labels, c.labels)


def test_generated_arrays_are_read_only_and_caller_tasks_untouched():
    tasks = np.array(TASKS, dtype=np.int32)
    data = S.generate(10, 2, tasks, LENGTH)
    assert not data.bits.flags.writeable and not data.labels.flags.writeable
    assert tasks.flags.writeable


def _distinct(bits: np.ndarray) -> bool:
    return len(np.unique(np.ascontiguousarray(bits).view(np.dtype((np.void, bits.shape[1]))))) == len(bits)


@pytest.mark.parametrize(
    "train_rows, val_rows, length",
    [(5_000, 1_000, 100), (150, 50, 8), (200, 56, 8), (3, 1, 2), (60_000, 5_000, 16), (60_000, 5_000, 26)],
)
def test_no_string_repeats_within_or_across_splits(train_rows, val_rows, length, monkeypatch):
    found, check = [], distinct.duplicate_rows
    monkeypatch.setattr(distinct, "duplicate_rows", lambda bits: found.append(check(bits)) or found[-1])
    data = S.generate(train_rows, val_rows, [[1, 2]], length, seed=0)
    assert _distinct(data.bits)
    assert found and found[-1].size == 0  # the last full check passed
    if length == 26:  # 4-byte rows take the sort-based check; ~30 birthday collisions are redrawn
        assert found[0].size > 0
    pad = 8 * data.bits.shape[1] - length
    assert not (data.bits[:, -1] & ((1 << pad) - 1)).any()


def test_duplicate_check_compares_whole_rows_not_prefixes():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(6, 13), dtype=np.uint8)
    rows[:, -1] &= 0xF0
    rows[2] = rows[0]          # exact copy: a duplicate
    rows[4] = rows[1]          # exact copy: a duplicate
    rows[5, :8] = rows[3, :8]  # same 64-bit prefix, different tail: not a duplicate
    rows[5, 12] = rows[3, 12] ^ 0x10
    np.testing.assert_array_equal(distinct.duplicate_rows(rows), [2, 4])
    np.testing.assert_array_equal(distinct.duplicate_rows(np.asfortranarray(rows)), [2, 4])


def test_more_rows_than_strings_is_refused():
    with pytest.raises(ValueError, match=r"2\*\*8"):
        S.generate(200, 57, [[1, 2]], string_length=8)


def test_task_index_is_row_mod_t_restarting_in_each_split():
    data = S.generate(23, 11, TASKS, LENGTH)
    np.testing.assert_array_equal(data.train()[2], np.arange(23) % len(TASKS))
    np.testing.assert_array_equal(data.val()[2], np.arange(11) % len(TASKS))
    np.testing.assert_array_equal(data.train(5)[2], np.arange(5) % len(TASKS))
    assert data.train(5)[0].shape == (5, 13)
    with pytest.raises(ValueError):
        data.train(24)


@pytest.mark.parametrize("context_length", [0, 1, 7, 8, 9, 64, 99, 100, 104])
def test_unpack_bits_matches_numpy(context_length):
    data = S.generate(64, 0, TASKS, LENGTH, seed=1)
    full = np.unpackbits(data.bits, axis=1, bitorder="big")
    np.testing.assert_array_equal(S.unpack_bits(data.bits, context_length), full[:, :context_length])
    with pytest.raises(ValueError):
        S.unpack_bits(data.bits, 105)


def test_bayes_risk_by_hand():
    tasks = [[3, 1], [5, 4], [9, 2], [120, 7]]  # reach 3, 5, 9 and beyond the string
    ln2 = math.log(2)
    assert S.bayes_risk(tasks, 2) == pytest.approx(4 / 4 * ln2)
    assert S.bayes_risk(tasks, 3) == pytest.approx(3 / 4 * ln2)
    assert S.bayes_risk(tasks, 8) == pytest.approx(2 / 4 * ln2)
    assert S.bayes_risk(tasks, 9) == pytest.approx(1 / 4 * ln2)
    assert S.bayes_risk(tasks, 500) == pytest.approx(1 / 4 * ln2)  # 120 > L stays a coin
    assert S.bayes_risk(tasks, 200, string_length=120) == pytest.approx(0.0)
    risk = S.bayes_risk(tasks, np.array([2, 3, 8, 9]))
    np.testing.assert_allclose(risk, np.array([4, 3, 2, 1]) / 4 * ln2)
    assert isinstance(S.bayes_risk(tasks, 5), float)


def _brute_force_bayes_risk(tasks, context_length: int, length: int) -> float:
    """Mean over tasks of H(label | first c bits, task) in nats, by enumerating all 2**length strings.

    Written from the labelling rule alone: a task inside the string labels a string with the XOR of
    its two bits, a task reaching beyond it is a fair coin independent of the bits (ln 2).
    """
    values = np.arange(2**length)
    strings = (values[:, None] >> np.arange(length - 1, -1, -1)) & 1  # column k is bit k + 1
    c = min(context_length, length)
    prefix = values >> (length - c)  # strings sharing their first c bits share this number
    entropies = []
    for l, a in tasks:
        if l > length or a > length:
            entropies.append(math.log(2))
            continue
        labels = strings[:, l - 1] ^ strings[:, a - 1]
        p_one = np.bincount(prefix, weights=labels) / np.bincount(prefix)  # every prefix equally likely
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.nan_to_num(p_one * np.log(p_one)) - np.nan_to_num((1 - p_one) * np.log(1 - p_one))
        entropies.append(float(h.mean()))
    return float(np.mean(entropies))


BRUTE_FORCE_TASKS = [
    [[2, 1], [1, 2], [5, 3]],                      # both orders
    [[3, 3], [6, 1], [1, 6]],                      # a constant label (l == a) inside the string
    [[9, 2], [2, 9], [4, 12], [11, 11], [7, 5]],   # beyond the string through l, a, both, and l == a
    [[8, 1], [1, 8], [7, 4], [4, 7], [2, 2]],      # the string's last bit, l == a at bit 2
]


@pytest.mark.parametrize("length", [6, 7, 8])
@pytest.mark.parametrize("tasks", BRUTE_FORCE_TASKS, ids=lambda t: str(t))
def test_bayes_risk_equals_brute_force_enumeration(tasks, length):
    from analysis.forms import synthetic_bayes_risk

    lengths = np.arange(0, length + 3)  # contexts up to beyond the string
    expected = np.array([_brute_force_bayes_risk(tasks, c, length) for c in lengths])
    np.testing.assert_allclose(S.bayes_risk(tasks, lengths, length), expected, atol=1e-12)
    # the analysis package uses the same formula, JSON task lists included
    np.testing.assert_allclose(synthetic_bayes_risk(json.dumps(tasks), lengths, length), expected, atol=1e-12)
    per_task = S.task_bayes_risk(tasks, lengths, length)
    assert per_task.shape == (len(lengths), len(tasks))
    np.testing.assert_allclose(per_task.mean(axis=1), expected, atol=1e-12)


def test_a_constant_task_costs_nothing_and_its_labels_are_zero():
    # the generator's own labels agree: l == a inside the string is always 0, beyond it a coin
    data = S.generate(400, 0, [[3, 3], [120, 120]], LENGTH, seed=2)
    constant, coin = data.labels[0::2], data.labels[1::2]
    assert not constant.any() and 0 < coin.mean() < 1
    assert S.bayes_risk([[3, 3], [120, 120]], 1) == pytest.approx(math.log(2) / 2)


def _assert_same(a: S.SyntheticSet, b: S.SyntheticSet) -> None:
    np.testing.assert_array_equal(a.bits, b.bits)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.tasks, b.tasks)
    assert (a.string_length, a.train_rows, a.val_rows, a.seed) == (b.string_length, b.train_rows, b.val_rows, b.seed)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    data = S.generate(120, 30, TASKS, 20, seed=5)
    path = S.save(data, tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left
    loaded = S.load(path, mmap=mmap)
    _assert_same(data, loaded)
    assert isinstance(loaded.bits, np.memmap) == mmap
    assert not loaded.bits.flags.writeable
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["tasks"] == TASKS and manifest["format_version"] == S.FORMAT_VERSION
    with pytest.raises(FileExistsError):
        S.save(data, path)


def test_cached_hit_returns_the_same_data(tmp_path):
    first = S.cached(200, 40, TASKS, 100, seed=2, cache_dir=tmp_path)
    second = S.cached(200, 40, TASKS, 100, seed=2, cache_dir=tmp_path)
    _assert_same(first, second)
    assert isinstance(second.bits, np.memmap)
    S.cached(200, 40, TASKS, 100, seed=3, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_cached_uses_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXSCALE_CACHE", str(tmp_path))
    S.cached(20, 4, TASKS)
    assert len(list((tmp_path / "synthetic").iterdir())) == 1


def test_cached_losing_a_race_uses_the_winners_copy(tmp_path, monkeypatch):
    generate, calls = S.generate, []

    def other_process_finishes_first(*args):
        calls.append(args)
        if len(calls) == 1:  # the other process misses too, and publishes while this one generates
            S.cached(*args, cache_dir=tmp_path)
        return generate(*args)

    monkeypatch.setattr(storage, "generate", other_process_finishes_first)
    data = S.cached(50, 10, TASKS, 100, 0, cache_dir=tmp_path)
    monkeypatch.undo()
    assert isinstance(data.bits, np.memmap)  # loaded from the winner's folder
    assert len(list(tmp_path.iterdir())) == 1  # the loser's temporary folder is gone


def _cached_in_child(cache_dir, queue):
    data = S.cached(30_000, 5_000, TASKS, 100, 4, cache_dir=cache_dir)
    queue.put(int(np.asarray(data.bits, dtype=np.int64).sum()))


def test_cached_two_processes_at_once(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_cached_in_child, args=(tmp_path, queue)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    sums = [queue.get(timeout=5) for _ in children]
    assert sums[0] == sums[1]
    assert len(list(tmp_path.iterdir())) == 1
    _assert_same(S.load(next(tmp_path.iterdir())), S.generate(30_000, 5_000, TASKS, 100, 4))


def _entry(tmp_path):
    S.cached(40, 8, TASKS, 100, seed=1, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    return entry


def test_missing_cache_file_is_named(tmp_path):
    entry = _entry(tmp_path)
    (entry / "labels.npy").unlink()
    with pytest.raises(ValueError, match=r"labels\.npy: missing.*delete the cache folder"):
        S.cached(40, 8, TASKS, 100, seed=1, cache_dir=tmp_path)


def test_truncated_cache_file_is_named(tmp_path):
    entry = _entry(tmp_path)
    raw = (entry / "bits.npy").read_bytes()
    (entry / "bits.npy").write_bytes(raw[: len(raw) - 100])
    for mmap in (True, False):
        with pytest.raises(ValueError, match=r"bits\.npy"):
            S.load(entry, mmap=mmap)


def test_corrupt_or_inconsistent_manifest_is_named(tmp_path):
    entry = _entry(tmp_path)
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "manifest.json").write_text(json.dumps({**manifest, "train_rows": 41}))
    with pytest.raises(ValueError, match=r"bits\.npy: holds uint8 \(48, 13\).*\(49, 13\)"):
        S.load(entry)
    (entry / "manifest.json").write_text(json.dumps({**manifest, "tasks": [[1, 2]]}))
    with pytest.raises(ValueError, match=r"manifest\.json.*tasks_sha256"):
        S.load(entry)
    (entry / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json: unusable manifest"):
        S.load(entry)
    with pytest.raises(ValueError, match=r"manifest\.json: missing"):
        S.load(tmp_path / "nowhere")


def test_write_cli_splits_rows_and_is_idempotent(tmp_path):
    out = tmp_path / "synthetic"
    summary = S.write_cli(rows=1_200, out=str(out), seed=1)
    assert (summary["train_rows"], summary["val_rows"], summary["tasks"]) == (1_000, 200, 50)
    assert summary["reused"] is False and summary["bytes_per_row"] > 14
    data = S.load(out)
    assert (data.train_rows, data.val_rows, data.string_length) == (1_000, 200, 100)
    assert S.write_cli(rows=1_200, out=str(out), seed=1)["reused"] is True
    with pytest.raises(ValueError, match="different synthetic set"):
        S.write_cli(rows=1_200, out=str(out), seed=2)
    with pytest.raises(ValueError, match="training rows"):
        S.write_cli(rows=10, out=str(tmp_path / "other"), val_rows=10)
