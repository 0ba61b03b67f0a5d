#!/usr/bin/env bash
# Installs the system packages visionledger needs (PostgreSQL server binaries and psql), when missing.
set -euo pipefail

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN:-}" ]; }

if have_server && command -v psql >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL server binaries are missing: install them (sudo apt-get install postgresql)," \
         "set PG_BIN, or set VISIONLEDGER_DATABASE_URL to use an existing server" >&2
    exit 1
fi
echo "installing PostgreSQL server binaries (apt-get)…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
# Debian's package starts its own cluster; the project runs its own, so leave the packaged one stopped.
(command -v service >/dev/null && service postgresql stop >/dev/null 2>&1) || true
