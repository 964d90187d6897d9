"""Fixtures for the AWS plugin's tests: moto's EC2 and EBS over real HTTP, with volume contents (``moto_ebs``).

- ``aws_endpoint``: the server's URL (one for the session), with test credentials in the environment;
- ``ec2``, ``ebs``: boto3 clients to it, for the tests' own set-up and checks;
- ``make_instance(sizes_gib)``: a new instance with one volume per size (the first its root,
  ``/dev/sda1``; then ``/dev/sdf``, ``/dev/sdg``, ...); ``Instance.write(disk, offset, data)``
  writes a volume as its guest would;
- ``cli(*args)``: ``genievm ARGS`` in this process; ``aws_options``: the ``-o`` options that reach moto;
- ``repo``: a new unencrypted repository (1 MiB chunks) in ``tmp_path``.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto")
sys.path.insert(0, str(Path(__file__).parent))

import boto3  # noqa: E402
from moto_ebs import FAULTS, moto_aws, write_volume  # noqa: E402

from genievm_core.testing import run_cli  # noqa: E402

REGION = "eu-west-1"
ACCESS_KEY_ID = "AKIAGENIEVMTESTKEY01"
SECRET_ACCESS_KEY = "genievm-test-secret-never-logged-0123456789"
GiB = 1 << 30
DEVICES = ["/dev/sda1", "/dev/sdf", "/dev/sdg", "/dev/sdh"]


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Instance:
    __test__ = False

    id: str
    name: str
    volumes: dict[str, str]  # disk name (sda1, sdf, ...) → volume id

    def write(self, disk: str, offset: int, data: bytes) -> None:
        write_volume(self.volumes[disk], offset, data)


@pytest.fixture(autouse=True)
def _own_job_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENIEVM_JOB_DB", str(tmp_path / "jobs.sqlite"))


@pytest.fixture(autouse=True)
def _no_faults_left() -> Iterator[None]:
    yield
    FAULTS.clear()


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as m, moto_aws() as endpoint:
        m.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        m.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        m.delenv("AWS_PROFILE", raising=False)
        m.setenv("AWS_CONFIG_FILE", "/nonexistent/genievm-test-aws-config")
        m.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/genievm-test-aws-credentials")
        yield endpoint


@pytest.fixture
def provider_options(aws_endpoint: str) -> dict[str, Any]:
    return {"region": REGION, "endpointUrl": aws_endpoint}


@pytest.fixture
def aws_options(aws_endpoint: str) -> list[str]:
    return ["--provider", "aws", "-o", f"region={REGION}", "-o", f"endpointUrl={aws_endpoint}"]


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


@pytest.fixture(scope="session")
def ec2(aws_endpoint: str) -> Any:
    return _client("ec2", aws_endpoint)


@pytest.fixture(scope="session")
def ebs(aws_endpoint: str) -> Any:
    return _client("ebs", aws_endpoint)


def launch(ec2: Any, sizes_gib: list[int], name: str | None = None, kms_key: str | None = None) -> Instance:
    """An instance with one gp3 volume per size; encrypted with ``kms_key`` if given."""
    name = name or f"genievm-test-{secrets.token_hex(3)}"
    image = ec2.describe_images()["Images"][0]["ImageId"]
    encryption = {"Encrypted": True, "KmsKeyId": kms_key} if kms_key else {}
    mappings = [
        {"DeviceName": d, "Ebs": {"VolumeSize": s, "VolumeType": "gp3", **encryption}}
        for d, s in zip(DEVICES, sizes_gib, strict=False)
    ]
    answer = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        BlockDeviceMappings=mappings,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
    )
    instance = answer["Instances"][0]
    volumes = {m["DeviceName"].removeprefix("/dev/"): m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
    return Instance(instance["InstanceId"], name, volumes)


@pytest.fixture
def make_instance(ec2: Any) -> Iterator[Callable[..., Instance]]:
    made: list[Instance] = []

    def make(sizes_gib: list[int] | None = None, name: str | None = None, kms_key: str | None = None) -> Instance:
        instance = launch(ec2, sizes_gib or [1], name, kms_key)
        made.append(instance)
        return instance

    yield make
    if made:
        ec2.terminate_instances(InstanceIds=[i.id for i in made])


def genievm_snapshots(ec2: Any, **tags: str) -> set[str]:
    """Ids of the snapshots carrying every ``genievm:<key>=<value>`` given."""
    filters = [{"Name": f"tag:genievm:{k}", "Values": [v]} for k, v in tags.items()]
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=filters)["Snapshots"]}


def snapshot_content(ebs: Any, snapshot_id: str, size: int) -> bytes:
    """A snapshot's data, block by block through EBS direct (what a restored volume would hold)."""
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    data = bytearray(size)
    block = int(listed["BlockSize"])
    for entry in listed["Blocks"]:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=entry["BlockIndex"], BlockToken=entry["BlockToken"]
        )
        data[entry["BlockIndex"] * block : (entry["BlockIndex"] + 1) * block] = got["BlockData"].read()
    return bytes(data[:size])


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], aws_endpoint: str
) -> Callable[..., CLIResult]:
    def run(*args: str, check: bool = True) -> CLIResult:
        code, out, err = run_cli(monkeypatch, capsys, *args)
        if check and code != 0:
            raise AssertionError(f"genievm {' '.join(args)} exited {code}: {err}")
        return CLIResult(code, out, err)

    return run


@pytest.fixture
def repo(cli: Callable[..., CLIResult], tmp_path: Path) -> str:
    path = tmp_path / "repo"
    cli("repo", "init", str(path), "--chunk-size", str(1 << 20), "--encryption", "none")
    return str(path)
