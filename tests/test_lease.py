"""Leases (`ctxscale.sweep.lease`): claims are exclusive, also between real processes; a dead
launch's claims are taken over, a live one's are not; everything is released at the end."""
from __future__ import annotations

import json
import multiprocessing
import time

from ctxscale.sweep.lease import Launch

IDS = [f"l{n}_d100_s0_0123abcd" for n in range(300)]


def _claim_all(folder, queue, start):
    while time.time() < start:  # both processes claim at the same moment
        time.sleep(0.001)
    with Launch(folder) as launch:
        mine, held = launch.claim(IDS)
        queue.put((mine, held))
        time.sleep(0.5)  # hold them while the other one tries


def test_two_processes_claiming_at_once_split_every_point_exactly_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start = time.time() + 3
    workers = [context.Process(target=_claim_all, args=(tmp_path, queue, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    (mine_a, held_a), (mine_b, held_b) = results
    assert sorted(mine_a + mine_b) == sorted(IDS)  # every point claimed once, by one of them
    assert not set(mine_a) & set(mine_b)
    assert sorted(held_a) == sorted(mine_b) and sorted(held_b) == sorted(mine_a)
    assert list((tmp_path / "leases").iterdir()) == []  # both released everything


def test_a_live_launch_keeps_its_points_and_releases_them_at_the_end(tmp_path):
    with Launch(tmp_path) as first:
        assert first.claim(IDS[:3]) == (IDS[:3], [])
        with Launch(tmp_path) as second:
            assert second.claim(IDS[:5]) == (IDS[3:5], IDS[:3])
            assert second.others_alive() == [first.id]
        assert first.claim(IDS[3:5]) == (IDS[3:5], [])  # released by the second one's exit
    assert list((tmp_path / "leases").iterdir()) == []


def _dead_launch(folder, ids, expired=True):
    """What a launch killed with kill -9 leaves: its lease (expired, or gone) and its claims."""
    leases = folder / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    if expired:
        (leases / "dead.lease").write_text(json.dumps({"launch": "dead", "expires_at": time.time() - 1}))
    for trial_id in ids:
        (leases / f"{trial_id}.claim").write_text("dead")


def test_claims_of_a_dead_launch_are_taken_over(tmp_path):
    _dead_launch(tmp_path / "a", IDS[:4])
    _dead_launch(tmp_path / "b", IDS[:4], expired=False)  # no lease file at all
    for folder in (tmp_path / "a", tmp_path / "b"):
        with Launch(folder) as launch:
            assert launch.claim(IDS[:6]) == (IDS[:6], [])
            assert {(folder / "leases" / f"{i}.claim").read_text() for i in IDS[:6]} == {launch.id}
        assert not list((folder / "leases").glob("*.claim"))


def test_the_heartbeat_keeps_a_short_lease_alive(tmp_path):
    with Launch(tmp_path, ttl_s=1.0, heartbeat_s=0.1) as holder:
        holder.claim(IDS[:1])
        time.sleep(2.0)  # twice the lease's life: only the heartbeat keeps it
        with Launch(tmp_path) as other:
            assert other.claim(IDS[:1]) == ([], IDS[:1])
    with Launch(tmp_path, ttl_s=1.0, heartbeat_s=100) as silent:  # no beat before it expires
        silent.claim(IDS[:1])
        time.sleep(1.5)
        with Launch(tmp_path) as other:
            assert other.claim(IDS[:1]) == (IDS[:1], [])
