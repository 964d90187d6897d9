#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up and services first, then the linters (ruff, mypy
# strict on the core) and pytest over the core and every plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services/libvirtd.sh  # real libvirtd + QEMU/KVM for the KVM plugin's tests
.venv/bin/ruff check genievm_core plugins
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
