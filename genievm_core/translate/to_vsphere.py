"""A ``PortableVM`` as the plain data of a new vSphere VM: what ``restore --provider vmware`` creates for
another provider's backup (the vmware provider turns it into a ``ConfigSpec``).

- Guest OS ``otherLinux64Guest``, ``windows9_64Guest`` or ``otherGuest64`` (from libosinfo's metadata),
  CPUs and cores per socket, memory (rounded up to the 4 MiB vSphere requires), BIOS or EFI (with
  Secure Boot where the source had it).
- Every disk on one SCSI controller, units 0-6 and 8-15 (7 is the controller's), the boot disk first:
  ``pvscsi`` for Linux (its driver is in the kernel), ``lsilogic-sas`` otherwise (Windows has that
  driver in the box, not pvscsi's); ``scsi_controller`` chooses.
- Network cards on the port group the map names, else ``default_network``, else the network of the
  source's name (the provider checks it is there); ``vmxnet3`` for Linux, ``e1000e`` otherwise; new MAC
  addresses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from genievm_core.errors import ConfigError, TranslationError
from genievm_core.translate.portable import Firmware, PortableVM

__all__ = ["SCSI_CONTROLLERS", "VSphereDisk", "VSphereNic", "VSphereSpec", "VSphereTarget", "vsphere_spec"]

SCSI_CONTROLLERS = ("pvscsi", "lsilogic-sas", "lsilogic")
_UNITS = [u for u in range(16) if u != 7]
_GUEST_IDS = {"linux": "otherLinux64Guest", "windows": "windows9_64Guest", "other": "otherGuest64"}
_NIC_MODELS = {"e1000": "e1000", "e1000e": "e1000e", "vmxnet3": "vmxnet3"}


@dataclass(frozen=True)
class VSphereTarget:
    scsi_controller: str | None = None  # None: by the guest's OS
    network_map: Mapping[str, str] = field(default_factory=dict)
    default_network: str | None = None
    no_nics: bool = False


@dataclass(frozen=True)
class VSphereDisk:
    name: str  # the backup's disk name
    unit: int  # on SCSI controller 0


@dataclass(frozen=True)
class VSphereNic:
    label: str
    source_network: str
    network: str  # the port group (or network) to put it on
    model: str  # vmxnet3, e1000e, e1000


@dataclass(frozen=True)
class VSphereSpec:
    guest_id: str
    cpus: int
    cores_per_socket: int
    memory_mib: int
    firmware: Firmware
    secure_boot: bool
    scsi_controller: str
    disks: tuple[VSphereDisk, ...]
    nics: tuple[VSphereNic, ...]
    warnings: tuple[str, ...]


def vsphere_spec(vm: PortableVM, disks: Sequence[str], target: VSphereTarget) -> VSphereSpec:
    """The new VM for ``vm`` with the backup's disks ``disks`` (those restored)."""
    controller = target.scsi_controller or ("pvscsi" if vm.os_family == "linux" else "lsilogic-sas")
    if controller not in SCSI_CONTROLLERS:
        raise ConfigError(
            f"invalid providerOptions: scsiController: {controller!r} is not one of {', '.join(SCSI_CONTROLLERS)}"
        )
    if vm.cpus < 1 or vm.memory_mib < 1:
        raise TranslationError(f"cannot restore {vm.name}: its configuration gives {vm.cpus} CPUs, {vm.memory_mib} MiB")
    unknown = sorted(set(disks) - {d.name for d in vm.disks})
    if unknown:
        raise TranslationError(f"cannot restore {vm.name}: its stored configuration has no disk {unknown[0]}")
    ordered = [d for d in vm.disks if d.name in set(disks)]
    if len(ordered) > len(_UNITS):
        raise TranslationError(f"cannot restore {vm.name}: {len(ordered)} disks, one SCSI controller takes 15")
    warnings = list(vm.left_out)
    memory = -(-vm.memory_mib // 4) * 4
    if memory != vm.memory_mib:
        warnings.append(f"memory: {vm.memory_mib} MiB rounded up to {memory} MiB (vSphere takes multiples of 4)")
    nics: list[VSphereNic] = []
    model_default = "vmxnet3" if vm.os_family == "linux" else "e1000e"
    for nic in () if target.no_nics else vm.nics:
        mapped = target.network_map.get(nic.network)
        if mapped == "":
            warnings.append(f"network card {nic.label} on {nic.network!r}: dropped (networkMap)")
            continue
        network = mapped or target.default_network or nic.network
        if not network:
            raise ConfigError(
                f"invalid providerOptions: networkMap: card {nic.label} of {vm.name} names no network; map it with "
                "-o 'networkMap==TARGET', give -o defaultNetwork=TARGET, or drop the cards with -o noNics=true"
            )
        nics.append(VSphereNic(nic.label, nic.network, network, _NIC_MODELS.get(nic.model, model_default)))
    cores = vm.cpus // vm.sockets
    return VSphereSpec(
        guest_id=_GUEST_IDS[vm.os_family],
        cpus=vm.cpus,
        cores_per_socket=cores,
        memory_mib=memory,
        firmware=vm.firmware,
        secure_boot=vm.secure_boot,
        scsi_controller=controller,
        disks=tuple(VSphereDisk(d.name, unit) for d, unit in zip(ordered, _UNITS, strict=False)),
        nics=tuple(nics),
        warnings=tuple(warnings),
    )
