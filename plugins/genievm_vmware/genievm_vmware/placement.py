"""Where a restored VM goes: datacenter, folder, resource pool, datastore and networks, from the options.

Every place is named by inventory path or by name. Without an option the
defaults are: the only datacenter, its VM folder, the first cluster's (or
host's) root resource pool, the datastore the disk was on when it exists
there, and for each network the network of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyVmomi import vim

from genievm_core.errors import ConfigError
from genievm_vmware.connection import vsphere_errors
from genievm_vmware.inventory import find_place, retrieve
from genievm_vmware.options import VMwareOptions

__all__ = ["Placement", "placement"]


@dataclass(frozen=True)
class Placement:
    datacenter: vim.Datacenter
    folder: vim.Folder
    pool: vim.ResourcePool
    datastore: vim.Datastore
    networks: dict[str, vim.Network]  # every network of the datacenter by name


def placement(si: vim.ServiceInstance, options: VMwareOptions, source_datastore: str | None) -> Placement:
    with vsphere_errors("finding where to restore"):
        if options.datacenter:
            dc = find_place(si, vim.Datacenter, options.datacenter, option="datacenter")
        else:
            dcs = [obj for obj, _ in retrieve(si, vim.Datacenter, ["name"])]
            if len(dcs) != 1:
                raise ConfigError(f"invalid providerOptions: datacenter: there are {len(dcs)}; give -o datacenter=NAME")
            dc = dcs[0]
        folder = find_place(si, vim.Folder, options.folder, option="folder") if options.folder else dc.vmFolder
        pool = _pool(si, dc, options)
        datastores = {p["name"]: d for d, p in retrieve(si, vim.Datastore, ["name"], dc.datastoreFolder)}
        wanted = options.datastore or source_datastore or ""
        if wanted not in datastores:
            raise ConfigError(
                f"invalid providerOptions: datastore: {wanted or '(none given)'} is not one of datacenter "
                f"{dc.name}'s datastores ({', '.join(sorted(datastores))})"
            )
        networks = {p["name"]: n for n, p in retrieve(si, vim.Network, ["name"], dc.networkFolder)}
        return Placement(dc, folder, pool, datastores[wanted], networks)


def _pool(si: vim.ServiceInstance, dc: vim.Datacenter, options: VMwareOptions) -> vim.ResourcePool:
    if options.resource_pool:
        return find_place(si, vim.ResourcePool, options.resource_pool, option="resourcePool")
    compute: Any = None
    if options.cluster:
        compute = find_place(si, vim.ClusterComputeResource, options.cluster, option="cluster")
    elif options.esx_host:
        compute = find_place(si, vim.HostSystem, options.esx_host, option="esxHost").parent
    else:
        folder: Any = dc.hostFolder
        compute = next((c for c in folder.childEntity if isinstance(c, vim.ComputeResource)), None)
    if isinstance(compute, vim.ComputeResource) and compute.resourcePool is not None:
        return compute.resourcePool
    raise ConfigError(f"invalid providerOptions: resourcePool: datacenter {dc.name} has no host or cluster")
