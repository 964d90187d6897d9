"""The ``kvm`` provider's options (``providerOptions``, or ``-o KEY=VALUE``), checked once when it connects.

docs/user-guide.md's table of them is rendered from this model, and a test keeps it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
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
    scratch_dir: Path = Field(
        default=Path("/var/tmp"),
        description="on the VM's host: the backup job's scratch files, which hold what the guest overwrites "
        "while a backup runs",
    )
