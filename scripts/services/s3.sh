# S3 server for the tests: moto's server mode (from the venv) on 127.0.0.1 and a free port.
# Sourced by scripts/test.sh after setup.sh:
#   s3_start   starts it, waits until it answers, exports GENIEVM_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   s3_stop    stops it (by its pid; safe to call twice)
# The S3 plugin's tests use that endpoint; without it they start a moto_server of their own.

s3_start() {
  local port
  port=$(.venv/bin/python scripts/services/net.py free-port)
  S3_LOG=$(mktemp -t genievm-moto-XXXXXX.log)
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$S3_LOG" 2>&1 &
  S3_PID=$!
  export GENIEVM_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  if ! .venv/bin/python scripts/services/net.py wait "$GENIEVM_TEST_S3_ENDPOINT/moto-api/" "$S3_PID"; then
    echo "s3: moto_server did not start on port $port:" >&2
    cat "$S3_LOG" >&2
    s3_stop
    return 1
  fi
  echo "s3: moto_server (pid $S3_PID) at $GENIEVM_TEST_S3_ENDPOINT" >&2
}

s3_stop() {
  if [[ -n ${S3_PID:-} ]]; then
    kill "$S3_PID" 2>/dev/null && wait "$S3_PID" 2>/dev/null
    S3_PID=
    rm -f "${S3_LOG:-}"
  fi
  return 0
}
