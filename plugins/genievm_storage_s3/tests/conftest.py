"""A real S3 server for the S3 plugin's tests: moto's server mode over HTTP on 127.0.0.1.

``scripts/test.sh`` starts one (``scripts/services/s3.sh``) and exports its
URL as ``GENIEVM_TEST_S3_ENDPOINT``; without it (plain ``pytest``) the session
starts its own ``moto_server`` and stops it at the end. Each test gets fresh
buckets; the credentials are static test keys (moto accepts any unless IAM
authentication is switched on, as the credential tests do).

- ``s3_endpoint``: the server's URL.
- ``s3_admin``: a boto3 client for setting up and inspecting buckets.
- ``make_bucket(object_lock=False, versioned=False)``, ``s3_bucket``: new
  buckets, emptied and removed after the test.
- ``s3_options``: storage options that reach the server.
- ``iam_user(deny=[...], allow=[...])``: access keys of a new IAM user, with moto's IAM
  authentication (real signature and policy checks) on for the rest of the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from genievm_core.logging import reset_logging

sys.path.insert(0, str(Path(__file__).parent))  # s3_testbed, faulty_network (import mode importlib)

from s3_testbed import ENDPOINT_ENV, KEYS, REGION, admin_client, empty_and_remove, free_port, wait_until_up  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get(ENDPOINT_ENV)
    if given:
        wait_until_up(given)
        yield given
        return
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str) -> Any:
    return admin_client(s3_endpoint)


@pytest.fixture
def make_bucket(s3_admin: Any) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(*, object_lock: bool = False, versioned: bool = False) -> str:
        name = f"genievm-test-{uuid.uuid4().hex[:12]}"
        s3_admin.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        if versioned:
            s3_admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        made.append(name)
        return name

    yield make
    for name in made:
        empty_and_remove(s3_admin, name)


@pytest.fixture
def s3_bucket(make_bucket: Callable[..., str]) -> str:
    return make_bucket()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": s3_endpoint, "region": REGION, "addressing_style": "path", **KEYS}


@pytest.fixture
def iam_user(s3_endpoint: str) -> Iterator[Callable[..., dict[str, str]]]:
    """``iam_user(deny=[actions], allow=[actions])``: a new IAM user allowed ``allow`` (default all of S3)
    but ``deny``, and its storage options (access keys); moto's IAM authentication (it checks signatures
    and evaluates the policies) is switched on for the rest of the test."""
    iam = boto3.client(
        "iam",
        endpoint_url=s3_endpoint,
        region_name=REGION,
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
    )

    def authentication(count: str) -> None:
        request = urllib.request.Request(
            f"{s3_endpoint}/moto-api/reset-auth", data=count.encode(), headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()

    def make(deny: list[str] | None = None, allow: list[str] | None = None) -> dict[str, str]:
        name = f"genievm-{os.urandom(4).hex()}"
        iam.create_user(UserName=name)
        statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": allow or "s3:*", "Resource": "*"}]
        if deny:
            statements.append({"Effect": "Deny", "Action": deny, "Resource": "*"})
        policy = {"Version": "2012-10-17", "Statement": statements}
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        authentication("0")
        return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}

    try:
        yield make
    finally:
        authentication("inf")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No GENIEVM_* or AWS_* setting of the caller reaches a test (nor ~/.aws); logging reset after each."""
    for name in list(os.environ):
        if (name.startswith("GENIEVM_") and name != ENDPOINT_ENV) or name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "jobs.sqlite"))  # not the machine's job registry
    yield
    reset_logging()
