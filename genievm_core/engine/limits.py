"""Bandwidth limits of a job: one token bucket per direction, shared by all its disks and worker threads.

A job reads from its source and writes to its target: a backup reads the
provider's disks and writes chunks to the storage target; a restore reads
chunks from the repository and writes the restored disks. ``TransferLimits``
holds one ``Bandwidth`` for each direction; the engine calls ``take(n)`` for
every ``n`` bytes it moved, from whichever thread moved them, and ``take``
sleeps as long as that direction is ahead of its rate. The rates can change at
any moment (``genievm jobs limit``): a thread asleep in ``take`` wakes and
recomputes its wait at the new rate.

The bucket keeps two byte counts: ``reserved`` (every byte taken so far) and
``paid`` (what the rate has earned since the first take). A take reserves its
bytes and waits until they are paid for, first come first served. An idle
bucket saves at most ``burst`` seconds of credit, so a short stall (a slow
read, an oversleep on a busy machine) is made up for, but a long pause never
turns into a burst. Rates are in MB/s, 10^6 bytes per second; 0 or None is no
limit.

A helper process that moves a job's bytes (nbdkit, for ``genievm serve``)
follows the job's limits through a file: the job writes it with
``save_limits`` whenever they change, the helper's ``LimitsFile`` reads it
again when it has changed (looking at most every ``interval`` seconds).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from genievm_core.errors import ConfigError

__all__ = ["MB", "Bandwidth", "LimitsFile", "TransferLimits", "describe_rate", "save_limits"]

MB = 1_000_000  # bytes in the MB of MB/s
BURST = 0.25  # seconds of credit an idle bucket saves


def _check(mbps: float | None) -> float | None:
    """The rate in bytes per second, or None for no limit."""
    if mbps is None or mbps == 0:
        return None
    if not math.isfinite(mbps) or mbps < 0:
        raise ConfigError(f"invalid configuration: bandwidth limit: {mbps} is not a number of MB/s, 0 or more")
    return mbps * MB


def describe_rate(mbps: float | None) -> str:
    """``20 MB/s``, or ``no limit``."""
    return f"{mbps:g} MB/s" if mbps else "no limit"


class Bandwidth:
    """At most ``mbps`` MB/s through one direction of a job, whatever the number of threads; None: no limit."""

    def __init__(
        self, mbps: float | None = None, *, burst: float = BURST, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = _check(mbps)  # bytes per second
        self._mbps = mbps or None  # as given, for whoever shows it
        self._burst = burst
        self._clock = clock
        self._cond = threading.Condition()
        self._reserved = 0.0
        self._paid = 0.0
        self._since: float | None = None  # when ``paid`` was last brought up to date; None before the first take
        self._released = False

    @property
    def mbps(self) -> float | None:
        return self._mbps

    def set(self, mbps: float | None) -> None:
        """A new rate, at once: what is owed is paid at the new rate (0 or None: no limit)."""
        rate = _check(mbps)
        with self._cond:
            self._earn(self._clock())
            if self._rate is None:  # limited from now on: no credit from the unlimited time
                self._paid = self._reserved
            self._rate, self._mbps = rate, mbps or None
            self._cond.notify_all()

    def take(self, n: int) -> None:
        """Account ``n`` bytes moved (or about to move); sleep until the rate has paid for them."""
        if self._rate is None or n <= 0 or self._released:
            return
        with self._cond:
            self._earn(self._clock())
            self._reserved += n
            mine = self._reserved
            while self._rate is not None and not self._released and self._paid < mine:
                self._cond.wait((mine - self._paid) / self._rate)
                self._earn(self._clock())

    def release(self) -> None:
        """No more waiting, for good (the job was cancelled: its threads must get to their next checkpoint)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def _earn(self, now: float) -> None:
        if self._rate is not None and self._since is not None:
            saved = self._reserved + self._burst * self._rate  # an idle bucket saves ``burst`` seconds at most
            self._paid = min(self._paid + (now - self._since) * self._rate, max(saved, self._paid))
        self._since = now


class TransferLimits:
    """The read and the write ``Bandwidth`` of one job."""

    def __init__(self, read: float | None = None, write: float | None = None) -> None:
        self.read = Bandwidth(read)
        self.write = Bandwidth(write)

    def change(self, read: float | None = None, write: float | None = None) -> None:
        """New rates in MB/s; None leaves a direction as it is, 0 lifts its limit."""
        if read is not None:
            self.read.set(read)
        if write is not None:
            self.write.set(write)

    def as_dict(self) -> dict[str, float | None]:
        """``{"read": MB/s or None, "write": ...}``, None where there is no limit."""
        return {"read": self.read.mbps, "write": self.write.mbps}

    def release(self) -> None:
        self.read.release()
        self.write.release()


def save_limits(path: Path, limits: TransferLimits) -> None:
    """Write ``limits`` to ``path`` (JSON, MB/s by direction) at once: a reader sees the old file or the new one."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(limits.as_dict()))
    os.replace(partial, path)


class LimitsFile:
    """``TransferLimits`` that follow the file a job writes with ``save_limits``; call ``refresh`` often."""

    def __init__(self, path: Path, *, interval: float = 0.2) -> None:
        self.path = path
        self.interval = interval
        self.limits = TransferLimits()
        self._seen: tuple[int, int] | None = None  # the file's inode and mtime when it was last read
        self._next = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read the file again if it changed since it was last read (at most once every ``interval``)."""
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            self._next = now + self.interval
            try:
                found = os.stat(self.path)
                changed = (found.st_ino, found.st_mtime_ns)  # save_limits makes a new file each time
                if changed == self._seen:
                    return
                given = json.loads(self.path.read_text())
            except (OSError, ValueError):
                return  # not written yet, or gone: the limits stay as they are
            self._seen = changed
            self.limits.change(read=given.get("read") or 0, write=given.get("write") or 0)
        finally:
            self._lock.release()
