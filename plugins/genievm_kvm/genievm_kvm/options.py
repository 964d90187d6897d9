"""The ``kvm`` provider's options (``providerOptions``, or ``-o KEY=VALUE``), checked once when it connects.

docs/user-guide.md's table of them is rendered from this model, and a test keeps it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = ["KVMOptions"]


class KVMOptions(BaseModel):
    """Every provider option the ``kvm`` provider reads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    uri: str = Field(default="qemu:///system", description="the libvirt connection, e.g. `qemu+ssh://user@host/system`")
    mode: Literal["auto", "backup-api", "internal-snapshot"] = Field(
        default="auto",
        description="how running VMs are read: `auto` (the backup API where libvirt has it), `backup-api`, "
        "or `internal-snapshot`",
    )
    read_only: bool = Field(default=False, description="a read-only connection: list and describe VMs only")
    run_dir: Path | None = Field(
        default=None,
        description="NBD sockets and job ownership files; keep the path short (a socket path has 107 bytes at "
        "most); default `/run/genievm` as root",
    )
    nbd_host: str | None = Field(
        default=None, description="remote URIs: where the backup job serves NBD over TCP; default the URI's host"
    )
    nbd_port: int = Field(default=10809, ge=1, le=65535, description="remote URIs: that NBD server's port")
    nbd_tls: bool = Field(
        default=True,
        description="remote URIs: the backup job's NBD server requires TLS (x509 certificates of libvirt's "
        "`backup_tls_x509_cert_dir` on that host, `tlsDir` here); `false` sends the disks in clear",
    )
    tls_dir: Path = Field(
        default=Path("/etc/pki/genievm"),
        description="remote URIs: `ca-cert.pem`, `client-cert.pem` and `client-key.pem` for NBD over TLS",
    )
    ssh_password_file: Path | None = Field(
        default=None,
        description="`qemu+ssh://`: a file holding the SSH password (or set `GENIEVM_KVM_SSH_PASSWORD`); "
        "default: SSH keys only",
    )
    scratch_dir: Path = Field(
        default=Path("/var/tmp"),
        description="on the VM's host: the backup job's scratch files, which hold what the guest overwrites "
        "while a backup runs",
    )
    # restores of another provider's backups (genievm_core.translate)
    disk_bus: Literal["sata", "virtio", "scsi"] = Field(
        default="sata",
        description="restores of a vmware backup: the disks' bus; `sata` works in every guest (one made on vSphere "
        "has no virtio drivers), `virtio` is fastest where the guest has its drivers, `scsi` is virtio-scsi",
    )
    network_map: dict[str, str] = Field(
        default_factory=dict,
        description="restores of a vmware backup: `SOURCE=TARGET,...`, each card's network by name to a libvirt "
        "network (or `bridge:NAME`); an empty SOURCE is a card that names no network, an empty TARGET drops the cards",
    )
    default_network: str | None = Field(
        default=None, description="restores of a vmware backup: the libvirt network of each card not mapped"
    )
    no_nics: bool = Field(default=False, description="restores of a vmware backup: the new VM gets no network cards")
    keep_macs: bool = Field(
        default=False, description="restores: keep the backed-up MAC addresses (default: libvirt makes new ones)"
    )

    @field_validator("network_map", mode="before")
    @classmethod
    def _network_map(cls, value: Any) -> Any:
        from genievm_core.translate import network_map_pairs  # the translators: 9 ms, for restores that map

        return network_map_pairs(value)
