"""Names of what a backup chain keeps on a VM, and of the KVM CBT sources.

Checkpoint, bitmap and thin-snapshot names are ``genievm-<repository id>-<time>``: they belong
to GenieVM and to one repository, so two backup chains of one VM never touch each other's.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["BITMAP_SOURCE", "CHECKPOINT_SOURCE", "RUNNING", "chain_prefix", "new_checkpoint_name"]

RUNNING = ("running", "paused")
CHECKPOINT_SOURCE = "libvirt-checkpoint"  # the CBT source names the manifests record
BITMAP_SOURCE = "qcow2-bitmap"


def chain_prefix(chain_id: str) -> str:
    return f"genievm-{chain_id[:16]}-"


def new_checkpoint_name(chain_id: str) -> str:
    return chain_prefix(chain_id) + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
