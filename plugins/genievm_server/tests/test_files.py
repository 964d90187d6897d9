"""File restore through the API of a real server: a folder of a backup's guest filesystem listed, and files
extracted under the restore_root, by the recovery plugin's ``files`` job (libguestfs over the backup's NBD
export). Each request that reads the guest boots the libguestfs appliance (tens of seconds under TCG)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from genievm_server import files
from genievm_server.errors import NotInstalledError, error_body, status_of
from genievm_server.settings import ServerSettings
from server_support import ServerProcess, Site, wait_job


@pytest.mark.slow
def test_list_a_guest_folder_and_restore_files_through_the_api(
    server_factory: Callable[..., ServerProcess], files_site: Site
) -> None:
    server = server_factory()
    guest = files_site.root / "guest"
    with server.client("operator") as client:
        started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "files01", "repository": "main"})
        backup_id = wait_job(client, started.json()["id"])["result"]["backup_id"]

        listed = client.get(f"/api/v1/repositories/main/backups/{backup_id}/files", params={"path": "/srv"})
        assert listed.status_code == 200, listed.text
        folder = listed.json()
        assert (folder["path"], folder["filesystem"]) == ("/srv", "/dev/sda")
        entries = {e["name"]: e for e in folder["entries"]}
        assert sorted(entries) == ["data", "run.sh"]
        assert (entries["data"]["type"], entries["run.sh"]["mode"], entries["run.sh"]["size"]) == (
            "directory",
            "0750",
            (guest / "srv" / "run.sh").stat().st_size,
        )

        outside = client.post(
            f"/api/v1/repositories/main/backups/{backup_id}/files/restore",
            json={"paths": ["/etc/hostname"], "restore_path": "../escape"},
        )
        assert outside.status_code == 400 and outside.json()["error"]["code"] == "ConfigError"
        restore = client.post(
            "/api/v1/repositories/main/backups/latest/files/restore",
            json={"vm": "files01", "paths": ["/etc/hostname", "/srv/data"], "restore_path": "files01-files"},
        )
        assert restore.status_code == 202, restore.text
        done = wait_job(client, restore.json()["id"], timeout=300)
        assert (done["kind"], done["state"]) == ("files", "succeeded"), done
        assert (done["result"]["files"], done["result"]["folders"]) == (2, 1)
    target = Path(files_site.settings["restore_root"]) / "files01-files"
    assert (target / "hostname").read_text() == "files01\n"
    assert (target / "data" / "report.csv").read_bytes() == (guest / "srv" / "data" / "report.csv").read_bytes()


def test_without_genievm_recovery_file_restore_is_one_clear_501(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "available", lambda: False)
    service: Any = SimpleNamespace(settings=ServerSettings())  # nothing else is reached before the check
    with pytest.raises(NotInstalledError) as raised:
        files.list_folder(service, "main", "web01", "latest", "/")
    assert status_of(raised.value) == 501
    assert error_body(raised.value)["error"] == {
        "code": "NotInstalledError",
        "exit": 3,
        "message": "file restore needs genievm-recovery (genievm files), which this server lacks",
    }
