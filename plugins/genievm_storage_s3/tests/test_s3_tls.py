"""TLS to the S3 endpoint: verified by default, against a CA bundle, or not at all when told.

A second moto server serves HTTPS with a certificate made here for 127.0.0.1,
which no system trust store knows.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from genievm_storage_s3 import open_s3_storage
from s3_testbed import KEYS, REGION, free_port

from genievm_core.errors import StorageError


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "genievm test S3")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def https_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(folder)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with open(folder / "moto.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
            + ["-c", str(cert), "-k", str(key)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        admin = boto3.client(
            "s3", endpoint_url=url, region_name=REGION, verify=str(cert), **{f"aws_{k}": v for k, v in KEYS.items()}
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                admin.create_bucket(Bucket="tls-bucket")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, cert
    finally:
        proc.terminate()
        proc.wait(10)


def options(url: str, **extra: Any) -> dict[str, Any]:
    return {"endpoint_url": url, "region": REGION, "addressing_style": "path", "max_attempts": 2, **KEYS, **extra}


def test_an_unknown_certificate_is_refused(https_s3: tuple[str, Path]) -> None:
    store = open_s3_storage("s3://tls-bucket/repo", options(https_s3[0]))
    with pytest.raises(StorageError, match="TLS certificate verification failed for the S3 endpoint") as info:
        store.exists("config")
    assert "ca_bundle" in str(info.value) and "\n" not in str(info.value)


def test_a_ca_bundle_makes_it_trusted(https_s3: tuple[str, Path]) -> None:
    url, cert = https_s3
    store = open_s3_storage("s3://tls-bucket/repo", options(url, ca_bundle=str(cert)))
    store.put("config", b"{}")
    assert store.get("config") == b"{}"


def test_verification_is_skipped_only_when_told(https_s3: tuple[str, Path]) -> None:
    store = open_s3_storage("s3://tls-bucket/repo", options(https_s3[0], verify_tls="false"))
    store.put("manifests/m1", b"m")
    assert store.get("manifests/m1") == b"m"
