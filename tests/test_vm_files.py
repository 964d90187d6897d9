"""The VM's files besides its disks (NVRAM, vTPM state): from a session into the manifest and back, checked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from support import CHUNK, random_bytes, write_image

from genievm_core.api import BackupConfig, GenieVM
from genievm_core.engine import DiskSources
from genievm_core.errors import CorruptionError, ProviderError
from genievm_core.jobs.vm_files import session_files, stored_files
from genievm_core.models.manifest import MAX_VM_FILE


class FirmwareSession(DiskSources):
    """A backup session with no disks that offers VM files (what genievm_kvm's session does with NVRAM)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        super().__init__({})
        self.files = files

    def vm_files(self) -> Mapping[str, bytes]:
        return self.files


def test_files_are_kept_in_the_manifest_and_come_back_checked(tmp_path: Path) -> None:
    image = write_image(tmp_path / "vda.img", 2 * CHUNK, [(0, random_bytes(CHUNK, 3))])
    nvram = random_bytes(128 << 10, 4)
    with GenieVM(job_db=tmp_path / "jobs.sqlite") as genievm:
        repo = genievm.init_repository(str(tmp_path / "repo"), passphrase="vm files", chunk_size=CHUNK)
        config = BackupConfig(vm_id="vm1", backup_path=repo.url, provider_options={"vms": {"vm1": {"vda": str(image)}}})
        job = genievm.backup_job(config, repo)
        genievm.run(job)
        backup_id = job.result["backup_id"]
        manifest = repo.get_manifest(backup_id)
        assert manifest.vm.files == ()  # the image provider's session offers none
        records = session_files(FirmwareSession({"nvram": nvram, "swtpm.tar": b""}), "kvm", "vm1")
        repo.put_manifest(manifest.model_copy(update={"vm": manifest.vm.model_copy(update={"files": records})}))
        stored = repo.get_manifest(backup_id)
        assert [f.name for f in stored.vm.files] == ["nvram", "swtpm.tar"]
        assert stored_files(stored) == {"nvram": nvram, "swtpm.tar": b""}

        damaged = stored.vm.files[0].model_copy(update={"data": stored.vm.files[1].data})
        tampered = stored.model_copy(update={"vm": stored.vm.model_copy(update={"files": (damaged,)})})
        with pytest.raises(CorruptionError, match="VM file nvram does not match its checksum"):
            stored_files(tampered)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../nvram": b"x"}, "has a file named '../nvram'"),
        ({"nvram": bytes(MAX_VM_FILE + 1)}, "file nvram is 4194305 bytes, more than the 4194304 kept"),
    ],
)
def test_a_file_the_manifest_cannot_keep_is_the_providers_error(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        session_files(FirmwareSession(files), "kvm", "vm1")
