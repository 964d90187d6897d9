"""Changed-block tracking for LVM thin volumes, from the pool's thin metadata.

Each backup reads a fresh thin snapshot of the LV; the token is the name of the
previous backup's snapshot. ``thin_delta`` compares the two snapshots' mapping
trees: blocks that map to the same data block are unchanged, everything else
(``left_only``: unmapped since, reads as zeros; ``right_only``: newly mapped;
``different``: remapped) changed. Blocks are the pool's chunks of
``data_block_size`` 512-byte sectors.

On a live pool the metadata is read through a reserved metadata snapshot::

    lvcreate -s --addtag genievm -n NEW VG/LV          (create_thin_snapshot)
    lvchange -ay -K VG/NEW
    dmsetup message VG-POOL-tpool 0 reserve_metadata_snap
    thin_delta -m --snap1 OLD_ID --snap2 NEW_ID /dev/mapper/VG-POOL_tmeta
    dmsetup message VG-POOL-tpool 0 release_metadata_snap   (always)
    lvremove -y VG/OLD                                  (remove_thin_snapshot, after the backup)

The parsing and mapping (``parse_thin_delta``, ``changed_byte_extents``,
``run_thin_delta``) work on any metadata file, such as one built by ``thin_restore``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from genievm_core.errors import CBTError, GenieVMError, ProviderError
from genievm_core.models.extents import Extent, clip, normalize
from genievm_core.models.vm import DiskInfo
from genievm_core.plugin.protocols import ChangedExtents

__all__ = [
    "CHANGED_KINDS",
    "DETAIL_LV",
    "DETAIL_SNAPSHOT",
    "DETAIL_VG",
    "GENIEVM_TAG",
    "SECTOR_SIZE",
    "BlockRange",
    "LVMThinCBT",
    "ThinDelta",
    "ThinLV",
    "activate_thin_snapshot",
    "changed_byte_extents",
    "create_thin_snapshot",
    "dm_name",
    "lookup_thin_lv",
    "parse_lvs_report",
    "parse_thin_delta",
    "pool_dm_name",
    "pool_metadata_device",
    "remove_thin_snapshot",
    "reserved_metadata_snap",
    "run_command",
    "run_thin_delta",
    "split_lv_path",
    "thin_changed_extents",
]

SECTOR_SIZE = 512
GENIEVM_TAG = "genievm"  # every snapshot GenieVM creates carries this LVM tag; only such LVs are removed
DETAIL_VG = "lvm_vg"  # DiskInfo.details keys (vg and lv default to the parts of /dev/VG/LV in location)
DETAIL_LV = "lvm_lv"
DETAIL_SNAPSHOT = "thin_snapshot"  # the snapshot this backup reads; becomes the next token
CHANGED_KINDS = frozenset({"left_only", "right_only", "different"})
ALL_KINDS = CHANGED_KINDS | {"same"}
LVS_FIELDS = "lv_name,vg_name,pool_lv,thin_id,lv_attr,origin,lv_tags"
COMMAND_TIMEOUT = 600.0

Runner = Callable[[Sequence[str]], str]


# --- thin_delta output ------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRange:
    """``length`` data blocks of a thin device starting at block ``begin``, of one delta kind."""

    kind: str  # same, left_only, right_only, different
    begin: int
    length: int


@dataclass(frozen=True)
class ThinDelta:
    """What ``thin_delta`` reported for thin devices ``left`` → ``right``."""

    data_block_size: int  # in 512-byte sectors
    left: int
    right: int
    ranges: tuple[BlockRange, ...]

    @property
    def block_bytes(self) -> int:
        return self.data_block_size * SECTOR_SIZE

    @property
    def changed(self) -> tuple[BlockRange, ...]:
        """The ranges whose content differs (everything but ``same``)."""
        return tuple(r for r in self.ranges if r.kind in CHANGED_KINDS)


def _int_attr(elem: ET.Element, name: str, *, minimum: int = 0) -> int:
    """A non-negative (or at least ``minimum``) integer attribute, or ValueError."""
    raw = elem.get(name)
    if raw is None:
        raise ValueError(f"<{elem.tag}> has no {name} attribute")
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError(f"<{elem.tag}> {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"<{elem.tag}> {name}={value} is below {minimum}")
    return value


def _delta_ranges(elem: ET.Element) -> Iterator[BlockRange]:
    """The ranges of one ``<same|left_only|...>`` element, terse (attributes) or --verbose (children)."""
    if elem.tag not in ALL_KINDS:
        raise ValueError(f"unexpected <{elem.tag}> in <diff>")
    children = list(elem)
    if not children:
        yield BlockRange(elem.tag, _int_attr(elem, "begin"), _int_attr(elem, "length", minimum=1))
        return
    for child in children:
        if child.tag != "range":
            raise ValueError(f"unexpected <{child.tag}> in <{elem.tag}>")
        yield BlockRange(elem.tag, _int_attr(child, "begin"), _int_attr(child, "length", minimum=1))


def parse_thin_delta(xml_text: str) -> ThinDelta:
    """Parse ``thin_delta``'s XML (terse or --verbose); ValueError when it is not such output."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ValueError(f"thin_delta output is not XML: {exc}") from None
    if root.tag != "superblock":
        raise ValueError(f"thin_delta output starts with <{root.tag}>, not <superblock>")
    block_size = _int_attr(root, "data_block_size", minimum=1)
    diffs = root.findall("diff")
    if len(diffs) != 1 or len(root) != 1:
        raise ValueError(f"thin_delta output has {len(diffs)} <diff> among {len(root)} elements, not exactly one")
    diff = diffs[0]
    ranges = tuple(r for elem in diff for r in _delta_ranges(elem))
    return ThinDelta(block_size, _int_attr(diff, "left"), _int_attr(diff, "right"), ranges)


