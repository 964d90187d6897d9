# vSphere API simulator for the VMware plugin's tests: govmomi's vcsim built from Debian's sources with
# GenieVM's launcher (plugins/genievm_vmware/tests/vcsim/), on 127.0.0.1 and a free port, TLS with a
# self-signed certificate. Sourced by scripts/test.sh after setup.sh:
#   vcsim_start   builds it when needed, starts it, waits until /about answers, and exports
#                 GENIEVM_TEST_VCSIM_URL (https://127.0.0.1:PORT/sdk), GENIEVM_TEST_VCSIM_USER,
#                 GENIEVM_TEST_VCSIM_PASSWORD and GENIEVM_TEST_VCSIM_CA_FILE (its certificate, PEM)
#   vcsim_stop    stops it (SIGTERM by its pid: it removes its datastore folders; safe to call twice)
# Without GENIEVM_TEST_VCSIM_URL the VMware tests start a vcsim of their own.

vcsim_start() {
  local binary port
  binary=$(bash plugins/genievm_vmware/tests/vcsim/build.sh) || return 1
  port=$(.venv/bin/python scripts/services/net.py free-port)
  VCSIM_DIR=$(mktemp -d -t genievm-vcsim-XXXXXX)
  export GENIEVM_TEST_VCSIM_USER=genievm GENIEVM_TEST_VCSIM_PASSWORD
  GENIEVM_TEST_VCSIM_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
  export GENIEVM_TEST_VCSIM_CA_FILE=$VCSIM_DIR/ca.pem
  TMPDIR=$VCSIM_DIR "$binary" -listen "127.0.0.1:$port" -username "$GENIEVM_TEST_VCSIM_USER" \
    -password "$GENIEVM_TEST_VCSIM_PASSWORD" -ca-file "$GENIEVM_TEST_VCSIM_CA_FILE" >"$VCSIM_DIR/log" 2>&1 &
  VCSIM_PID=$!
  export GENIEVM_TEST_VCSIM_URL="https://127.0.0.1:$port/sdk"
  if ! .venv/bin/python scripts/services/net.py wait "https://127.0.0.1:$port/about" "$VCSIM_PID" \
    "$GENIEVM_TEST_VCSIM_CA_FILE"; then
    echo "vcsim: did not start on port $port:" >&2
    cat "$VCSIM_DIR/log" >&2
    vcsim_stop
    return 1
  fi
  echo "vcsim: pid $VCSIM_PID at $GENIEVM_TEST_VCSIM_URL" >&2
}

vcsim_stop() {
  if [[ -n ${VCSIM_PID:-} ]]; then
    kill -TERM "$VCSIM_PID" 2>/dev/null && wait "$VCSIM_PID" 2>/dev/null
    VCSIM_PID=
    rm -rf "${VCSIM_DIR:-}"
  fi
  return 0
}
