"""Fixtures of the workers' tests: the suite's (or a private) redis-server, PostgreSQL and S3 server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from worker_support import postgres_cluster, redis_server  # noqa: E402

_REDIS = os.environ.get("GENIEVM_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A running redis-server: the suite's (scripts/test.sh starts it), else a private one for this session."""
    if _REDIS:
        yield _REDIS
        return
    with redis_server() as (url, _folder):
        yield url


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url
