"""The web console in a real browser: Debian's headless Chromium driven by Selenium through chromium-driver,
against the real server. Log in with a token, start a backup from the page and see it finish, restore it
from the VM's backups page, run a policy now; a read-only token cannot start anything.

With GENIEVM_SCREENSHOTS=FOLDER the pages' screenshots are saved there too (docs/images holds the user
guide's: GENIEVM_SCREENSHOTS=docs/images .venv/bin/python -m pytest plugins/genievm_server/tests/test_console.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from server_support import ServerProcess, Site, wait_job

SCREENSHOTS = os.environ.get("GENIEVM_SCREENSHOTS")  # read before the fixtures clean the environment
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
POLICY = {
    "name": "nightly",
    "provider": "lab",
    "repository": "main",
    "vms": ["web*"],
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
}

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: scripts/setup.sh installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _shot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / path.name)


def _log_in(driver: webdriver.Chrome, server: ServerProcess, role: str) -> None:
    driver.get(f"{server.url}/console/")
    driver.find_element(By.ID, "token").send_keys(server.token(role))
    _click(driver, driver.find_element(By.ID, "login"))
    assert driver.find_elements(By.ID, "vms"), driver.page_source[:500]


def _click(driver: webdriver.Chrome, element: Any) -> None:
    """Click what loads another page, and wait until this one has gone."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_driver: webdriver.Chrome) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:  # chromedriver's other word for it, while the new page loads
            if "does not belong to the document" in str(exc.msg):
                return True
            raise
        return False

    WebDriverWait(driver, 30).until(gone)


def _wait_for_job(driver: webdriver.Chrome, kind: str) -> None:
    """On the jobs page: until the newest job of ``kind`` has ended (the page refreshes its table itself)."""

    def ended(d: webdriver.Chrome) -> str | bool:
        rows = [
            r
            for r in d.find_elements(By.CSS_SELECTOR, "#jobs tr.job")
            if r.find_elements(By.TAG_NAME, "td")[1].text == kind
        ]
        state = rows[0].get_attribute("data-state") if rows else None
        return state if state in ("succeeded", "failed", "cancelled") else False

    # the table is replaced while it is read, now and then: read it again
    wait = WebDriverWait(driver, 300, poll_frequency=0.5, ignored_exceptions=(WebDriverException,))
    assert wait.until(ended) == "succeeded"


