#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set-up first, then the linters (ruff, mypy strict on
# the core, the plugins and the example plugin), the services the tests talk to (libvirtd, an S3 server,
# vcsim), and pytest over the core and every plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services/libvirtd.sh  # real libvirtd + QEMU/KVM for the KVM plugin's tests
.venv/bin/ruff check genievm_core plugins tests docs/examples packaging benchmarks scripts
.venv/bin/mypy
.venv/bin/mypy docs/examples/genievm-dirvm/genievm_dirvm  # the example plugin, strict like the core
.venv/bin/mypy --strict packaging/manpages.py packaging/debian/stage.py  # the packaging scripts
# a real S3 server for the S3 plugin's tests (scripts/services/s3.sh) and the vSphere API simulator for the
# VMware plugin's (scripts/services/vcsim.sh), stopped however pytest ends
source scripts/services/s3.sh
source scripts/services/vcsim.sh
source scripts/services/postgres.sh  # the server's tests on PostgreSQL too
source scripts/services/redis.sh  # the workers' broker (genievm worker)
# the tests' temporary folders under a short path: the unix sockets made in them (nbdkit's, QEMU's) must fit
# in 107 bytes, and pytest-xdist adds a folder per worker to pytest's own /tmp/pytest-of-USER/pytest-N
basetemp=$(mktemp -d /tmp/gvt.XXXXXX)
trap 's3_stop; vcsim_stop; postgres_stop; redis_stop; rm -rf "$basetemp"' EXIT
s3_start
vcsim_start
postgres_start
redis_start
# one worker per CPU (pytest-xdist), each taking whole test files, so that a file's module fixtures are built once
.venv/bin/python -m pytest -n "${GENIEVM_TEST_WORKERS:-auto}" --dist loadfile --basetemp "$basetemp" "$@"
