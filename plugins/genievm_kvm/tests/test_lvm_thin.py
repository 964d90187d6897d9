"""LVM thin CBT: thin_delta's output on real thin metadata, mapped to byte extents.

The metadata is real: each test writes the XML of a pool (an origin and two
snapshots of it) and builds the binary metadata with ``thin_restore``; the real
``thin_delta`` then compares the snapshots. Expected extents are computed here
from the mappings written, not from thin_delta's output.

The live cycle (lvcreate, reserve_metadata_snap, thin_delta -m, lvremove) needs
device-mapper; its test runs only on an LVM host with a scratch thin pool.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from genievm_kvm.lvm_thin import (
    LVMThinCBT,
    ThinLV,
    create_thin_snapshot,
    dm_name,
    lookup_thin_lv,
    parse_lvs_report,
    parse_thin_delta,
    pool_dm_name,
    pool_metadata_device,
    remove_thin_snapshot,
    reserved_metadata_snap,
    run_command,
    run_thin_delta,
    split_lv_path,
    thin_changed_extents,
)

from genievm_core.errors import CBTError, ProviderError
from genievm_core.models.extents import Extent
from genievm_core.models.vm import DiskInfo
from genievm_core.testing import CBTCase, CBTSourceContract


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


THIN_DELTA, THIN_RESTORE = _tool("thin_delta"), _tool("thin_restore")
if THIN_DELTA is None or THIN_RESTORE is None:
    pytest.skip("thin-provisioning-tools (thin_delta, thin_restore) is not installed", allow_module_level=True)

NO_DM_REASON = "needs device-mapper (this kernel has none): the reserve_metadata_snap path runs only on an LVM host"
SECTOR = 512
BLOCK_SECTORS = 128  # 64 KiB pool chunks (thin_restore's own default is different: the multiplier must be read)
BS = BLOCK_SECTORS * SECTOR
ORIGIN, OLD, NEW = 1, 2, 3  # thin device ids


# --- building real metadata ------------------------------------------------------------------


def mapping_xml(mapping: Mapping[int, int]) -> list[str]:
    """``range_mapping`` for runs where virtual and data blocks both advance by one, else ``single_mapping``."""
    lines: list[str] = []
    blocks = sorted(mapping)
    i = 0
    while i < len(blocks):
        j = i
        while (
            j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1 and mapping[blocks[j + 1]] == mapping[blocks[j]] + 1
        ):
            j += 1
        v, d = blocks[i], mapping[blocks[i]]
        if j == i:
            lines.append(f'    <single_mapping origin_block="{v}" data_block="{d}" time="0"/>')
        else:
            lines.append(f'    <range_mapping origin_begin="{v}" data_begin="{d}" length="{j - i + 1}" time="0"/>')
        i = j + 1
    return lines


def pool_xml(devices: Mapping[int, Mapping[int, int]], block_sectors: int) -> str:
    """thin_dump-format XML of a pool holding ``devices`` (dev id → virtual block → data block)."""
    nr_data = max((d for m in devices.values() for d in m.values()), default=0) + 1
    out = [
        f'<superblock uuid="" time="1" transaction="2" flags="0" version="2" '
        f'data_block_size="{block_sectors}" nr_data_blocks="{nr_data}">'
    ]
    for dev_id, mapping in sorted(devices.items()):
        out.append(
            f'  <device dev_id="{dev_id}" mapped_blocks="{len(mapping)}" transaction="0" '
            f'creation_time="0" snap_time="0">'
        )
        out += mapping_xml(mapping)
        out.append("  </device>")
    out.append("</superblock>")
    return "\n".join(out) + "\n"


def restore(tmp_path: Path, devices: Mapping[int, Mapping[int, int]], block_sectors: int = BLOCK_SECTORS) -> str:
    """Real binary thin metadata for ``devices``, built by thin_restore."""
    xml_file, meta = tmp_path / "pool.xml", tmp_path / "meta.bin"
    xml_file.write_text(pool_xml(devices, block_sectors))
    with meta.open("wb") as f:
        f.truncate(8 << 20)  # thin_restore writes into an existing file or device
    assert THIN_RESTORE is not None
    subprocess.run([THIN_RESTORE, "-q", "-i", str(xml_file), "-o", str(meta)], check=True, capture_output=True)
    return str(meta)


def expected_extents(old: Mapping[int, int], new: Mapping[int, int], block_bytes: int, size: int) -> list[Extent]:
    """Blocks whose mapping differs (remapped, unmapped or newly mapped), as byte runs cut at ``size``."""
    changed = sorted(b for b in set(old) | set(new) if old.get(b) != new.get(b))
    runs: list[list[int]] = []
    for b in changed:
        if runs and runs[-1][1] == b:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    out = []
    for first, end in runs:
        start, stop = first * block_bytes, min(end * block_bytes, size)
        if start < stop:
            out.append(Extent(start, stop - start))
    return out


def run_blocks(first: int, count: int, data_first: int) -> dict[int, int]:
    return {first + i: data_first + i for i in range(count)}


# Old snapshot → new snapshot, block by block:
#   0-3 same | 4 different | 5-7 same | 8-9 left_only (discarded) | 10-11 unmapped in both
#   12-14 right_only | 16-17 different | 18-22 right_only, crossing the LV's end (inside 19.625 blocks)
#   25 left_only past the end | 30-31 same past the end
OLD_MAP = {**run_blocks(0, 10, 0), **run_blocks(16, 2, 16), 25: 25, **run_blocks(30, 2, 30)}
NEW_MAP = {
    **run_blocks(0, 4, 0),
    4: 50,
    **run_blocks(5, 3, 5),
    **run_blocks(12, 3, 60),
    **run_blocks(16, 2, 70),
    **run_blocks(18, 5, 80),
    **run_blocks(30, 2, 30),
}
ORIGIN_MAP = {**NEW_MAP, 4: 90, 40: 91}  # written since the new snapshot; never compared
LV_SIZE = 19 * BS + 40 * 1024


@pytest.fixture
def meta(tmp_path: Path) -> str:
    return restore(tmp_path, {ORIGIN: ORIGIN_MAP, OLD: OLD_MAP, NEW: NEW_MAP})


# --- thin_delta on real metadata -------------------------------------------------------------


def test_thin_delta_output_has_every_kind_and_the_block_size(meta: str) -> None:
    delta = parse_thin_delta(run_thin_delta(meta, OLD, NEW, metadata_snap=False))
    assert (delta.data_block_size, delta.block_bytes, delta.left, delta.right) == (BLOCK_SECTORS, BS, OLD, NEW)
    assert {r.kind for r in delta.ranges} == {"same", "left_only", "right_only", "different"}
    assert {r.kind for r in delta.changed} == {"left_only", "right_only", "different"}


def test_changed_extents_are_the_remapped_unmapped_and_new_blocks_cut_at_the_lv_end(meta: str) -> None:
    got = thin_changed_extents(meta, OLD, NEW, LV_SIZE, metadata_snap=False)
    want = expected_extents(OLD_MAP, NEW_MAP, BS, LV_SIZE)
    assert got == want
    # spelled out, so a mistake in expected_extents cannot hide one in the code
    assert want == [
        Extent(4 * BS, BS),
        Extent(8 * BS, 2 * BS),
        Extent(12 * BS, 3 * BS),
        Extent(16 * BS, 3 * BS + 40960),
    ]


def test_the_lv_size_only_cuts(meta: str) -> None:
    big = 64 * BS
    assert thin_changed_extents(meta, OLD, NEW, big, metadata_snap=False) == expected_extents(OLD_MAP, NEW_MAP, BS, big)
    assert thin_changed_extents(meta, OLD, NEW, 4 * BS, metadata_snap=False) == []


def test_verbose_output_parses_to_the_same_changes(meta: str) -> None:
    assert THIN_DELTA is not None
    argv = [THIN_DELTA, "--verbose", "--snap1", str(OLD), "--snap2", str(NEW), meta]
    verbose = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    assert "<range " in verbose
    terse = parse_thin_delta(run_thin_delta(meta, OLD, NEW, metadata_snap=False))
    assert parse_thin_delta(verbose).changed == terse.changed


def test_the_direction_does_not_change_what_changed(meta: str) -> None:
    forward = thin_changed_extents(meta, OLD, NEW, LV_SIZE, metadata_snap=False)
    assert thin_changed_extents(meta, NEW, OLD, LV_SIZE, metadata_snap=False) == forward


def test_a_snapshot_against_itself_has_no_changes(meta: str) -> None:
    assert thin_changed_extents(meta, NEW, NEW, LV_SIZE, metadata_snap=False) == []


@pytest.mark.parametrize("block_sectors", [128, 1024, 2048])
@pytest.mark.parametrize("seed", range(4))
def test_random_pools(tmp_path: Path, seed: int, block_sectors: int) -> None:
    rng = random.Random(seed)
    nblocks, next_data = 300, 0
    old: dict[int, int] = {}
    for b in range(nblocks):
        if rng.random() < 0.6:
            old[b], next_data = next_data, next_data + 1
    new: dict[int, int] = {}
    for b in range(nblocks):
        roll = rng.random()
        if b in old and roll < 0.7:
            new[b] = old[b]  # shared
        elif (b in old and roll < 0.85) or (b not in old and roll < 0.3):
            new[b], next_data = next_data, next_data + 1  # rewritten or newly written
    meta = restore(tmp_path, {ORIGIN: new, OLD: old, NEW: new}, block_sectors)
    size = rng.randrange((nblocks - 20) * block_sectors * SECTOR, (nblocks + 5) * block_sectors * SECTOR)
    got = thin_changed_extents(meta, OLD, NEW, size, metadata_snap=False)
    assert got == expected_extents(old, new, block_sectors * SECTOR, size)


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Unable to find mapping tree",
        "<superblock data_block_size='128'><diff left='1' right='2'>",  # truncated
        "<diff left='1' right='2'/>",  # no superblock
        "<superblock data_block_size='128'/>",  # no diff
        "<superblock><diff left='1' right='2'/></superblock>",  # no block size
        "<superblock data_block_size='0'><diff left='1' right='2'/></superblock>",
        "<superblock data_block_size='x'><diff left='1' right='2'/></superblock>",
        "<superblock data_block_size='128'><diff left='1' right='2'><left_only begin='-1' length='2'/></diff>"
        "</superblock>",
        "<superblock data_block_size='128'><diff left='1' right='2'><different begin='4'/></diff></superblock>",
        "<superblock data_block_size='128'><diff left='1' right='2'><changed begin='4' length='1'/></diff>"
        "</superblock>",
        "<superblock data_block_size='128'><diff left='1' right='2'><same><block begin='0' length='1'/></same>"
        "</diff></superblock>",
        "<superblock data_block_size='128'><diff right='2'/></superblock>",
    ],
)
def test_malformed_output_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_thin_delta(text)


def test_an_unknown_device_id_fails_with_thin_deltas_message(meta: str) -> None:
    with pytest.raises(CBTError) as info:
        thin_changed_extents(meta, OLD, 9, LV_SIZE, metadata_snap=False, disk="vda")
    message = str(info.value)
    assert message.startswith("changed-block tracking failed for disk vda: ")
    assert "Unable to find mapping tree for snap2 (9)" in message
    assert "Usage:" not in message


def test_metadata_snap_reads_the_reserved_snapshot(meta: str) -> None:
    # thin_restore reserves no metadata snapshot, so -m must fail: the flag reaches thin_delta
    with pytest.raises(CBTError, match="no current metadata snap"):
        run_thin_delta(meta, OLD, NEW, metadata_snap=True)


def test_not_metadata_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(1 << 20))
    with pytest.raises(CBTError, match="checksum"):
        run_thin_delta(str(junk), OLD, NEW, metadata_snap=False)
    with pytest.raises(CBTError, match="stat"):
        run_thin_delta(str(tmp_path / "absent.bin"), OLD, NEW, metadata_snap=False)


def test_a_missing_thin_delta_is_named(meta: str) -> None:
    with pytest.raises(CBTError, match="thin_delta-absent is not installed"):
        run_thin_delta(meta, OLD, NEW, metadata_snap=False, binary="thin_delta-absent")


# --- the CBT source --------------------------------------------------------------------------


def thin_disk(**details: str) -> DiskInfo:
    return DiskInfo("vda", LV_SIZE, "lvm-thin", location="/dev/vg0/vm1-disk", details=details)


class Lookup:
    """Stands in for ``lvs``: the snapshots of vg0/vm1-disk by name, and the (vg, lv) asked."""

    def __init__(self, *snapshots: ThinLV) -> None:
        self.lvs = {(s.vg, s.name): s for s in snapshots}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, vg: str, lv: str) -> ThinLV | None:
        self.asked.append((vg, lv))
        return self.lvs.get((vg, lv))


def snap(name: str, thin_id: int, pool: str = "pool0") -> ThinLV:
    return ThinLV(name, "vg0", pool, thin_id, "Vri---tz-k", origin="vm1-disk", tags=("genievm",))


def test_supports_only_lvm_thin_disks() -> None:
    cbt = LVMThinCBT()
    assert (cbt.name, cbt.priority) == ("lvm-thin", 10)
    assert cbt.supports(thin_disk())
    assert not cbt.supports(DiskInfo("vdb", 1 << 20, "qcow2-file", format="qcow2", location="/var/lib/x.qcow2"))
    assert not cbt.supports(DiskInfo("vdc", 1 << 20, "block", location="/dev/sdb"))


@pytest.mark.parametrize("token", [None, ""])
def test_no_token_is_unavailable(token: str | None) -> None:
    lookup = Lookup()
    got = LVMThinCBT(lookup=lookup).changed_extents(thin_disk(thin_snapshot="s2"), token)
    assert got.extents is None and got.reason is not None and "no previous thin snapshot" in got.reason
    assert lookup.asked == []


def test_a_vanished_old_snapshot_is_unavailable(meta: str) -> None:
    lookup = Lookup(snap("s2", NEW))
    cbt = LVMThinCBT(metadata=meta, metadata_snap=False, lookup=lookup)
    got = cbt.changed_extents(thin_disk(thin_snapshot="s2"), "s1")
    assert got.extents is None and got.reason == "previous thin snapshot vg0/s1 of vg0/vm1-disk is gone"


def test_snapshots_in_different_pools_are_unavailable(meta: str) -> None:
    lookup = Lookup(snap("s1", OLD, pool="pool1"), snap("s2", NEW))
    got = LVMThinCBT(metadata=meta, metadata_snap=False, lookup=lookup).changed_extents(
        thin_disk(thin_snapshot="s2"), "s1"
    )
    assert got.extents is None and got.reason is not None and "different pools" in got.reason


def test_changed_extents_between_the_two_snapshots(meta: str) -> None:
    lookup = Lookup(snap("s1", OLD), snap("s2", NEW))
    cbt = LVMThinCBT(metadata=meta, metadata_snap=False, lookup=lookup)
    got = cbt.changed_extents(thin_disk(thin_snapshot="s2"), "s1")
    assert got.source == "lvm-thin" and got.reason is None
    assert got.extents == expected_extents(OLD_MAP, NEW_MAP, BS, LV_SIZE)
    assert lookup.asked == [("vg0", "s1"), ("vg0", "s2")]  # vg from /dev/vg0/vm1-disk


def test_details_name_the_vg_and_lv(meta: str) -> None:
    lookup = Lookup(ThinLV("s1", "vg-x", "p", OLD, ""), ThinLV("s2", "vg-x", "p", NEW, ""))
    disk = DiskInfo(
        "vda",
        LV_SIZE,
        "lvm-thin",
        location="/dev/dm-7",
        details={"lvm_vg": "vg-x", "lvm_lv": "lv", "thin_snapshot": "s2"},
    )
    got = LVMThinCBT(metadata=meta, metadata_snap=False, lookup=lookup).changed_extents(disk, "s1")
    assert got.extents == expected_extents(OLD_MAP, NEW_MAP, BS, LV_SIZE)


def test_cbt_errors_name_the_disk(meta: str) -> None:
    lookup = Lookup(snap("s1", OLD), snap("s2", 9))  # thin id 9 is not in the metadata
    cbt = LVMThinCBT(metadata=meta, metadata_snap=False, lookup=lookup)
    with pytest.raises(CBTError, match=r"^changed-block tracking failed for disk vda: .*snap2 \(9\)"):
        cbt.changed_extents(thin_disk(thin_snapshot="s2"), "s1")
    with pytest.raises(CBTError, match="details carry no thin_snapshot"):
        cbt.changed_extents(thin_disk(), "s1")
    with pytest.raises(CBTError, match="no thin snapshot vg0/s3"):
        cbt.changed_extents(thin_disk(thin_snapshot="s3"), "s1")


def test_lookup_failures_become_cbt_errors() -> None:
    def failing(vg: str, lv: str) -> ThinLV | None:
        raise ProviderError('provider kvm: `lvs ...` failed (exit 5): Volume group "vg0" not found')

    with pytest.raises(CBTError, match='disk vda: provider kvm: .*"vg0" not found'):
        LVMThinCBT(lookup=failing).changed_extents(thin_disk(thin_snapshot="s2"), "s1")


# --- LVM names and reports (pure functions) --------------------------------------------------


def test_dm_names_double_the_hyphens() -> None:
    assert dm_name("vg0", "pool0") == "vg0-pool0"
    assert pool_dm_name("vg-data", "thin-pool") == "vg--data-thin--pool-tpool"
    assert pool_metadata_device("vg-data", "thin-pool") == "/dev/mapper/vg--data-thin--pool_tmeta"


@pytest.mark.parametrize(
    ("path", "vg_lv"),
    [
        ("/dev/vg0/vm1-disk", ("vg0", "vm1-disk")),
        ("/dev/mapper/vg0-vm1--disk", ("vg0", "vm1-disk")),
        ("/dev/mapper/vg--data-lv", ("vg-data", "lv")),
    ],
)
def test_lv_paths(path: str, vg_lv: tuple[str, str]) -> None:
    assert split_lv_path(path) == vg_lv


@pytest.mark.parametrize(
    "path", ["", "/dev/sda", "/var/lib/libvirt/images/a.qcow2", "/dev/mapper/nohyphen", "/dev/vg0/"]
)
def test_not_lv_paths(path: str) -> None:
    with pytest.raises(ValueError):
        split_lv_path(path)


LVS_REPORT = """\
  {
      "report": [
          {
              "lv": [
                  {"lv_name":"pool0", "vg_name":"vg0", "pool_lv":"", "thin_id":"", "lv_attr":"twi-aotz--",
                   "origin":"", "lv_tags":""},
                  {"lv_name":"vm1-disk", "vg_name":"vg0", "pool_lv":"pool0", "thin_id":"1", "lv_attr":"Vwi-aotz--",
                   "origin":"", "lv_tags":""},
                  {"lv_name":"s1", "vg_name":"vg0", "pool_lv":"pool0", "thin_id":"2", "lv_attr":"Vwi---tz-k",
                   "origin":"vm1-disk", "lv_tags":"genievm,keep"}
              ]
          }
      ]
  }
