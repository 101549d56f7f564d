#!/usr/bin/env bash
# Make sure a PostgreSQL server runs on 127.0.0.1 for the storage tests, and print its URL.
# Uses RAYDIO_TEST_POSTGRES_URL when set; otherwise installs (as root) and starts Debian's PostgreSQL.
set -euo pipefail
if [ -n "${RAYDIO_TEST_POSTGRES_URL:-}" ]; then echo "$RAYDIO_TEST_POSTGRES_URL"; exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package) for the storage tests ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start >&2
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
psql_admin() { su postgres -c "psql -p $port -qtAc \"$1\""; }
[ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='raydio'")" = 1 ] || psql_admin "CREATE ROLE raydio LOGIN PASSWORD 'raydio'" >&2
[ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='raydio_test'")" = 1 ] || psql_admin "CREATE DATABASE raydio_test OWNER raydio" >&2
echo "postgresql+psycopg://raydio:raydio@127.0.0.1:$port/raydio_test"
