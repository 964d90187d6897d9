"""Test helpers for GenieVM and its plugins: the plugin author's kit (needs pytest).

Contract suites, each a class to subclass in a test module as ``Test...``
with a few fixtures of the plugin's own (see each module's docstring and
docs/plugin-guide.md):

- ``ProviderContract`` (``genievm_core/testing/provider.py``): providers;
- ``CBTSourceContract`` and ``CBTCase`` (``cbt.py``): changed-block sources;
- ``StorageContract`` (``storage.py``): storage targets;
- ``VerifierContract`` (``verifier.py``): verifiers.

Fixtures, from the pytest plugin ``genievm_core.testing.plugin`` (entry point
``pytest11``, loaded wherever genievm-core is installed): ``genievm_host``,
``memory_storage``, ``genievm_repository``.

Helpers:

- ``MemoryStorage``: a real storage target in a dict (it passes StorageContract).
- ``run_cli(monkeypatch, capsys, *args, env=...)``: the ``genievm`` command run
  in the test's process; ``(exit code, stdout, stderr)``. ``error_lines(stderr)``:
  its lines but the one warning an unencrypted repository prints at every open.
- ``mounted_tmpfs(folder, options)``: a real tmpfs mounted on ``folder`` for
  the block, for tests of full (``size=1m``) or read-only (``ro``) storage;
  the test is skipped, with the reason, where mounting is not allowed;
  ``read_only_view(source, at)``: ``source`` bind-mounted read-only on ``at``.
- ``genievm_core.testing.faults``: kill a ``genievm`` process at a seeded random
  moment and check what it left (``kill_after``, ``repository_problems``,
  ``registry_problems``, ``ImageFaultBed``); subclass ``ImageFaultBed`` to run the
  same kill campaign against a provider (the KVM plugin's ``kvm_faults.py``).

Names are imported on first use, so loading the pytest plugin stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genievm_core.testing.cbt import CBTCase, CBTSourceContract
    from genievm_core.testing.cli import error_lines, run_cli
    from genievm_core.testing.memory import MemoryStorage
    from genievm_core.testing.provider import ProviderContract
    from genievm_core.testing.storage import StorageContract
    from genievm_core.testing.tmpfs import mounted_tmpfs, read_only_view
    from genievm_core.testing.verifier import VerifierContract

__all__ = [
    "CBTCase",
    "CBTSourceContract",
    "MemoryStorage",
    "ProviderContract",
    "StorageContract",
    "VerifierContract",
    "error_lines",
    "mounted_tmpfs",
    "read_only_view",
    "run_cli",
]

_WHERE = {
    "CBTCase": "cbt",
    "CBTSourceContract": "cbt",
    "MemoryStorage": "memory",
    "ProviderContract": "provider",
    "StorageContract": "storage",
    "VerifierContract": "verifier",
    "error_lines": "cli",
    "mounted_tmpfs": "tmpfs",
    "read_only_view": "tmpfs",
    "run_cli": "cli",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"genievm_core.testing.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
