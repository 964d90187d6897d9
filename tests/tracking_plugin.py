"""A third-party plugin that registers CBT sources and nothing else, for tests/test_cbt_choice.py.

It reaches the core the way an installed plugin does: its hook ``genievm_register_cbt_sources``
fills the host's registry (the tests pass it to ``PluginHost(extra_plugins=...)``). Its sources
track disks of providers it knows nothing of:

- ``vdb-blockhash`` (priority 50): the disks ``vdb`` of the dirvm example's VMs, by the block
  maps dirvm keeps (the tokens its disk sources hand out); above ``dirvm-blockhash`` (10);
- ``broken-array`` (priority 40): raw image files whose name ends in ``-array.img``, as a
  storage array's API that fails would: every answer is a ``CBTError``.

Each source notes which disks it was asked about.
"""

from __future__ import annotations

from genievm_dirvm.cbt import BlockHashCBT

from genievm_core.errors import CBTError
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin import CBTSourceRegistry, hookimpl
from genievm_core.plugin.protocols import ChangedExtents


class VdbBlockHashCBT(BlockHashCBT):
    name = "vdb-blockhash"
    priority = 50

    def __init__(self) -> None:
        self.asked: list[str] = []

    def supports(self, disk: DiskInfo) -> bool:
        return super().supports(disk) and disk.name == "vdb"

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        self.asked.append(disk.name)
        changed = super().changed_extents(disk, token)
        return ChangedExtents(changed.extents, self.name, changed.reason)


class BrokenArrayCBT:
    name = "broken-array"
    priority = 40

    def __init__(self) -> None:
        self.asked: list[str] = []

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "raw-file" and disk.location.endswith("-array.img")

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        self.asked.append(disk.name)
        raise CBTError(f"changed-block tracking failed for disk {disk.name}: the array answered 503")


class TrackingPlugin:
    def __init__(self) -> None:
        self.vdb = VdbBlockHashCBT()
        self.array = BrokenArrayCBT()

    @hookimpl
    def genievm_register_cbt_sources(self, registry: CBTSourceRegistry) -> None:
        registry.add(self.vdb)
        registry.add(self.array)