def changed_byte_extents(delta: ThinDelta, size: int) -> list[Extent]:
    """The changed ranges as byte extents, normalized and clipped to ``[0, size)``."""
    unit = delta.block_bytes
    return clip(normalize(Extent(r.begin * unit, r.length * unit) for r in delta.changed), size)


# --- running tools ----------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """The path of a tool, also looking in the sbin directories a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _stderr_message(stderr: str) -> str:
    """A tool's error message without the usage text that thin-provisioning-tools append."""
    lines = []
    for line in stderr.splitlines():
        if line.startswith("Usage:"):
            break
        if line.strip():
            lines.append(line.strip())
    return "; ".join(lines) or "no message on stderr"


def _exec(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``argv`` (its first item looked up with ``_tool``); OSError when it cannot start."""
    path = _tool(argv[0])
    if path is None:
        raise FileNotFoundError(f"{argv[0]} is not installed")
    env = dict(os.environ, LC_ALL="C", LVM_SUPPRESS_FD_WARNINGS="1")
    try:
        proc = subprocess.run(
            [path, *argv[1:]], capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{argv[0]} did not finish in {COMMAND_TIMEOUT:.0f} s") from None
    return proc.returncode, proc.stdout, proc.stderr


def run_command(argv: Sequence[str]) -> str:
    """Run one LVM or device-mapper command and return its stdout; ProviderError when it fails."""
    shown = " ".join(argv)
    try:
        code, out, err = _exec(argv)
    except OSError as exc:
        raise ProviderError(f"provider kvm: `{shown}`: {exc}") from exc
    if code != 0:
        raise ProviderError(f"provider kvm: `{shown}` failed (exit {code}): {_stderr_message(err)}")
    return out


def run_thin_delta(
    metadata: str,
    snap1: int,
    snap2: int,
    *,
    metadata_snap: bool,
    disk: str | None = None,
    binary: str = "thin_delta",
) -> str:
    """``thin_delta``'s XML for thin device ids ``snap1`` → ``snap2`` in ``metadata``; CBTError when it fails.

    ``metadata_snap`` reads the pool's reserved metadata snapshot (``-m``): required on a live pool.
    """
    argv = [binary, *(["-m"] if metadata_snap else []), "--snap1", str(snap1), "--snap2", str(snap2), metadata]
    what = disk if disk is not None else f"thin devices {snap1}->{snap2} of {metadata}"
    try:
        code, out, err = _exec(argv)
    except OSError as exc:
        raise CBTError(f"changed-block tracking failed for disk {what}: {exc}") from exc
    if code != 0:
        raise CBTError(
            f"changed-block tracking failed for disk {what}: `{' '.join(argv)}` failed (exit {code}): "
            f"{_stderr_message(err)}"
        )
    return out


def thin_changed_extents(
    metadata: str,
    snap1: int,
    snap2: int,
    size: int,
    *,
    metadata_snap: bool,
    disk: str | None = None,
) -> list[Extent]:
    """Run, parse and map: the byte extents that differ between thin devices ``snap1`` and ``snap2``."""
    what = disk if disk is not None else f"thin devices {snap1}->{snap2} of {metadata}"
    text = run_thin_delta(metadata, snap1, snap2, metadata_snap=metadata_snap, disk=disk)
    try:
        delta = parse_thin_delta(text)
    except ValueError as exc:
        raise CBTError(f"changed-block tracking failed for disk {what}: {exc}") from exc
    if (delta.left, delta.right) != (snap1, snap2):
        raise CBTError(
            f"changed-block tracking failed for disk {what}: thin_delta compared {delta.left}->{delta.right}, "
            f"not {snap1}->{snap2}"
        )
    return changed_byte_extents(delta, size)


# --- LVM names and lookups --------------------------------------------------------------------


@dataclass(frozen=True)
class ThinLV:
    """One LV as ``lvs`` reports it; ``thin_id`` is None unless it is a thin volume."""

    name: str
    vg: str
    pool: str
    thin_id: int | None
    attr: str
    origin: str = ""
    tags: tuple[str, ...] = ()


LookupFn = Callable[[str, str], ThinLV | None]


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name of ``vg/lv`` (LVM doubles the hyphens inside each name)."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def pool_dm_name(vg: str, pool: str) -> str:
    """The dm device that takes a thin pool's messages: ``<vg>-<pool>-tpool``."""
    return f"{dm_name(vg, pool)}-tpool"


def pool_metadata_device(vg: str, pool: str) -> str:
    """The thin pool's metadata device: ``/dev/mapper/<vg>-<pool>_tmeta``."""
    return f"/dev/mapper/{dm_name(vg, pool + '_tmeta')}"


def split_lv_path(path: str) -> tuple[str, str]:
    """``(vg, lv)`` of ``/dev/VG/LV`` or ``/dev/mapper/VG-LV``; ValueError for anything else."""
    parts = path.split("/")
    if len(parts) == 4 and parts[:2] == ["", "dev"] and parts[2] != "mapper" and parts[2] and parts[3]:
        return parts[2], parts[3]
    if len(parts) == 4 and parts[:3] == ["", "dev", "mapper"]:
        match = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", parts[3])
        if match:
            return match[1].replace("--", "-"), match[2].replace("--", "-")
    raise ValueError(f"{path!r} is not an LV path like /dev/VG/LV")


def parse_lvs_report(text: str) -> list[ThinLV]:
    """The LVs of ``lvs --reportformat json -o LVS_FIELDS`` output; ValueError when it is not such output."""
    try:
        rows = [row for report in json.loads(text)["report"] for row in report["lv"]]
        return [
            ThinLV(
                name=row["lv_name"],
                vg=row["vg_name"],
                pool=row.get("pool_lv", ""),
                thin_id=int(row["thin_id"]) if row.get("thin_id", "").strip() else None,
                attr=row.get("lv_attr", ""),
                origin=row.get("origin", ""),
                tags=tuple(t for t in row.get("lv_tags", "").split(",") if t),
            )
            for row in rows
        ]
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"unexpected lvs report: {exc!r}") from None


