#!/usr/bin/env bash
# Installs the system packages visionledger needs, when missing: PostgreSQL server binaries and psql, and
# Debian's chromium for the browser test of the Streamlit app (Playwright drives it; never `playwright install`).
set -euo pipefail

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN:-}" ]; }

missing=()
if ! have_server || ! command -v psql >/dev/null; then
    missing+=(postgresql postgresql-client)
fi
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]}. Install them (sudo apt-get install ${missing[*]});" \
         "for PostgreSQL you may instead set PG_BIN, or VISIONLEDGER_DATABASE_URL to use an existing server;" \
         "without chromium the browser test is skipped" >&2
    have_server || exit 1
    exit 0
fi
echo "installing ${missing[*]} (apt-get)…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts its own cluster; the project runs its own, so leave the packaged one stopped.
(command -v service >/dev/null && service postgresql stop >/dev/null 2>&1) || true
