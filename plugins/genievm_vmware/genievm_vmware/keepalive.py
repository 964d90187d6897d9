"""Keeping the vSphere session alive while data moves.

vCenter ends a session that makes no API call for its idle timeout (30 minutes by
default), and a long copy through a transport makes none; the snapshot must still
be removed at the end. A daemon thread calls ``CurrentTime`` every ``interval``
seconds while the copy runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyVmomi import vim, vmodl

from genievm_core.logging import get_logger
from genievm_vmware.options import DEFAULT_INTERVAL

__all__ = ["DEFAULT_INTERVAL", "session_kept_alive"]

log = get_logger("genievm.vmware")


@contextmanager
def session_kept_alive(si: vim.ServiceInstance, interval: float = DEFAULT_INTERVAL) -> Iterator[None]:
    stop = threading.Event()

    def ping() -> None:
        while not stop.wait(interval):
            try:
                log.debug("vmware.keepalive", server_time=str(si.CurrentTime()))
            except (vmodl.MethodFault, OSError) as exc:
                log.warning("vmware.keepalive_failed", error=str(exc))

    thread = threading.Thread(target=ping, name="genievm-vsphere-keepalive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
