"""Helpers of the recovery tests: the real ``genievm`` console script and a running ``genievm serve``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

GENIEVM = str(Path(sys.executable).parent / "genievm")
PASSPHRASE = "correct horse battery staple"


def genievm(*args: str, cwd: Path, passphrase: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if passphrase is not None:
        env["GENIEVM_PASSPHRASE"] = passphrase
    return subprocess.run([GENIEVM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def write_image(path: Path, size: int, layout: Sequence[tuple[int, bytes]]) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in layout:
            f.seek(offset)
            f.write(data)
    return path


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Serving:
    process: subprocess.Popen[str]
    job: str
    uris: dict[str, str]  # disk -> NBD URI
    lines: list[str] = field(default_factory=list)

    def stop(self, signum: int | None = signal.SIGTERM) -> tuple[int, str]:
        """Send ``signum`` (None: none, it is stopping already), then its exit code and stderr."""
        if signum is not None and self.process.poll() is None:
            self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


@contextmanager
def serving(*args: str, cwd: Path, passphrase: str | None = None, disks: int = 1) -> Iterator[Serving]:
    """``genievm serve ARGS`` running until the block ends (then SIGTERM, as Ctrl-C would).

    It prints a line naming its job, then one line per disk: the disk and its NBD URI.
    """
    env = dict(os.environ)
    if passphrase is not None:
        env["GENIEVM_PASSPHRASE"] = passphrase
    process = subprocess.Popen(
        [GENIEVM, "serve", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    watchdog = threading.Timer(60, process.kill)  # a serve that never starts fails the test, not the run
    watchdog.start()
    try:
        lines = [process.stdout.readline().rstrip("\n") for _ in range(1 + disks)]
    finally:
        watchdog.cancel()
    if not lines[0].startswith("job "):
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"genievm serve did not start: {lines} {out} {err}")
    served = Serving(process, lines[0].split()[1], dict(line.split(" ", 1) for line in lines[1:]), lines)
    try:
        yield served
    finally:
        if process.poll() is None:
            served.stop()
