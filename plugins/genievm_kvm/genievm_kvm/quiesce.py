"""Application consistency: guest filesystems frozen by the QEMU guest agent around the point in time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from genievm_core.errors import ProviderError
from genievm_core.logging import get_logger

__all__ = ["frozen"]

log = get_logger("genievm.kvm.quiesce")


@contextmanager
def frozen(dom: libvirt.virDomain, vm_name: str, quiesce: bool) -> Iterator[None]:
    """Freeze the guest's filesystems for the block when ``quiesce``; fail when no agent answers."""
    if not quiesce:
        yield
        return
    try:
        count = dom.fsFreeze()
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"provider kvm: VM {vm_name}: --quiesce needs the QEMU guest agent, and it did not answer: "
            f"{exc.get_error_message()}"
        ) from exc
    log.info("kvm.fs_frozen", vm=vm_name, filesystems=count)
    try:
        yield
    finally:
        try:
            dom.fsThaw()
            log.info("kvm.fs_thawed", vm=vm_name)
        except libvirt.libvirtError as exc:
            log.error("kvm.fs_thaw_failed", vm=vm_name, error=exc.get_error_message())
