"""SIGINT and SIGTERM as ``JobInterruptedError``: raised in the main thread, wherever it is, so that a job
stops between chunks and its clean-up runs (``genievm`` and the instant-export owner install it).

One place must not see it: ``threading.Thread.start``. Raised there, between the new thread's start and
the method's end, the error makes ``threading`` forget a thread that does run, and that thread's
start-up then prints a ``KeyError`` traceback (``_limbo``) before the command's one line. A signal that
lands there is kept and raised a few milliseconds later, by SIGALRM, once the thread has started.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable
from types import FrameType

from genievm_core.errors import JobInterruptedError

__all__ = ["interrupt", "raise_on"]

RETRY_AFTER = 0.005  # seconds: a thread's start takes microseconds to a few milliseconds
_START = threading.Thread.start.__code__
_kept: list[int] = []  # the signal kept while a thread was starting


def raise_on(signums: Iterable[int]) -> None:
    """Make each of ``signums`` raise ``JobInterruptedError`` (one left ignored stays ignored)."""
    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, interrupt)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler: raise the interruption, unless the main thread is starting a thread."""
    if _starting_a_thread(frame):
        _kept[:] = [signum]
        signal.signal(signal.SIGALRM, _raise_kept)
        signal.setitimer(signal.ITIMER_REAL, RETRY_AFTER)
        return
    _kept.clear()
    raise JobInterruptedError(f"interrupted by {signal.Signals(signum).name}")


def _raise_kept(_signum: int, frame: FrameType | None) -> None:
    if _kept:
        interrupt(_kept[0], frame)


def _starting_a_thread(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code is _START:
            return True
        frame = frame.f_back
    return False
