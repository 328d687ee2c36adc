#!/usr/bin/env bash
# Runs rlsproxy's test suite on a fresh Debian/Ubuntu machine: installs what the
# tests need when it is missing (PostgreSQL server and client, openssl), then
# checks formatting and lints, runs every test against a real PostgreSQL that
# the tests start themselves (initdb into a temp dir, random port), and the
# real-driver client matrix (which installs its own drivers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || command -v pgbench >/dev/null || missing+=(postgresql-contrib)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v openssl >/dev/null || missing+=(openssl)
# The statement guard links libpg_query through bindgen, which needs libclang and a C compiler.
if command -v dpkg >/dev/null; then
    dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
fi
command -v cc >/dev/null || missing+=(build-essential)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}" >&2
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
# Real drivers through the proxy in both pool modes (installs them into tests/clients/.deps).
tests/clients/run.sh
