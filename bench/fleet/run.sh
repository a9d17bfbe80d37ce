#!/usr/bin/env bash
# Runs bench/fleet on SQLite and on a PostgreSQL server of its own, side by side: the server
# is made for the run in a temporary directory (initdb as the postgres user; its own port on
# 127.0.0.1; Debian's default durability, fsync on) and removed at the end. Flags go to the
# benchmark, e.g. ./bench/fleet/run.sh -events 1000000 -duration 20s.
set -euo pipefail
cd "$(dirname "$0")/../.."
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$pgbin" ]; then
	echo "fleet: PostgreSQL is not installed: run scripts/test-deps.sh" >&2
	exit 1
fi
port="${FLEET_PG_PORT:-55432}"
dir="$(mktemp -d /tmp/dialtrap-bench-fleet.XXXXXX)"
chown postgres "$dir"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop() {
	as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap stop EXIT
as_pg "$pgbin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
	-o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=512MB" start >/dev/null
as_pg "$pgbin/psql" -h "$dir" -p "$port" -U postgres -qc "CREATE DATABASE fleet" >/dev/null
mkdir -p "$dir/sqlite"
go run ./bench/fleet -stores "sqlite:$dir/sqlite/dialtrap.db,postgres://postgres@127.0.0.1:$port/fleet?sslmode=disable" "$@"
