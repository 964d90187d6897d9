"""What goes wrong with AWS ends in one line and its exit code; throttling and damaged blocks are retried.

Throttling and damaged blocks are injected into moto's answers (``moto_ebs.FAULTS``: real HTTP,
real botocore parsing); missing permissions and refused credentials use moto's own IAM checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_support import REGION, CLIResult, Instance
from moto.core.authorization import ActionAuthenticatorMixin
from moto_ebs import CORRUPT, FAULTS, throttled

from genievm_core.testing import error_lines

CLI = Callable[..., CLIResult]
MiB = 1 << 20


def one_line(result: CLIResult, code: int) -> str:
    """The error line, the only one but the log's warnings (each retry is one)."""
    assert result.code == code, result.err
    lines = [line for line in error_lines(result.err) if "[warning  ] storage.retry" not in line]
    assert len(lines) == 1, lines
    return lines[0].removeprefix("genievm: error: ")


@pytest.fixture
def instance(make_instance: Callable[..., Instance]) -> Instance:
    made = make_instance([1])
    made.write("sda1", 0, os.urandom(2 * MiB))
    return made


def test_an_unknown_region_is_one_line(cli: CLI, aws_endpoint: str) -> None:
    result = cli(
        "vms", "--provider", "aws", "-o", "region=mars-north-1", "-o", f"endpointUrl={aws_endpoint}", check=False
    )
    assert one_line(result, 3) == (
        "invalid providerOptions: region: 'mars-north-1' is not an AWS region (`aws ec2 describe-regions` lists them)"
    )


def test_a_bad_option_is_one_line(cli: CLI, aws_options: list[str]) -> None:
    result = cli("vms", *aws_options, "-o", "restoreTo=tape", check=False)
    assert one_line(result, 3) == (
        "invalid providerOptions: restoreTo: must be one of instance, volumes, snapshots, not 'tape'"
    )


def test_an_endpoint_botocore_cannot_use_is_one_line(cli: CLI) -> None:
    result = cli("vms", "--provider", "aws", "-o", f"region={REGION}", "-o", "endpointUrl=not a url", check=False)
    assert one_line(result, 3) == "invalid providerOptions: endpointUrl: Invalid endpoint: not a url"


@pytest.mark.parametrize("vm", ["i-0123456789abcdef0", "no-such-instance"])
def test_an_unknown_instance_is_one_line(cli: CLI, aws_options: list[str], tmp_path: Any, vm: str) -> None:
    result = cli("backup", "--vm", vm, "--repo", str(tmp_path / "repo"), *aws_options, check=False)
    if result.code == 14:  # no repository yet: make one, so that the instance is what fails
        cli("repo", "init", str(tmp_path / "repo"), "--encryption", "none")
        result = cli("backup", "--vm", vm, "--repo", str(tmp_path / "repo"), *aws_options, check=False)
    assert one_line(result, 7) == f"no VM {vm} on provider aws (region {REGION})"


def test_throttling_is_retried_then_one_line(cli: CLI, instance: Instance, repo: str, aws_options: list[str]) -> None:
    FAULTS["get_snapshot_block"] = [throttled(), throttled()]
    manifest = cli("backup", "--vm", instance.id, "--repo", repo, *aws_options, "--json").json()
    assert manifest["disks"][0]["stats"]["bytes_read"] == 2 * MiB
    assert FAULTS["get_snapshot_block"] == [], "both throttled answers were met, and retried"

    FAULTS["get_snapshot_block"] = [throttled() for _ in range(3)]
    result = cli("backup", "--vm", instance.id, "--repo", repo, *aws_options, "-o", "maxAttempts=2", check=False)
    line = one_line(result, 5)
    assert line.startswith("provider aws: ebs:GetSnapshotBlock on snap-")
    assert line.endswith("AWS is throttling requests (RequestThrottledException), still after 2 tries")


def test_a_damaged_block_is_read_again_then_fails_the_backup(
    cli: CLI, instance: Instance, repo: str, aws_options: list[str], ec2: Any
) -> None:
    FAULTS["get_snapshot_block"] = [CORRUPT]
    cli("backup", "--vm", instance.id, "--repo", repo, *aws_options)
    assert FAULTS["get_snapshot_block"] == []
    FAULTS["get_snapshot_block"] = [CORRUPT] * 4  # the chunk's two blocks, each read twice
    result = cli("backup", "--vm", instance.id, "--repo", repo, *aws_options, "-o", "maxAttempts=2", check=False)
    assert one_line(result, 5).endswith("does not match its SHA-256 checksum, still after 2 tries")
    tagged = ec2.describe_snapshots(Filters=[{"Name": "tag:genievm:instance", "Values": [instance.id]}])["Snapshots"]
    assert tagged == [], "the failed backup removed its snapshots"


@pytest.fixture
def iam_enforced(aws_endpoint: str) -> Iterator[dict[str, str]]:
    """moto checks IAM from now on; yields the keys of a user allowed to describe EC2 and nothing else."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=aws_endpoint)
    name = f"genievm-reader-{os.urandom(3).hex()}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="describe-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    from moto import settings

    with pytest.MonkeyPatch.context() as m:  # undone before the instances are terminated
        m.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        m.setattr(ActionAuthenticatorMixin, "request_count", 0)
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_a_missing_permission_is_one_line_naming_the_action(
    cli: CLI, instance: Instance, repo: str, aws_options: list[str], iam_enforced: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for key, value in iam_enforced.items():
        monkeypatch.setenv(key, value)
    result = cli("backup", "--vm", instance.id, "--repo", repo, *aws_options, check=False)
    assert one_line(result, 5) == (
        f"provider aws: permission denied: ec2:CreateSnapshots on {instance.id} (grant it to this role or user)"
    )


def test_refused_credentials_are_one_line(
    cli: CLI, aws_options: list[str], iam_enforced: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    result = cli("vms", *aws_options, check=False)
    line = one_line(result, 6)
    assert line.startswith(f"authentication failed for AWS in region {REGION}: the credentials were refused (")
    assert "AKIAUNKNOWNKEY000000" not in result.err


def test_no_credentials_is_one_line(cli: CLI, aws_options: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    result = cli("vms", *aws_options, check=False)
    assert one_line(result, 6).startswith("authentication failed for AWS: no credentials found")