"""


def test_lvs_report() -> None:
    pool, disk, s1 = parse_lvs_report(LVS_REPORT)
    assert pool == ThinLV("pool0", "vg0", "", None, "twi-aotz--")
    assert disk.thin_id == 1 and disk.pool == "pool0" and disk.tags == ()
    assert s1 == ThinLV("s1", "vg0", "pool0", 2, "Vwi---tz-k", "vm1-disk", ("genievm", "keep"))
    with pytest.raises(ValueError):
        parse_lvs_report('{"report": [{"vg": []}]}')
    with pytest.raises(ValueError):
        parse_lvs_report("  Volume group vg0 not found")


# --- command sequences, with a recording runner (the commands themselves need an LVM host) -----


class Recorder:
    """Records each argv; answers ``lvs`` with LVS_REPORT and fails the commands named in ``fail``."""

    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str]) -> str:
        self.calls.append(list(argv))
        if any(word in argv for word in self.fail):
            raise ProviderError(
                f"provider kvm: `{' '.join(argv)}` failed (exit 1): device-mapper: message ioctl failed"
            )
        return LVS_REPORT if argv[0] == "lvs" else ""


LVS_ARGV = ["lvs", "--reportformat", "json", "-o", "lv_name,vg_name,pool_lv,thin_id,lv_attr,origin,lv_tags", "vg0"]
RESERVE = ["dmsetup", "message", "vg0-pool0-tpool", "0", "reserve_metadata_snap"]
RELEASE = ["dmsetup", "message", "vg0-pool0-tpool", "0", "release_metadata_snap"]


def test_lookup_uses_lvs_json() -> None:
    run = Recorder()
    assert lookup_thin_lv("vg0", "s1", run=run) == parse_lvs_report(LVS_REPORT)[2]
    assert lookup_thin_lv("vg0", "gone", run=run) is None
    assert run.calls == [LVS_ARGV, LVS_ARGV]


def test_snapshot_create_and_remove_commands() -> None:
    run = Recorder()
    assert create_thin_snapshot("vg0", "vm1-disk", "s1", run=run).thin_id == 2
    assert remove_thin_snapshot("vg0", "s1", run=run) is True
    assert remove_thin_snapshot("vg0", "gone", run=run) is False
    assert run.calls == [
        ["lvcreate", "-s", "--addtag", "genievm", "-n", "s1", "vg0/vm1-disk"],
        ["lvchange", "-ay", "-K", "vg0/s1"],
        LVS_ARGV,
        LVS_ARGV,
        ["lvremove", "-y", "vg0/s1"],
        LVS_ARGV,
    ]


def test_only_genievm_snapshots_are_removed() -> None:
    run = Recorder()
    with pytest.raises(ProviderError, match="refusing to remove vg0/vm1-disk"):
        remove_thin_snapshot("vg0", "vm1-disk", run=run)
    assert all(argv[0] != "lvremove" for argv in run.calls)


def test_the_metadata_snapshot_is_always_released() -> None:
    run = Recorder()
    with reserved_metadata_snap("vg0", "pool0", run=run) as device:
        assert device == "/dev/mapper/vg0-pool0_tmeta"
    assert run.calls == [RESERVE, RELEASE]

    run = Recorder()
    with pytest.raises(CBTError, match="boom"), reserved_metadata_snap("vg0", "pool0", run=run):
        raise CBTError("changed-block tracking failed for disk vda: boom")
    assert run.calls == [RESERVE, RELEASE]


def test_a_failed_reservation_releases_nothing_and_says_what_to_check() -> None:
    run = Recorder(fail=["reserve_metadata_snap"])
    with pytest.raises(ProviderError) as info, reserved_metadata_snap("vg0", "pool0", run=run):
        pytest.fail("the body must not run")
    assert run.calls == [RESERVE]
    assert any("release_metadata_snap" in note for note in info.value.__notes__)


def test_a_failed_release_does_not_hide_the_bodys_error() -> None:
    run = Recorder(fail=["release_metadata_snap"])
    with pytest.raises(CBTError, match="boom") as info, reserved_metadata_snap("vg0", "pool0", run=run):
        raise CBTError("changed-block tracking failed for disk vda: boom")
    assert "releasing the metadata snapshot failed" in info.value.__notes__[0]
    run = Recorder(fail=["release_metadata_snap"])
    with pytest.raises(ProviderError, match="release_metadata_snap"), reserved_metadata_snap("vg0", "pool0", run=run):
        pass


def test_the_live_cycle_reads_the_pools_metadata_snapshot() -> None:
    run = Recorder()
    calls: list[tuple[str, int, int, bool]] = []

    def lookup(vg: str, lv: str) -> ThinLV | None:
        return {"s1": snap("s1", OLD), "s2": snap("s2", NEW)}.get(lv)

    cbt = LVMThinCBT(lookup=lookup, run=run)
    with pytest.MonkeyPatch.context() as mp:

        def fake(
            metadata: str, a: int, b: int, size: int, *, metadata_snap: bool, disk: str | None = None
        ) -> list[Extent]:
            calls.append((metadata, a, b, metadata_snap))
            return [Extent(0, 1)]

        mp.setattr("genievm_kvm.lvm_thin.thin_changed_extents", fake)
        got = cbt.changed_extents(thin_disk(thin_snapshot="s2"), "s1")
    assert got.extents == [Extent(0, 1)]
    assert calls == [("/dev/mapper/vg0-pool0_tmeta", OLD, NEW, True)]
    assert run.calls == [RESERVE, RELEASE]


# --- on an LVM host --------------------------------------------------------------------------


@pytest.fixture
def lvm_pool() -> tuple[str, str]:
    """A scratch thin pool named by GENIEVM_TEST_LVM_THIN_POOL=VG/POOL; the test creates and removes LVs in it."""
    if not os.path.exists("/dev/mapper/control"):
        pytest.skip(NO_DM_REASON)
    spec = os.environ.get("GENIEVM_TEST_LVM_THIN_POOL", "")
    if "/" not in spec or os.geteuid() != 0:
        pytest.skip("set GENIEVM_TEST_LVM_THIN_POOL=VG/POOL (a scratch thin pool) and run as root")
    vg, pool = spec.split("/", 1)
    return vg, pool


def _write(device: str, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(extents: Sequence[tuple[int, int]], chunk: int) -> set[int]:
    """The pool chunks that ``(offset, length)`` ranges touch."""
    return {c for off, n in extents for c in range(off // chunk, (off + n - 1) // chunk + 1)}


def test_live_pool_cycle(lvm_pool: tuple[str, str]) -> None:
    vg, pool = lvm_pool
    lv = f"genievm-test-{secrets.token_hex(4)}"
    size = 64 << 20
    run_command(["lvcreate", "-V", f"{size}b", "-T", f"{vg}/{pool}", "-n", lv])
    try:
        _write(f"/dev/{vg}/{lv}", 0, os.urandom(1 << 20))
        s1 = create_thin_snapshot(vg, lv, f"{lv}-s1")
        writes = [(5 * (1 << 20) + 100, 10), (20 << 20, 200 << 10)]
        for off, n in writes:
            _write(f"/dev/{vg}/{lv}", off, os.urandom(n))
        s2 = create_thin_snapshot(vg, lv, f"{lv}-s2")
        chunk = int(
            run_command(["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "chunk_size", f"{vg}/{pool}"])
        )
        disk = DiskInfo("vda", size, "lvm-thin", location=f"/dev/{vg}/{lv}", details={"thin_snapshot": s2.name})
        got = LVMThinCBT().changed_extents(disk, s1.name)
        assert got.extents is not None
        assert all(e.offset % chunk == 0 and e.length % chunk == 0 for e in got.extents)
        assert _chunks(got.extents, chunk) == _chunks(writes, chunk)  # only the chunks written between the snapshots
        assert remove_thin_snapshot(vg, s1.name) is True
        assert lookup_thin_lv(vg, s1.name) is None
        gone = LVMThinCBT().changed_extents(disk, s1.name)
        assert gone.extents is None
    finally:
        for name in (f"{lv}-s1", f"{lv}-s2", lv):
            subprocess.run(["lvremove", "-y", f"{vg}/{name}"], capture_output=True, check=False)


class TestLVMThinContract(CBTSourceContract):
    """GenieVM's CBT source contract over real thin metadata (lvs stands in: device-mapper is needed for it)."""

    @pytest.fixture
    def cbt_source(self, meta: str) -> LVMThinCBT:
        return LVMThinCBT(metadata=meta, metadata_snap=False, lookup=Lookup(snap("s1", OLD), snap("s2", NEW)))

    @pytest.fixture
    def cbt_case(self) -> CBTCase:
        return CBTCase(thin_disk(thin_snapshot="s2"), "s1", expected_extents(OLD_MAP, NEW_MAP, BS, LV_SIZE))
