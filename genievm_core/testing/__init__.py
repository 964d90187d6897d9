"""Test helpers for GenieVM and its plugins: the plugin author's kit (needs pytest).

- ``StorageContract``: the tests every storage target must pass. Subclass it
  in a test module as ``TestMyStorage(StorageContract)`` and override its
  ``storage`` fixture to return a fresh, empty target; pytest then runs every
  contract test against it (``genievm_core/testing/storage.py``).
- ``run_cli(monkeypatch, capsys, *args, env=...)``: the ``genievm`` command run
  in the test's process; ``(exit code, stdout, stderr)``.
- ``mounted_tmpfs(folder, options)``: a real tmpfs mounted on ``folder`` for
  the block, for tests of full (``size=1m``) or read-only (``ro``) storage;
  the test is skipped, with the reason, where mounting is not allowed.
- ``genievm_core.testing.faults``: kill a ``genievm`` process at a seeded random
  moment and check what it left (``kill_after``, ``repository_problems``,
  ``registry_problems``, ``ImageFaultBed``); subclass ``ImageFaultBed`` to run the
  same kill campaign against a provider (the KVM plugin's ``kvm_faults.py``).
"""

from __future__ import annotations

from genievm_core.testing.cli import run_cli
from genievm_core.testing.storage import StorageContract
from genievm_core.testing.tmpfs import mounted_tmpfs

__all__ = ["StorageContract", "mounted_tmpfs", "run_cli"]
