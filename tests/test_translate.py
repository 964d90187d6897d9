"""genievm_core.translate: stored VM configurations of one provider as the other's, table by table.

The vSphere samples have the shape of what the vmware provider stores (pyvmomi's SOAP serialization of
a vcsim VM's ``VirtualMachineConfigInfo``); the libvirt ones of what the kvm provider stores.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from genievm_core.errors import ConfigError, TranslationError
from genievm_core.translate import (
    LibvirtTarget,
    PortableDisk,
    PortableNic,
    VSphereTarget,
    libvirt_domain,
    read_config,
    vsphere_spec,
)

VSPHERE = "vsphere-configinfo+xml"
LIBVIRT = "libvirt-domain-xml"

PVSCSI = '<device xsi:type="ParaVirtualSCSIController"><key>1000</key><busNumber>0</busNumber></device>'
SATA = '<device xsi:type="VirtualAHCIController"><key>15000</key><busNumber>0</busNumber></device>'


def disk(key: int, controller: int, unit: int, parent: bool = False) -> str:
    chain = "<parent><fileName>[ds] vm/vm.vmdk</fileName></parent>" if parent else ""
    return (
        f'<device xsi:type="VirtualDisk"><key>{key}</key><deviceInfo><label>Hard disk {key}</label></deviceInfo>'
        f'<backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] vm/vm-{key}.vmdk</fileName>{chain}'
        f"</backing><controllerKey>{controller}</controllerKey><unitNumber>{unit}</unitNumber>"
        "<capacityInKB>4096</capacityInKB></device>"
    )


def nic(key: int, kind: str = "VirtualVmxnet3", network: str = "VM Network") -> str:
    return (
        f'<device xsi:type="{kind}"><key>{key}</key><deviceInfo><label>Network adapter {key}</label></deviceInfo>'
        f'<backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>{network}</deviceName></backing>'
        f"<addressType>generated</addressType><macAddress>00:50:56:00:00:{key % 100:02x}</macAddress></device>"
    )


def vsphere(*devices: str, firmware: str = "bios", guest: str = "otherGuest64", cpus: int = 2, cores: int = 1,
            memory: int = 1024, extra: str = "") -> bytes:  # fmt: skip
    return (
        '<obj xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:vim25" versionId="8.0" '
        f'xsi:type="VirtualMachineConfigInfo"><name>web01</name><guestId>{guest}</guestId>{extra}'
        f"<hardware><numCPU>{cpus}</numCPU><numCoresPerSocket>{cores}</numCoresPerSocket><memoryMB>{memory}</memoryMB>"
        f"{''.join(devices)}</hardware><firmware>{firmware}</firmware></obj>"
    ).encode()


BASIC = (PVSCSI, disk(2000, 1000, 0), disk(2001, 1000, 1), nic(4000))


def kvm_target(**kw: Any) -> LibvirtTarget:
    return LibvirtTarget(**{"name": "web01-kvm", "network_map": {"VM Network": "default"}, **kw})


def domain(config: bytes, disks: list[str], **kw: Any) -> tuple[ET.Element, Any]:
    vm = read_config(VSPHERE, config)
    made = libvirt_domain(vm, disks, kvm_target(**kw))
    return ET.fromstring(made.xml), made


# ------------------------------------------------------------------ vSphere → libvirt, table-driven

CASES_TO_KVM: list[tuple[str, bytes, dict[str, Any], dict[str, Any]]] = [
    ("bios-sata-default", vsphere(*BASIC), {},
     {"vcpu": "2", "memory": "1024", "loader": None, "bus": ["sata", "sata"], "dev": ["sda", "sdb"],
      "nic_model": ["e1000"], "mac": [None], "network": ["default"]}),
    ("virtio-bus", vsphere(*BASIC), {"disk_bus": "virtio"},
     {"bus": ["virtio", "virtio"], "dev": ["vda", "vdb"], "nic_model": ["virtio"]}),
    ("scsi-bus", vsphere(*BASIC), {"disk_bus": "scsi"}, {"bus": ["scsi", "scsi"], "scsi_controller": "virtio-scsi"}),
    ("keep-macs", vsphere(*BASIC), {"keep_macs": True}, {"mac": ["00:50:56:00:00:00"]}),
    ("topology", vsphere(*BASIC, cpus=8, cores=4), {}, {"vcpu": "8", "topology": ("2", "4")}),
    ("odd-cores-one-per-socket", vsphere(*BASIC, cpus=3, cores=2), {}, {"topology": ("3", "1")}),
    ("efi", vsphere(*BASIC, firmware="efi"), {},
     {"loader": "/usr/share/OVMF/OVMF_CODE_4M.fd", "nvram": "/usr/share/OVMF/OVMF_VARS_4M.fd", "smm": False}),
    ("efi-secure-boot", vsphere(*BASIC, firmware="efi", extra="<bootOptions><efiSecureBootEnabled>true"
                                "</efiSecureBootEnabled></bootOptions>"), {},
     {"loader": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "nvram": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
      "smm": True}),
    ("boot-disk-first", vsphere(PVSCSI, disk(2000, 1000, 0), disk(2001, 1000, 1), extra="<bootOptions><bootOrder "
                                'xsi:type="VirtualMachineBootOptionsBootableDiskDevice"><deviceKey>2001</deviceKey>'
                                "</bootOrder></bootOptions>"), {},
     {"order": ["disk-2001", "disk-2000"]}),
    ("sata-before-ide-by-unit", vsphere(SATA, PVSCSI, disk(16001, 15000, 1), disk(2000, 1000, 3),
                                        disk(16000, 15000, 0)), {},
     {"order": ["disk-2000", "disk-16000", "disk-16001"]}),
    ("network-default", vsphere(*BASIC), {"network_map": {}, "default_network": "isolated"}, {"network": ["isolated"]}),
    ("network-bridge", vsphere(*BASIC), {"network_map": {"VM Network": "bridge:br0"}},
     {"network": [], "bridge": ["br0"]}),
    ("network-dropped", vsphere(*BASIC), {"network_map": {"VM Network": ""}},
     {"network": [], "warns": "dropped (networkMap)"}),
    ("no-nics", vsphere(*BASIC), {"no_nics": True}, {"network": []}),
    ("unmapped-keeps-name", vsphere(*BASIC), {"network_map": {}}, {"network": ["VM Network"]}),
    ("only-restored-disks", vsphere(*BASIC), {"disks": ["disk-2001"]}, {"dev": ["sda"], "order": ["disk-2001"]}),
]


@pytest.mark.parametrize(("config", "options", "want"), [c[1:] for c in CASES_TO_KVM], ids=[c[0] for c in CASES_TO_KVM])
def test_vsphere_to_libvirt(config: bytes, options: dict[str, Any], want: dict[str, Any]) -> None:
    disks = options.pop("disks", ["disk-2000", "disk-2001", "disk-16000", "disk-16001"])
    vm = read_config(VSPHERE, config)
    made = libvirt_domain(vm, [d for d in disks if d in {x.name for x in vm.disks}], kvm_target(**options))
    root = ET.fromstring(made.xml)
    assert root.findtext("name") == "web01-kvm"
    assert root.find("uuid") is None  # libvirt makes a new one
    got_disks = root.findall("devices/disk")
    checks = {
        "vcpu": lambda: root.findtext("vcpu"),
        "memory": lambda: root.findtext("memory"),
        "loader": lambda: root.findtext("os/loader"),
        "nvram": lambda: root.find("os/nvram").get("template"),  # type: ignore[union-attr]
        "smm": lambda: root.find("features/smm") is not None,
        "bus": lambda: [d.find("target").get("bus") for d in got_disks],  # type: ignore[union-attr]
        "dev": lambda: [d.find("target").get("dev") for d in got_disks],  # type: ignore[union-attr]
        "order": lambda: sorted(made.targets, key=lambda n: made.targets[n]),
        "scsi_controller": lambda: root.find("devices/controller[@type='scsi']").get("model"),  # type: ignore[union-attr]
        "nic_model": lambda: [i.find("model").get("type") for i in root.findall("devices/interface")],  # type: ignore[union-attr]
        "mac": lambda: [(m.get("address") if (m := i.find("mac")) is not None else None)
                        for i in root.findall("devices/interface")],  # fmt: skip
        "network": lambda: [s.get("network") for s in root.findall("devices/interface[@type='network']/source")],
        "bridge": lambda: [s.get("bridge") for s in root.findall("devices/interface[@type='bridge']/source")],
        "topology": lambda: (root.find("cpu/topology").get("sockets"), root.find("cpu/topology").get("cores")),  # type: ignore[union-attr]
        "warns": lambda: next((w for w in made.warnings if want["warns"] in w), None) and want["warns"],
    }
    assert {k: checks[k]() for k in want} == want
    assert got_disks[0].find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert all(d.find("source") is None for d in got_disks)  # the restore points them at its files


WARNINGS_TO_KVM = [
    ("vmware-tools", vsphere(*BASIC, extra="<tools><toolsVersion>12352</toolsVersion></tools>"), "VMware Tools"),
    ("snapshots", vsphere(PVSCSI, disk(2000, 1000, 0, parent=True)), "snapshots of disk-2000"),
    ("pci-passthrough", vsphere(*BASIC, '<device xsi:type="VirtualPCIPassthrough"><key>13000</key><deviceInfo>'
                                "<label>PCI device 0</label></deviceInfo></device>"),
     "passthrough device PCI device 0"),
    ("usb-passthrough", vsphere(*BASIC, '<device xsi:type="VirtualUSB"><key>14000</key></device>'),
     "USB device device 14000"),
    ("vtpm", vsphere(*BASIC, '<device xsi:type="VirtualTPM"><key>11000</key><deviceInfo><label>TPM</label>'
                     "</deviceInfo></device>"), "vTPM TPM"),
    ("cdrom", vsphere(*BASIC, '<device xsi:type="VirtualCdrom"><key>3000</key><deviceInfo><label>CD/DVD drive 1'
                      "</label></deviceInfo></device>"), "CD-ROM CD/DVD drive 1: left out"),
]


@pytest.mark.parametrize(("config", "warning"), [c[1:] for c in WARNINGS_TO_KVM], ids=[c[0] for c in WARNINGS_TO_KVM])
def test_what_does_not_carry_over_to_kvm_is_a_warning(config: bytes, warning: str) -> None:
    _root, made = domain(config, ["disk-2000"])
    assert [w for w in made.warnings if w.startswith(warning)], made.warnings


def test_a_plain_vm_translates_without_warnings() -> None:
    assert domain(vsphere(*BASIC), ["disk-2000", "disk-2001"])[1].warnings == ()


REFUSALS_TO_KVM: list[tuple[str, bytes, dict[str, Any], type[Exception], str]] = [
    ("unknown-firmware", vsphere(*BASIC, firmware="coreboot"), {}, TranslationError,
     "cannot translate firmware 'coreboot': only bios and efi are known"),
    ("efi-without-ovmf", vsphere(*BASIC, firmware="efi"), {"ovmf_dir": Path("/nonexistent")}, TranslationError,
     "cannot restore web01 with EFI firmware: /nonexistent/OVMF_CODE_4M.fd is missing (apt-get install ovmf)"),
    ("bad-disk-bus", vsphere(*BASIC), {"disk_bus": "ide"}, ConfigError,
     "invalid providerOptions: diskBus: 'ide' is not one of sata, virtio, scsi"),
    ("too-many-sata", vsphere(PVSCSI, *(disk(2000 + u, 1000, u) for u in range(7))), {}, TranslationError,
     "cannot restore web01: 7 disks do not fit the sata bus (6 at most); choose -o diskBus=scsi"),
    ("no-memory", vsphere(*BASIC, memory=0), {}, TranslationError, "cannot restore web01: its configuration gives"),
    ("card-without-network", vsphere(PVSCSI, disk(2000, 1000, 0), nic(4000, network="")), {"network_map": {}},
     ConfigError, "invalid providerOptions: networkMap: card Network adapter 4000 of web01 names no network"),
    ("not-xml", b"<obj", {}, TranslationError, "cannot translate the vSphere configuration: it is not XML"),
]


@pytest.mark.parametrize(("config", "options", "error", "message"), [c[1:] for c in REFUSALS_TO_KVM],
                         ids=[c[0] for c in REFUSALS_TO_KVM])  # fmt: skip
def test_what_cannot_work_on_kvm_is_refused(config: bytes, options: dict[str, Any], error: type[Exception],
                                            message: str) -> None:  # fmt: skip
    with pytest.raises(error) as raised:
        vm = read_config(VSPHERE, config)
        libvirt_domain(vm, [d.name for d in vm.disks], kvm_target(**options))
    assert str(raised.value).startswith(message), str(raised.value)


def test_the_stored_nic_network_of_the_summary_wins() -> None:
    """A distributed card's stored backing names a port key; the backup's summary names its port group."""
    vm = read_config(VSPHERE, vsphere(PVSCSI, disk(2000, 1000, 0), nic(4000, network="")),
                     {"nic.4000.network": "DC0_DVPG0"})  # fmt: skip
    assert vm.nics == (PortableNic("Network adapter 4000", "DC0_DVPG0", "00:50:56:00:00:00", "vmxnet3"),)


# ------------------------------------------------------------------ libvirt → vSphere, table-driven


def libvirt(devices: str = "", os_extra: str = "", metadata: str = "", vcpu: int = 2, memory: str = "2097152",
            arch: str = "x86_64", cpu: str = "") -> bytes:  # fmt: skip
    return (
        f"<domain type='kvm'><name>db01</name><uuid>6f1c8c8e-0000-4000-8000-000000000001</uuid>{metadata}"
        f"<memory unit='KiB'>{memory}</memory><vcpu placement='static'>{vcpu}</vcpu>{cpu}"
        f"<os><type arch='{arch}' machine='pc-q35-7.2'>hvm</type>{os_extra}</os><devices>{devices}</devices></domain>"
    ).encode()


def vdisk(dev: str, bus: str = "virtio", boot: int | None = None) -> str:
    order = f"<boot order='{boot}'/>" if boot else ""
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/{dev}.qcow2'/>"
            f"<target dev='{dev}' bus='{bus}'/>{order}</disk>")  # fmt: skip


def vnic(network: str = "default", model: str = "virtio", kind: str = "network") -> str:
    attr = "network" if kind == "network" else "bridge"
    return (f"<interface type='{kind}'><mac address='52:54:00:12:34:56'/><source {attr}='{network}'/>"
            f"<model type='{model}'/></interface>")  # fmt: skip


LINUX = ("<metadata><libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>"
         "<libosinfo:os id='http://debian.org/debian/12'/></libosinfo:libosinfo></metadata>")  # fmt: skip
WINDOWS = LINUX.replace("http://debian.org/debian/12", "http://microsoft.com/win/2k22")
BASE_KVM = vdisk("vda") + vdisk("vdb") + vnic()
VMW = VSphereTarget(network_map={"default": "VM Network"})

CASES_TO_VSPHERE: list[tuple[str, bytes, VSphereTarget, dict[str, Any]]] = [
    ("linux-bios", libvirt(BASE_KVM, metadata=LINUX), VMW,
     {"guest_id": "otherLinux64Guest", "cpus": 2, "memory_mib": 2048, "firmware": "bios", "scsi_controller": "pvscsi",
      "disks": [("vda", 0), ("vdb", 1)], "nics": [("VM Network", "vmxnet3")]}),
    ("windows", libvirt(BASE_KVM, metadata=WINDOWS), VMW,
     {"guest_id": "windows9_64Guest", "scsi_controller": "lsilogic-sas", "nics": [("VM Network", "e1000e")]}),
    ("unknown-os", libvirt(BASE_KVM), VMW, {"guest_id": "otherGuest64", "scsi_controller": "lsilogic-sas"}),
    ("controller-chosen", libvirt(BASE_KVM, metadata=LINUX), VSphereTarget(scsi_controller="lsilogic"),
     {"scsi_controller": "lsilogic"}),
    ("efi-firmware-attr", libvirt(BASE_KVM, os_extra="", metadata=LINUX).replace(b"<os>", b"<os firmware='efi'>"),
     VMW, {"firmware": "efi", "secure_boot": False}),
    ("efi-secure-loader", libvirt(BASE_KVM, os_extra="<loader readonly='yes' secure='yes' type='pflash'>"
                                  "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd</loader>"), VMW,
     {"firmware": "efi", "secure_boot": True}),
    ("memory-rounded-up", libvirt(BASE_KVM, memory="1000000"), VMW, {"memory_mib": 980}),
    ("topology", libvirt(BASE_KVM, vcpu=4, cpu="<cpu><topology sockets='2' cores='2' threads='1'/></cpu>"), VMW,
     {"cpus": 4, "cores_per_socket": 2}),
    ("boot-order", libvirt(vdisk("vda") + vdisk("sda", "sata", boot=1)), VMW, {"disks": [("sda", 0), ("vda", 1)]}),
    ("unit-7-skipped", libvirt("".join(vdisk(f"vd{c}") for c in "abcdefghi")), VMW,
     {"disks": [(f"vd{c}", u) for c, u in zip("abcdefghi", [0, 1, 2, 3, 4, 5, 6, 8, 9], strict=True)]}),
    ("bridge-card", libvirt(vdisk("vda") + vnic("br0", kind="bridge")), VSphereTarget(default_network="DC0_DVPG0"),
     {"nics": [("DC0_DVPG0", "e1000e")]}),
    ("e1000-kept", libvirt(vdisk("vda") + vnic(model="e1000")), VMW, {"nics": [("VM Network", "e1000")]}),
    ("dropped", libvirt(BASE_KVM), VSphereTarget(network_map={"default": ""}), {"nics": []}),
    ("no-nics", libvirt(BASE_KVM), VSphereTarget(no_nics=True), {"nics": []}),
]


@pytest.mark.parametrize(("config", "target", "want"), [c[1:] for c in CASES_TO_VSPHERE],
                         ids=[c[0] for c in CASES_TO_VSPHERE])  # fmt: skip
def test_libvirt_to_vsphere(config: bytes, target: VSphereTarget, want: dict[str, Any]) -> None:
    vm = read_config(LIBVIRT, config)
    spec = vsphere_spec(vm, [d.name for d in vm.disks], target)
    got = {
        "guest_id": spec.guest_id, "cpus": spec.cpus, "cores_per_socket": spec.cores_per_socket,
        "memory_mib": spec.memory_mib, "firmware": spec.firmware, "secure_boot": spec.secure_boot,
        "scsi_controller": spec.scsi_controller, "disks": [(d.name, d.unit) for d in spec.disks],
        "nics": [(n.network, n.model) for n in spec.nics],
    }  # fmt: skip
    assert {k: got[k] for k in want} == want


WARNINGS_TO_VSPHERE = [
    ("vtpm", "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>", "vTPM"),
    ("hostdev", "<hostdev mode='subsystem' type='pci' managed='yes'/>", "passthrough device pci"),
    ("guest-agent", "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>",
     "QEMU guest agent"),
    ("cdrom", "<disk type='file' device='cdrom'><target dev='sdc' bus='sata'/></disk>", "cdrom sdc: left out"),
    ("shared-folder", "<filesystem type='mount'><source dir='/srv'/><target dir='srv'/></filesystem>", "shared folder"),
]


@pytest.mark.parametrize(("device", "warning"), [c[1:] for c in WARNINGS_TO_VSPHERE],
                         ids=[c[0] for c in WARNINGS_TO_VSPHERE])  # fmt: skip
def test_what_does_not_carry_over_to_vsphere_is_a_warning(device: str, warning: str) -> None:
    vm = read_config(LIBVIRT, libvirt(vdisk("vda") + device))
    spec = vsphere_spec(vm, ["vda"], VMW)
    assert [w for w in spec.warnings if w.startswith(warning)], spec.warnings
    assert [d.name for d in spec.disks] == ["vda"]


REFUSALS_TO_VSPHERE: list[tuple[str, bytes, VSphereTarget, type[Exception], str]] = [
    ("aarch64", libvirt(BASE_KVM, arch="aarch64"), VMW, TranslationError,
     "cannot translate a aarch64 VM: vSphere runs x86 guests only"),
    ("sixteen-disks", libvirt("".join(vdisk(f"vd{chr(97 + i)}") for i in range(16))), VMW, TranslationError,
     "cannot restore db01: 16 disks, one SCSI controller takes 15"),
    ("bad-controller", libvirt(BASE_KVM), VSphereTarget(scsi_controller="buslogic"), ConfigError,
     "invalid providerOptions: scsiController: 'buslogic' is not one of pvscsi, lsilogic-sas, lsilogic"),
    ("user-net-unmapped", libvirt(vdisk("vda") + "<interface type='user'/>"), VSphereTarget(), ConfigError,
     "invalid providerOptions: networkMap: card interface 1 of db01 names no network"),
    ("bad-memory-unit", libvirt(BASE_KVM).replace(b"unit='KiB'", b"unit='furlong'"), VMW, TranslationError,
     "cannot translate the libvirt domain: memory unit 'furlong'"),
]


@pytest.mark.parametrize(("config", "target", "error", "message"), [c[1:] for c in REFUSALS_TO_VSPHERE],
                         ids=[c[0] for c in REFUSALS_TO_VSPHERE])  # fmt: skip
def test_what_cannot_work_on_vsphere_is_refused(config: bytes, target: VSphereTarget, error: type[Exception],
                                                message: str) -> None:  # fmt: skip
    with pytest.raises(error) as raised:
        vm = read_config(LIBVIRT, config)
        vsphere_spec(vm, [d.name for d in vm.disks], target)
    assert str(raised.value).startswith(message), str(raised.value)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(TranslationError, match="cannot translate a VM configuration of format 'image-json'"):
        read_config("image-json", b"{}")


def test_round_trip_keeps_what_both_sides_know() -> None:
    """vSphere → libvirt → vSphere: CPUs, memory, firmware and the disks' order survive."""
    vm = read_config(VSPHERE, vsphere(*BASIC, firmware="efi", cpus=4, cores=2, memory=4096, guest="debian12_64Guest"))
    made = libvirt_domain(vm, ["disk-2000", "disk-2001"], kvm_target())
    back = read_config(LIBVIRT, made.xml.encode())
    assert back.disks == (PortableDisk("sda", "sata"), PortableDisk("sdb", "sata"))
    spec = vsphere_spec(back, ["sda", "sdb"], VSphereTarget(network_map={"default": "VM Network"}))
    assert (spec.cpus, spec.cores_per_socket, spec.memory_mib, spec.firmware) == (4, 2, 4096, "efi")
