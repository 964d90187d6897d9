"""Constants and helpers of the S3 tests: the test credentials, waiting for a server, buckets."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.config import Config

ENDPOINT_ENV = "GENIEVM_TEST_S3_ENDPOINT"
REGION = "us-east-1"
KEYS = {"access_key_id": "genievm-test-key", "secret_access_key": "genievm-test-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no S3 server answered at {url} within {timeout} s")


def admin_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEYS["access_key_id"],
        aws_secret_access_key=KEYS["secret_access_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )


def empty_and_remove(client: Any, bucket: str) -> None:
    """Every version of every object (bypassing governance retention), then the bucket."""
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            objects = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]
            ]
            for start in range(0, len(objects), 1000):
                client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": objects[start : start + 1000], "Quiet": True},
                    BypassGovernanceRetention=True,
                )
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        pass  # compliance retention keeps some objects: moto forgets them when it stops
