"""Finding VMs and the places a restored VM goes: by name, inventory path, MoRef or instance UUID."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pyVmomi import vim, vmodl

from genievm_core.errors import ConfigError, ProviderError, VMNotFoundError
from genievm_core.models.vm import VMRef
from genievm_vmware.connection import vsphere_errors

__all__ = [
    "datacenter_of",
    "datacenter_path",
    "find_by_name",
    "find_place",
    "find_vm",
    "list_vms",
    "lookup_vm",
    "retrieve",
    "vm_state",
]

_MOREF = re.compile(r"^vm-\d+\Z")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_STATES = {"poweredOn": "running", "poweredOff": "stopped", "suspended": "paused"}
T = TypeVar("T")


def retrieve(
    si: vim.ServiceInstance, kind: type[Any], props: list[str], root: Any = None
) -> list[tuple[Any, dict[str, Any]]]:
    """Every object of ``kind`` under ``root`` (default: everything) with ``props``, in one PropertyCollector call."""
    content: Any = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(root or content.rootFolder, [kind], True)
    try:
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=props)],
        )
        result = []
        options = vmodl.query.PropertyCollector.RetrieveOptions()
        page = content.propertyCollector.RetrievePropertiesEx([spec], options)
        while page is not None:
            result += [(o.obj, {p.name: p.val for p in o.propSet}) for o in page.objects]
            page = content.propertyCollector.ContinueRetrievePropertiesEx(page.token) if page.token else None
        return result
    finally:
        view.Destroy()


def vm_state(power_state: str | None) -> str:
    return _STATES.get(str(power_state), "unknown")


def list_vms(si: vim.ServiceInstance) -> list[VMRef]:
    with vsphere_errors("listing VMs"):
        found = retrieve(si, vim.VirtualMachine, ["name", "config.instanceUuid", "runtime.powerState"])
    refs = [
        VMRef(
            str(p.get("config.instanceUuid") or vm._moId), str(p.get("name", "")), vm_state(p.get("runtime.powerState"))
        )
        for vm, p in found
    ]
    return sorted(refs, key=lambda r: r.name)


def lookup_vm(si: vim.ServiceInstance, ref: str) -> vim.VirtualMachine | None:
    """The VM that ``ref`` names (MoRef ``vm-42``, instance or BIOS UUID, inventory path, or name), or None."""
    content: Any = si.RetrieveContent()
    with vsphere_errors(f"looking up VM {ref}"):
        if _MOREF.match(ref):
            vm = vim.VirtualMachine(ref, si._stub)
            try:
                vm.name  # noqa: B018 - a read tells whether the MoRef exists
            except vmodl.fault.ManagedObjectNotFound:
                return None
            return vm
        if _UUID.match(ref):
            for instance in (True, False):
                found = content.searchIndex.FindByUuid(None, ref, True, instance)
                if found is not None:
                    return found if isinstance(found, vim.VirtualMachine) else None
            return None
        if "/" in ref:
            found = content.searchIndex.FindByInventoryPath(ref.strip("/"))
            return found if isinstance(found, vim.VirtualMachine) else None
        return find_by_name(si, vim.VirtualMachine, ref, what="VMs")


def find_vm(si: vim.ServiceInstance, ref: str) -> vim.VirtualMachine:
    vm = lookup_vm(si, ref)
    if vm is None:
        raise VMNotFoundError(f"no VM {ref} on provider vmware")
    return vm


def find_by_name(si: vim.ServiceInstance, kind: type[T], name: str, *, what: str) -> T | None:
    """The one object of ``kind`` named ``name``; an error when several share it."""
    matches = [obj for obj, p in retrieve(si, kind, ["name"]) if p.get("name") == name]
    if len(matches) > 1:
        raise ProviderError(
            f"provider vmware: {len(matches)} {what} are named {name}; name one by inventory path or id"
        )
    return matches[0] if matches else None


def find_place(si: vim.ServiceInstance, kind: type[T], ref: str, *, option: str) -> T:
    """A datacenter, folder, pool, cluster, host or datastore by inventory path or name (restore options)."""
    content: Any = si.RetrieveContent()
    with vsphere_errors(f"looking up {option} {ref}"):
        found: Any = content.searchIndex.FindByInventoryPath(ref.strip("/")) if "/" in ref else None
        if found is None:
            found = find_by_name(si, kind, ref.rsplit("/", 1)[-1], what=option)
    if not isinstance(found, kind):
        raise ConfigError(f"invalid providerOptions: {option}: no {kind.__name__.rsplit('.', 1)[-1]} {ref}")
    return found


def datacenter_of(entity: vim.ManagedEntity) -> vim.Datacenter:
    obj: Any = entity
    while obj is not None and not isinstance(obj, vim.Datacenter):
        obj = obj.parent
    if obj is None:
        raise ProviderError(f"provider vmware: {entity.name} is in no datacenter")
    return obj


def datacenter_path(dc: vim.Datacenter) -> str:
    """The datacenter's inventory path below the root folder (``Europe/DC1``): the ``dcPath`` of ``/folder`` URLs."""
    parts: list[str] = []
    obj: Any = dc
    while obj is not None and obj.parent is not None:  # the root folder has no parent and is not in the path
        parts.append(str(obj.name))
        obj = obj.parent
    return "/".join(reversed(parts))