def lookup_thin_lv(vg: str, lv: str, *, run: Runner = run_command) -> ThinLV | None:
    """``vg/lv`` from ``lvs``, or None when there is no such LV; ProviderError when lvs fails otherwise."""
    argv = ["lvs", "--reportformat", "json", "-o", LVS_FIELDS, vg]
    try:
        found = parse_lvs_report(run(argv))
    except ValueError as exc:
        raise ProviderError(f"provider kvm: `{' '.join(argv)}`: {exc}") from exc
    matches = [x for x in found if x.vg == vg and x.name == lv]
    return matches[0] if matches else None


def create_thin_snapshot(vg: str, lv: str, name: str, *, run: Runner = run_command) -> ThinLV:
    """Create and activate thin snapshot ``vg/name`` of ``vg/lv``, tagged ``genievm``."""
    run(["lvcreate", "-s", "--addtag", GENIEVM_TAG, "-n", name, f"{vg}/{lv}"])
    activate_thin_snapshot(vg, name, run=run)
    snap = lookup_thin_lv(vg, name, run=run)
    if snap is None or snap.thin_id is None:
        raise ProviderError(f"provider kvm: thin snapshot {vg}/{name} is not a thin volume after lvcreate")
    return snap


def activate_thin_snapshot(vg: str, name: str, *, run: Runner = run_command) -> None:
    """Activate a thin snapshot despite its activation-skip flag (``lvchange -ay -K``)."""
    run(["lvchange", "-ay", "-K", f"{vg}/{name}"])


def remove_thin_snapshot(vg: str, name: str, *, run: Runner = run_command) -> bool:
    """Remove GenieVM's thin snapshot ``vg/name``; False when it is already gone.

    Refuses (ProviderError) an LV without the ``genievm`` tag: a token never removes a VM's disk.
    """
    snap = lookup_thin_lv(vg, name, run=run)
    if snap is None:
        return False
    if GENIEVM_TAG not in snap.tags or snap.thin_id is None:
        raise ProviderError(f"provider kvm: refusing to remove {vg}/{name}: not a thin snapshot tagged {GENIEVM_TAG}")
    run(["lvremove", "-y", f"{vg}/{name}"])
    return True


