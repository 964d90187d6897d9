"""Which transport a backup or restore uses, and why (logged); VDDK never half-chosen."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import structlog
from genievm_vmware.connection import Endpoint
from genievm_vmware.options import VMwareOptions
from genievm_vmware.transport.select import choose_transport

from genievm_core.errors import ConfigError
from genievm_core.plugin.options import parse_options


@pytest.fixture
def ep(vcsim):
    return Endpoint(vcsim.host, vcsim.port, vcsim.user, vcsim.password, vcsim.ca_file)


@pytest.fixture
def no_vddk_module(monkeypatch):
    """As if this genievm-vmware had no VDDK transport module (None in sys.modules makes imports fail)."""
    monkeypatch.setitem(sys.modules, "genievm_vmware.transport.vddk", None)


def checked(options):
    return parse_options(VMwareOptions, options, "providerOptions")


def choose(options, ep, **env):
    with structlog.testing.capture_logs() as logs:
        transport = choose_transport(checked(options), ep, "vmware_soap_session=x", environ=env)
    transport.close()
    return transport.name, [e for e in logs if e["event"] == "vmware.transport"]


def test_auto_without_vddk_is_https_and_says_why(ep):
    name, logs = choose({}, ep)
    assert name == "https"
    assert logs == [{"event": "vmware.transport", "log_level": "info", "transport": "https",
                     "reason": "auto: no vddkLibDir or VDDK_LIBDIR"}]  # fmt: skip


def test_https_when_asked(ep, tmp_path):
    name, logs = choose({"transport": "https", "vddkLibDir": str(tmp_path)}, ep)
    assert name == "https" and logs[0]["reason"] == "transport=https"


def test_auto_falls_back_to_https_when_vddk_cannot_be_used(ep, tmp_path, no_vddk_module):
    name, logs = choose({}, ep, VDDK_LIBDIR=str(tmp_path))
    assert name == "https"
    assert logs[0]["reason"].startswith(f"auto: VDDK at {tmp_path} cannot be used: ")


def test_vddk_asked_for_without_a_folder_is_a_config_error(ep):
    with pytest.raises(ConfigError, match="transport vddk needs vddkLibDir"):
        choose_transport(checked({"transport": "vddk"}), ep, "c", environ={})


def test_vddk_asked_for_without_the_module_is_a_config_error(ep, no_vddk_module):
    with pytest.raises(ConfigError, match="this genievm-vmware has no VDDK transport"):
        choose_transport(checked({"transport": "vddk", "vddkLibDir": "/nonexistent"}), ep, "c", environ={})


def test_unknown_transport_is_a_config_error(ep):
    with pytest.raises(ConfigError, match="transport: must be one of auto, https, vddk, not 'nfc'"):
        choose_transport(checked({"transport": "nfc"}), ep, "c", environ={})


def test_vddk_gets_the_thumbprint_of_the_verified_certificate(ep):
    import hashlib
    import ssl

    from genievm_vmware.transport.select import server_thumbprint

    der = ssl.PEM_cert_to_DER_cert(Path(ep.ca_file).read_text())
    expected = hashlib.sha1(der).hexdigest().upper()
    assert server_thumbprint(ep).replace(":", "") == expected
