# Redis for the workers' tests (genievm worker: Celery's broker and result backend, the VM locks and caps):
# Debian's redis-server, a private instance in a temporary folder, on 127.0.0.1 and a free port, its queue
# kept in an append-only file in that folder (so queued jobs outlive a restart, as on a real broker host), no
# systemd. Sourced by scripts/test.sh after setup.sh:
#   redis_start   starts it, waits until it answers, exports GENIEVM_TEST_REDIS_URL (redis://127.0.0.1:PORT/0)
#   redis_stop    stops it and removes its folder (safe to call twice)
# or run: `bash scripts/services/redis.sh start [PORT [FOLDER]]` prints "FOLDER URL"; `... pause FOLDER`
# stops that one and keeps its folder (its data), for a `start PORT FOLDER` again; `... stop FOLDER` stops
# it and removes the folder. The workers' tests use GENIEVM_TEST_REDIS_URL; their broker-down test runs an
# instance of its own through this script.

redis_start() {
  local here port
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis: Debian's redis-server is not installed (scripts/setup.sh installs it)" >&2
    return 1
  fi
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  port=${1:-$(python3 "$here/net.py" free-port)}
  REDIS_DIR=${2:-$(mktemp -d -t genievm-redis-XXXXXX)}
  redis-server --bind 127.0.0.1 --port "$port" --dir "$REDIS_DIR" --save '' --appendonly yes \
    --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" >/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      export GENIEVM_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
      echo "redis: a private instance in $REDIS_DIR at $GENIEVM_TEST_REDIS_URL" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "redis: the server did not answer on port $port:" >&2
  cat "$REDIS_DIR/redis.log" >&2
  redis_stop "$REDIS_DIR"
  return 1
}

_redis_kill() {  # stop the instance of folder $1 (it writes its append-only file first)
  local pid
  if [[ -f $1/redis.pid ]]; then
    pid=$(cat "$1/redis.pid")
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$1/redis.pid"
  fi
}

redis_stop() {
  local dir=${1:-${REDIS_DIR:-}}
  if [[ -n $dir && -d $dir ]]; then
    _redis_kill "$dir"
    rm -rf "$dir"
  fi
  REDIS_DIR=
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run, not sourced
  set -euo pipefail
  case ${1:-} in
    start) redis_start "${2:-}" "${3:-}" && echo "$REDIS_DIR $GENIEVM_TEST_REDIS_URL" ;;
    pause) _redis_kill "${2:?the folder redis.sh start printed}" ;;
    stop) redis_stop "${2:?the folder redis.sh start printed}" ;;
    *) echo "usage: redis.sh start [PORT [FOLDER]] | pause FOLDER | stop FOLDER" >&2; exit 2 ;;
  esac
fi