def test_the_console_in_chromium(browser: webdriver.Chrome, server: ServerProcess, site: Site, tmp_path: Path) -> None:
    browser.get(f"{server.url}/console/jobs")
    assert browser.find_elements(By.ID, "token"), "a page without a token shows the login form"
    _log_in(browser, server, "operator")
    assert "No backups yet." in browser.find_element(By.ID, "vms").text

    browser.get(f"{server.url}/console/jobs")
    Select(browser.find_element(By.ID, "backup-vm")).select_by_value("lab/web01")
    _click(browser, browser.find_element(By.ID, "start-backup"))
    _wait_for_job(browser, "backup")
    progress = browser.find_element(By.CSS_SELECTOR, "#jobs tr.job progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == str(8 << 20)
    _shot(browser, tmp_path, "jobs")

    browser.get(f"{server.url}/console/")
    row = browser.find_element(By.CSS_SELECTOR, '#vms tr.vm[data-vm="web01"]')
    assert "succeeded" in row.text and "main" in row.text
    _shot(browser, tmp_path, "dashboard")

    _click(browser, row.find_element(By.LINK_TEXT, "web01"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#backups tr.backup")) == 1
    path = browser.find_element(By.ID, "restore-path")
    path.clear()
    path.send_keys("web01-restored")
    _shot(browser, tmp_path, "backups")
    _click(browser, browser.find_element(By.ID, "start-restore"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr.job")) == 2
    _wait_for_job(browser, "restore")
    original = Path(site.settings["providers"]["lab"]["options"]["vms"]["web01"]["vda"])
    restored = Path(site.settings["restore_root"]) / "web01-restored" / "vda.img"
    assert restored.read_bytes() == original.read_bytes()

    with server.client("admin") as client:
        assert client.post("/api/v1/policies", json=POLICY).status_code == 201
    browser.get(f"{server.url}/console/policies")
    _click(browser, browser.find_element(By.CSS_SELECTOR, '#policies tr.policy[data-policy="nightly"] button.run-now'))
    with server.client("read-only") as client:
        runs = client.get("/api/v1/policies/nightly/runs").json()
    assert sorted(r["vm"] for r in runs) == ["web01", "web02"]
    _shot(browser, tmp_path, "policies")


def test_a_read_only_token_starts_nothing_from_the_console(browser: webdriver.Chrome, server: ServerProcess) -> None:
    _log_in(browser, server, "read-only")
    browser.get(f"{server.url}/console/jobs")
    _click(browser, browser.find_element(By.ID, "start-backup"))
    assert "has role read-only; this needs operator" in browser.find_element(By.ID, "error").text
    with server.client("read-only") as client:
        assert client.get("/api/v1/jobs").json() == []
    browser.get(f"{server.url}/console/logout")
    browser.get(f"{server.url}/console/jobs")
    assert browser.find_elements(By.ID, "token"), "logged out: the login form again"


def test_files_of_a_backup_restored_from_the_console(
    browser: webdriver.Chrome, server_factory: Callable[..., ServerProcess], files_site: Site, tmp_path: Path
) -> None:
    """Browse the guest filesystem of a backup, choose a folder and a file, restore them (two appliance boots)."""
    server = server_factory()
    with server.client("operator") as client:
        started = client.post("/api/v1/jobs/backup", json={"provider": "lab", "vm": "files01", "repository": "main"})
        assert wait_job(client, started.json()["id"])["state"] == "succeeded"
    browser.set_page_load_timeout(300)  # a folder's page waits for the libguestfs appliance
    _log_in(browser, server, "operator")
    browser.get(f"{server.url}/console/backups?repository=main&vm=files01")
    _click(browser, browser.find_element(By.CSS_SELECTOR, "#backups tr.backup a.browse"))
    names = [row.get_attribute("data-name") for row in browser.find_elements(By.CSS_SELECTOR, "#files tr.entry")]
    assert {"etc", "srv"} <= set(names), browser.page_source[:1000]
    for name in ("etc", "srv"):
        browser.find_element(By.CSS_SELECTOR, f'#files tr.entry[data-name="{name}"] input[type=checkbox]').click()
    _shot(browser, tmp_path, "files")
    _click(browser, browser.find_element(By.ID, "restore-files"))
    _wait_for_job(browser, "files")
    target = Path(files_site.settings["restore_root"]) / "files01-files"
    guest = files_site.root / "guest"
    assert (target / "etc" / "hostname").read_text() == "files01\n"
    assert (target / "srv" / "data" / "report.csv").read_bytes() == (guest / "srv/data/report.csv").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["etc", "srv"]


def test_a_kvm_backup_restored_as_a_new_vm_from_the_console(
    browser: webdriver.Chrome, server_factory: Callable[..., ServerProcess], site: Site, tmp_path: Path
) -> None:
    libvirt = pytest.importorskip("libvirt", reason="the KVM provider's libvirt bindings are not installed")
    from genievm_kvm.testing import remove_vm, scratch_domain_xml

    if os.geteuid() != 0:
        pytest.skip("a VM through qemu:///system needs root here")
    conn = libvirt.open("qemu:///system")
    name = f"genievm-console-{secrets.token_hex(3)}"
    image = tmp_path / f"{name}-vda.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 256k", str(image)], check=True, capture_output=True)
    made = [conn.defineXML(scratch_domain_xml(name, {"vda": (image, "qcow2")}))]
    site.settings["providers"]["kvm"] = {"plugin": "kvm", "options": {"uri": "qemu:///system"}}
    try:
        server = server_factory()
        with server.client("operator") as client:
            started = client.post("/api/v1/jobs/backup", json={"provider": "kvm", "vm": name, "repository": "main"})
            assert wait_job(client, started.json()["id"])["state"] == "succeeded"
        _log_in(browser, server, "operator")
        browser.get(f"{server.url}/console/backups?repository=main&vm={name}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#backups tr.backup")) == 1  # found by the VM's name
        Select(browser.find_element(By.ID, "restore-provider")).select_by_value("kvm")
        browser.find_element(By.ID, "restore-name").send_keys(f"{name}-copy")
        folder = browser.find_element(By.ID, "restore-path")
        folder.clear()
        folder.send_keys("new-vms")
        _shot(browser, tmp_path, "restore-new-vm")
        _click(browser, browser.find_element(By.ID, "start-restore"))
        _wait_for_job(browser, "restore")
        copy = conn.lookupByName(f"{name}-copy")
        made.append(copy)
        disk = Path(site.settings["restore_root"]) / "new-vms" / f"{name}-copy-vda.qcow2"
        assert str(disk) in copy.XMLDesc() and str(image) not in copy.XMLDesc()
        assert not copy.isActive()
        converted = subprocess.run(
            ["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", str(image), str(disk)], capture_output=True, text=True
        )
        assert converted.returncode == 0, converted.stdout + converted.stderr
    finally:
        for dom in made:
            remove_vm(dom)
        conn.close()
