"""What network each card of a VM is on, for every backing kind vSphere has.

A card's backing is *standard* (``NetworkBackingInfo``: a port group of a
host's standard switch, by name), *distributed* (``DistributedVirtualPortBackingInfo``:
a distributed port group, by key), *opaque* (``OpaqueNetworkBackingInfo``: an
NSX segment, by its opaque network id) or something else that names no network
(a network since deleted, a backing GenieVM does not know). A backup records,
in the VM's summary, each card's kind (``nic.<key>.backing``) and the name of
its network as the datacenter calls it (``nic.<key>.network``; empty when it
names none), so a restore can find the network again by name, wherever the
key or id differs.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

__all__ = ["backing_networks", "nic_summary"]


def backing_networks(backing: Any) -> tuple[str, list[str]]:
    """The backing's kind and the names it gives its network by (none for a card that names none)."""
    card = vim.vm.device.VirtualEthernetCard
    if isinstance(backing, card.DistributedVirtualPortBackingInfo):
        key = getattr(backing.port, "portgroupKey", None)
        return "distributed", [str(key)] if key else []
    if isinstance(backing, card.OpaqueNetworkBackingInfo):
        return "opaque", [str(backing.opaqueNetworkId)] if backing.opaqueNetworkId else []
    if isinstance(backing, card.NetworkBackingInfo):
        return "standard", [str(backing.deviceName)] if backing.deviceName else []
    unknown = backing is not None and type(backing) is not vim.vm.device.VirtualDevice.BackingInfo
    return (type(backing).__name__.rsplit(".", 1)[-1] if unknown else "no network"), []


def nic_summary(devices: list[Any], datacenter: Any) -> dict[str, str]:
    """``nic.<key>.backing`` and ``nic.<key>.network`` of each card (names resolved in ``datacenter``)."""
    cards = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    if not cards:
        return {}
    names: dict[str, str] = {}  # a port group's key, an opaque network's id → its name
    for network in datacenter.network or []:
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            names[str(network.key)] = str(network.name)
        elif isinstance(network, vim.OpaqueNetwork):
            summary: Any = network.summary
            names[str(summary.opaqueNetworkId)] = str(network.name)
    out = {}
    for card in cards:
        kind, given = backing_networks(card.backing)
        network = getattr(card.backing, "network", None) if kind == "standard" else None
        name = names.get(given[0], given[0]) if given else (str(network.name) if network is not None else "")
        out[f"nic.{card.key}.backing"] = kind
        out[f"nic.{card.key}.network"] = name
    return out
