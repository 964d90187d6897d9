#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up first, then pytest over core and plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
