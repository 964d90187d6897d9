# PostgreSQL for the server's tests: Debian's postgresql, a private cluster in a temporary folder, run as the
# unprivileged user postgres (it refuses root), listening on 127.0.0.1 and a free port (its unix socket in
# that folder), trust authentication for local connections only. Sourced by scripts/test.sh after setup.sh:
#   postgres_start   starts it, waits until it answers, exports GENIEVM_TEST_POSTGRES_URL (a SQLAlchemy URL)
#   postgres_stop    stops it and removes its folder (safe to call twice)
# or run: `bash scripts/services/postgres.sh start` prints "FOLDER URL"; `... stop FOLDER` stops that one.
# The server's tests use that URL; without it they start a cluster of their own through this script.

_postgres_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [[ -z $bin ]]; then
    echo "postgres: Debian's postgresql is not installed (scripts/setup.sh installs it)" >&2
    return 1
  fi
  echo "$bin"
}

_postgres_as() {  # run a command as the postgres user when root, as ourselves otherwise
  if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_start() {
  local bin port here
  bin=$(_postgres_bin) || return 1
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  port=$(python3 "$here/net.py" free-port)
  PG_DIR=$(mktemp -d -t genievm-postgres-XXXXXX)
  chmod 755 "$PG_DIR"
  ((EUID == 0)) && chown postgres: "$PG_DIR"
  if ! _postgres_as "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1; then
    echo "postgres: initdb failed:" >&2
    cat "$PG_DIR/initdb.log" >&2
    rm -rf "$PG_DIR"
    return 1
  fi
  if ! _postgres_as "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off" start >/dev/null; then
    echo "postgres: the server did not start on port $port:" >&2
    cat "$PG_DIR/server.log" >&2
    rm -rf "$PG_DIR"
    return 1
  fi
  export GENIEVM_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  echo "postgres: a private cluster in $PG_DIR at $GENIEVM_TEST_POSTGRES_URL" >&2
}

postgres_stop() {
  local dir=${1:-${PG_DIR:-}} bin
  if [[ -n $dir && -d $dir ]]; then
    bin=$(_postgres_bin) || return 0
    _postgres_as "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$dir"
  fi
  PG_DIR=
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run, not sourced
  set -euo pipefail
  case ${1:-} in
    start) postgres_start && echo "$PG_DIR $GENIEVM_TEST_POSTGRES_URL" ;;
    stop) postgres_stop "${2:?the cluster folder postgres.sh start printed}" ;;
    *) echo "usage: postgres.sh start | stop FOLDER" >&2; exit 2 ;;
  esac
fi