@contextmanager
def reserved_metadata_snap(vg: str, pool: str, *, run: Runner = run_command) -> Iterator[str]:
    """Reserve the pool's metadata snapshot, yield its metadata device, and always release it."""
    pool_dm = pool_dm_name(vg, pool)
    try:
        run(["dmsetup", "message", pool_dm, "0", "reserve_metadata_snap"])
    except ProviderError as exc:
        exc.add_note(
            f"a metadata snapshot may already be reserved (another backup, or a crashed one); "
            f"check `dmsetup status {pool_dm}` and release it with `dmsetup message {pool_dm} 0 release_metadata_snap`"
        )
        raise
    release = ["dmsetup", "message", pool_dm, "0", "release_metadata_snap"]
    try:
        yield pool_metadata_device(vg, pool)
    except BaseException as exc:
        try:
            run(release)
        except ProviderError as release_exc:  # the body's error matters more; keep the release's as a note
            exc.add_note(f"and releasing the metadata snapshot failed: {release_exc}")
        raise
    run(release)


# --- the CBT source ---------------------------------------------------------------------------


class LVMThinCBT:
    """Changed extents of an LVM thin disk between two GenieVM thin snapshots.

    The token is the previous snapshot's name (in the LV's VG); ``disk.details["thin_snapshot"]``
    names the snapshot this backup reads. By default the live pool's metadata is read through a
    reserved metadata snapshot; ``metadata`` (a file or device) and ``metadata_snap`` override that,
    and ``lookup`` replaces ``lvs``.
    """

    name = "lvm-thin"
    priority = 10

    def __init__(
        self,
        *,
        metadata: str | None = None,
        metadata_snap: bool = True,
        lookup: LookupFn | None = None,
        run: Runner = run_command,
    ) -> None:
        self.metadata = metadata
        self.metadata_snap = metadata_snap
        self.run = run
        self.lookup: LookupFn = lookup or self._lvs_lookup

    def _lvs_lookup(self, vg: str, lv: str) -> ThinLV | None:
        return lookup_thin_lv(vg, lv, run=self.run)

    def supports(self, disk: DiskInfo) -> bool:
        return disk.storage_kind == "lvm-thin"

    def changed_extents(self, disk: DiskInfo, token: str | None) -> ChangedExtents:
        if not token:
            return ChangedExtents.unavailable("no previous thin snapshot (first backup of this disk)")
        try:
            return self._changed(disk, token)
        except CBTError:
            raise
        except GenieVMError as exc:
            raise CBTError(f"changed-block tracking failed for disk {disk.name}: {exc}") from exc

    def _vg_lv(self, disk: DiskInfo) -> tuple[str, str]:
        vg, lv = disk.details.get(DETAIL_VG), disk.details.get(DETAIL_LV)
        if vg and lv:
            return vg, lv
        try:
            return split_lv_path(disk.location)
        except ValueError as exc:
            raise CBTError(f"changed-block tracking failed for disk {disk.name}: {exc}") from exc

    def _changed(self, disk: DiskInfo, token: str) -> ChangedExtents:
        vg, lv = self._vg_lv(disk)
        new_name = disk.details.get(DETAIL_SNAPSHOT)
        if not new_name:
            raise CBTError(f"changed-block tracking failed for disk {disk.name}: details carry no {DETAIL_SNAPSHOT}")
        old = self.lookup(vg, token)
        if old is None or old.thin_id is None:
            return ChangedExtents.unavailable(f"previous thin snapshot {vg}/{token} of {vg}/{lv} is gone")
        new = self.lookup(vg, new_name)
        if new is None or new.thin_id is None:
            raise CBTError(f"changed-block tracking failed for disk {disk.name}: no thin snapshot {vg}/{new_name}")
        if old.pool != new.pool:
            return ChangedExtents.unavailable(f"thin snapshots {token} and {new_name} are in different pools")
        extents = self._delta(disk, vg, new.pool, old.thin_id, new.thin_id)
        return ChangedExtents(extents, source=self.name)

    def _delta(self, disk: DiskInfo, vg: str, pool: str, old_id: int, new_id: int) -> list[Extent]:
        """thin_delta on the injected metadata, or on the live pool's reserved metadata snapshot."""
        if self.metadata is not None:
            return thin_changed_extents(
                self.metadata, old_id, new_id, disk.size, metadata_snap=self.metadata_snap, disk=disk.name
            )
        with reserved_metadata_snap(vg, pool, run=self.run) as device:
            return thin_changed_extents(device, old_id, new_id, disk.size, metadata_snap=True, disk=disk.name)
