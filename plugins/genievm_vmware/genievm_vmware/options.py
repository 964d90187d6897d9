"""The ``vmware`` provider's options (``providerOptions``, or ``-o KEY=VALUE``), checked once when it connects.

What can only be known at run time stays where it is used: the host, user and
password may also come from the environment (connection.py), VDDK's library
and modes are checked when it loads (transport/), places when a restore looks
them up (placement.py). docs/user-guide.md's table of the options is rendered
from this model, and a test keeps it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

__all__ = ["DEFAULT_INTERVAL", "TRANSPORTS", "VMwareOptions"]

DEFAULT_INTERVAL = 300.0  # seconds between keep-alive calls of a vSphere session (keepalive.py)

TRANSPORTS = ("auto", "https", "vddk")


class VMwareOptions(BaseModel):
    """Every provider option the ``vmware`` provider reads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    # where and who
    host: str | None = Field(
        default=None,
        description="vCenter or ESXi: a name, an address or `https://host:port/sdk`; or `GENIEVM_VMWARE_HOST`",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="the API's port; default the host URL's, else 443"
    )
    user: str | None = Field(default=None, description="the vSphere user; or `GENIEVM_VMWARE_USER`")
    password: SecretStr | None = Field(
        default=None, description="the password (a job config file: keep it private); or `GENIEVM_VMWARE_PASSWORD`"
    )
    password_file: Path | None = Field(default=None, description="a file holding the password")
    ca_file: Path | None = Field(default=None, description="PEM file of the CAs to verify the host with, alone")
    insecure: bool = Field(default=False, description="skip verifying the host's certificate (logs a warning)")
    # how data moves
    transport: str = Field(default="auto", description="`auto`, `https` or `vddk` (see Transports)")
    vddk_lib_dir: Path | None = Field(default=None, description="the VDDK folder; or `VDDK_LIBDIR`")
    vddk_mode: str = Field(default="nbdssl", description="VDDK transport modes, e.g. `nbdssl`, `hotadd:nbdssl`")
    thumbprint: str | None = Field(
        default=None, description="the host's SHA-1 certificate thumbprint for VDDK; default from the verified TLS"
    )
    scratch_dir: Path | None = Field(
        default=None, description="https restores: where each disk is assembled before its upload"
    )
    keep_alive_seconds: float = Field(
        default=DEFAULT_INTERVAL,
        gt=0,
        description="an API call this often while data moves, so that vCenter's idle timeout never ends the session",
    )
    # where restores go
    datacenter: str | None = Field(default=None, description="restores: the datacenter; default the only one")
    folder: str | None = Field(default=None, description="restores: the VM folder; default the datacenter's")
    resource_pool: str | None = Field(
        default=None, description="restores: the resource pool; default the root pool of the first cluster or host"
    )
    cluster: str | None = Field(default=None, description="restores: a cluster, whose root pool is used")
    esx_host: str | None = Field(default=None, description="restores: a host, whose root pool is used")
    datastore: str | None = Field(default=None, description="restores: the datastore; default the disks' own")
    network_map: dict[str, str] = Field(
        default_factory=dict,
        description="restores: `SOURCE=TARGET,...`, each card's network by name; an empty SOURCE is a card that "
        "names no network, an empty TARGET drops the cards",
    )
    default_network: str | None = Field(
        default=None, description="restores: the network of each card whose own is not mapped and not there"
    )
    no_nics: bool = Field(default=False, description="restores: the new VM gets no network cards")
    scsi_controller: Literal["pvscsi", "lsilogic-sas", "lsilogic"] | None = Field(
        default=None,
        description="restores of a kvm backup: the disks' SCSI controller; default `pvscsi` for Linux guests (its "
        "driver is in the kernel), `lsilogic-sas` for others (Windows has its driver, not pvscsi's)",
    )

    @field_validator("transport", mode="before")
    @classmethod
    def _transport(cls, value: Any) -> str:
        transport = str(value).strip().lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        return transport

    @field_validator("network_map", mode="before")
    @classmethod
    def _network_map(cls, value: Any) -> Any:
        from genievm_core.translate import network_map_pairs  # the translators: 9 ms, for restores that map

        return network_map_pairs(value)
