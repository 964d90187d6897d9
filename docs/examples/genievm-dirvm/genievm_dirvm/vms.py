"""The folder of VMs: each VM is a sidecar ``NAME.json`` naming its raw disk images.

::

    {"name": "web01", "disks": {"vda": "web01-vda.img", "vdb": "/data/web01-vdb.img"},
     "memory_mib": 512, "state": "stopped"}

Disk paths are relative to the folder, or absolute. The VM's id is the
sidecar's name without ``.json``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genievm_core.errors import ProviderError, VMNotFoundError

__all__ = ["SidecarVM", "find_vm", "read_sidecar", "sidecars", "write_sidecar"]

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")


@dataclass(frozen=True)
class SidecarVM:
    id: str
    sidecar: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.id)

    @property
    def state(self) -> str:
        return str(self.data.get("state", "stopped"))

    def disks(self) -> dict[str, Path]:
        folder = self.sidecar.parent
        return {name: folder / path for name, path in self.data["disks"].items()}


def read_sidecar(path: Path) -> SidecarVM:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ProviderError(f"provider dirvm: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ProviderError(f"provider dirvm: {path} is not JSON: {exc}") from exc
    disks = data.get("disks") if isinstance(data, dict) else None
    if not isinstance(disks, dict) or not disks or not all(SAFE.match(str(d)) for d in disks):
        raise ProviderError(f"provider dirvm: {path}: 'disks' must map disk names (vda, ...) to image paths")
    return SidecarVM(path.stem, path, data)


def sidecars(root: Path) -> list[SidecarVM]:
    """Every VM of the folder, by id; sidecars that do not parse are left out."""
    found = []
    for path in sorted(root.glob("*.json")):
        if SAFE.match(path.stem):
            try:
                found.append(read_sidecar(path))
            except ProviderError:
                continue
    return found


def find_vm(root: Path, vm_id: str) -> SidecarVM:
    """The VM by id, or else by its ``name``."""
    path = root / f"{vm_id}.json"
    if SAFE.match(vm_id) and path.is_file():
        return read_sidecar(path)
    for vm in sidecars(root):
        if vm.name == vm_id:
            return vm
    raise VMNotFoundError(f"no VM {vm_id} on provider dirvm (no {vm_id}.json in {root})")


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write a sidecar atomically: the VM appears whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
