"""The AWS plugin's test fixtures, defined in ``aws_support`` (see its docstring).

They live there, not here, so that the tests can import its helpers by a name of their own: with
``--import-mode=importlib`` every folder's conftest is a module called ``conftest``, and in a whole-suite
run ``from conftest import ...`` finds the suite's (tests/conftest.py), not this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from aws_support import (  # noqa: E402
    _no_faults_left,
    _own_job_registry,
    aws_endpoint,
    aws_options,
    cli,
    ebs,
    ec2,
    make_instance,
    provider_options,
    repo,
)

__all__ = ["_no_faults_left", "_own_job_registry", "aws_endpoint", "aws_options", "cli", "ebs", "ec2",
           "make_instance", "provider_options", "repo"]  # fmt: skip
