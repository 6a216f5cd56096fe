"""Leases: two launches of one sweep never run the same grid point at once.

A launch writes one lease file, `<sweep folder>/leases/<launch id>.lease` (JSON: holder host and
pid, start, expiry), and a heartbeat thread renews its expiry every `heartbeat_s` by replacing the
file (`ctxscale.files`: a temporary renamed over it). The points it is about to run it claims one by
one: `leases/<trial id>.claim` is a hard link to a small file naming the launch, and `os.link`
fails when the name exists, so of two launches claiming one point at the same moment exactly one
succeeds. Both operations are atomic on a local disk and on NFS alike: there is no `flock`.

A claim whose launch lease has expired (or is gone: its holder died without cleaning up) is
taken over: it is first renamed to a name only this launch uses, and only when the renamed file
still names the dead launch is it removed and claimed anew; had another launch already claimed the
point in between, its claim is put back. A launch on the same host whose process is gone counts as dead at
once. A launch releases its claims and its lease when it ends, also on Ctrl-C or an error. Expiry compares wall clocks: the hosts of one shared folder must agree
on the time within `ttl_s`.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable, Optional

from .. import files

LEASE_TTL_S = float(os.environ.get("CTXSCALE_LEASE_TTL_S", 120))  # a launch silent this long is dead
FOLDER = "leases"


def _read_text(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _process_exists(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid: assume alive
    return True


class Launch:
    """One launch of a sweep: its lease (renewed by a heartbeat) and the points it claims.

    >>> with Launch(sweep_folder) as launch:              # doctest: +SKIP
    ...     mine, held = launch.claim(["l8_d100_s0_0123abcd"])
    """

    def __init__(self, sweep_folder: str | Path, ttl_s: float = LEASE_TTL_S, heartbeat_s: Optional[float] = None):
        self.folder = Path(sweep_folder) / FOLDER
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else ttl_s / 6
        self.id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{socket.gethostname()}-{os.getpid()}-" \
                  f"{uuid.uuid4().hex[:8]}"
        self.lease = self.folder / f"{self.id}.lease"
        self._source = self.folder / f".{self.id}.claim-source"  # every claim is a hard link to it
        self.claimed: set[str] = set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # the lease and its heartbeat

    def _renew(self) -> None:
        now = time.time()
        files.write_json(self.lease, {"launch": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                                      "renewed_at": now, "expires_at": now + self.ttl_s})

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._renew()
            except OSError:
                pass  # a passing storage error: the next beat tries again, well before the expiry

    def __enter__(self) -> "Launch":
        self._renew()
        files.write_text(self._source, self.id)
        self._thread = threading.Thread(target=self._beat, name="ctxscale-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.release(list(self.claimed))
        self._source.unlink(missing_ok=True)
        self.lease.unlink(missing_ok=True)

    # other launches

    def alive(self, launch: str) -> bool:
        """Whether `launch` holds an unexpired lease."""
        if launch == self.id:
            return True
        text = _read_text(self.folder / f"{launch}.lease")
        try:
            lease = json.loads(text) if text is not None else None
            if lease is None or float(lease["expires_at"]) <= time.time():
                return False
        except (ValueError, KeyError, TypeError):
            return True  # being replaced this instant (or written by hand): not taken from it
        # a holder on this host that is gone (kill -9) need not be waited for until its expiry
        return lease.get("host") != socket.gethostname() or _process_exists(lease.get("pid"))

    def others_alive(self) -> list[str]:
        """Other launches of this sweep with an unexpired lease."""
        if not self.folder.is_dir():
            return []
        return [p.stem for p in self.folder.glob("*.lease") if p.stem != self.id and self.alive(p.stem)]

    # claims

    def claim(self, trial_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Claim each point for this launch: (claimed, held by another live launch), in order."""
        mine, held = [], []
        for trial_id in trial_ids:
            (mine if self._claim_one(trial_id) else held).append(trial_id)
        self.claimed.update(mine)
        return mine, held

    def _claim_one(self, trial_id: str) -> bool:
        path = self.folder / f"{trial_id}.claim"
        for _ in range(5):  # each turn either decides or saw the claim change under it
            try:
                os.link(self._source, path)
                return True
            except FileExistsError:
                pass
            holder = _read_text(path)
            if holder is None:
                continue  # released this instant: try again
            if holder == self.id:
                return True
            if self.alive(holder):
                return False
            stale = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, stale)
            except FileNotFoundError:
                continue
            if _read_text(stale) != holder:  # another launch claimed it in between: put theirs back
                try:
                    os.link(stale, path)
                except FileExistsError:
                    pass
                stale.unlink(missing_ok=True)
                return False
            stale.unlink(missing_ok=True)
        return False

    def release(self, trial_ids: Iterable[str]) -> None:
        for trial_id in trial_ids:
            path = self.folder / f"{trial_id}.claim"
            if _read_text(path) == self.id:
                path.unlink(missing_ok=True)
            self.claimed.discard(trial_id)
