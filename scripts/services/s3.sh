# S3 server for the tests: moto's server mode (from the venv) on 127.0.0.1 and a free port.
# Sourced by scripts/test.sh after setup.sh:
#   s3_start   starts it, waits until it answers, exports GENIEVM_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#   s3_stop    stops it (by its pid; safe to call twice)
# The S3 plugin's tests use that endpoint; without it they start a moto_server of their own.

s3_start() {
  local port
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  S3_LOG=$(mktemp -t genievm-moto-XXXXXX.log)
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$S3_LOG" 2>&1 &
  S3_PID=$!
  export GENIEVM_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  if ! .venv/bin/python - "$GENIEVM_TEST_S3_ENDPOINT" "$S3_PID" <<'PY'
import os, sys, time, urllib.error, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)  # it answers
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)
PY
  then
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
