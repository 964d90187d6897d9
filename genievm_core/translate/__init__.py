"""VM configuration from one provider's form to another's (vSphere <-> libvirt): pure functions of data.

A provider that restores a backup another provider made reads the stored configuration with
``read_config`` (the format decides how) into a ``PortableVM``, then builds its own configuration
from it: ``libvirt_domain`` (kvm) or ``vsphere_spec`` (vmware). What does not carry over is in the
result's ``warnings``; what cannot work raises ``TranslationError`` (exit 35). Nothing here touches a
hypervisor; the rest of the core never imports this package (providers do).
"""

from __future__ import annotations

from collections.abc import Mapping

from genievm_core.errors import TranslationError
from genievm_core.translate.from_libvirt import CONFIG_FORMAT as LIBVIRT_FORMAT
from genievm_core.translate.from_libvirt import read_libvirt
from genievm_core.translate.from_vsphere import CONFIG_FORMAT as VSPHERE_FORMAT
from genievm_core.translate.from_vsphere import read_vsphere
from genievm_core.translate.portable import PortableDisk, PortableNic, PortableVM
from genievm_core.translate.to_libvirt import DISK_BUSES, LibvirtDomain, LibvirtTarget, libvirt_domain
from genievm_core.translate.to_vsphere import (
    SCSI_CONTROLLERS,
    VSphereDisk,
    VSphereNic,
    VSphereSpec,
    VSphereTarget,
    vsphere_spec,
)

__all__ = [
    "DISK_BUSES",
    "LIBVIRT_FORMAT",
    "SCSI_CONTROLLERS",
    "VSPHERE_FORMAT",
    "LibvirtDomain",
    "LibvirtTarget",
    "PortableDisk",
    "PortableNic",
    "PortableVM",
    "VSphereDisk",
    "VSphereNic",
    "VSphereSpec",
    "VSphereTarget",
    "libvirt_domain",
    "network_map_pairs",
    "read_config",
    "vsphere_spec",
]


def read_config(config_format: str, config: bytes, summary: Mapping[str, object] | None = None) -> PortableVM:
    """The stored configuration of a backup (its ``vm.config_format`` and decoded ``vm.config``)."""
    if config_format == VSPHERE_FORMAT:
        return read_vsphere(config, summary)
    if config_format == LIBVIRT_FORMAT:
        return read_libvirt(config)
    raise TranslationError(
        f"cannot translate a VM configuration of format {config_format or 'none'!r} "
        f"(known: {LIBVIRT_FORMAT}, {VSPHERE_FORMAT})"
    )


def network_map_pairs(value: object) -> object:
    """A ``networkMap`` option's value: ``SRC=DST,SRC2=DST2`` (from ``-o``), or a mapping (a config file) as it is.
    ``=DST``: the cards that name no network; ``SRC=``: drop the cards on ``SRC``. Raises ValueError."""
    if isinstance(value, Mapping) or value is None:
        return value or {}
    pairs = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        src, sep, dst = item.partition("=")
        if not sep:
            raise ValueError(f"{item.strip()!r} is not SOURCE=TARGET")
        pairs[src.strip()] = dst.strip()
    return pairs
