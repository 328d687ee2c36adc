#!/usr/bin/env bash
# Installs, with apt-get, everything rlsproxy's test suite (deploy/test.sh) calls that a
# fresh Debian machine with Rust lacks: the PostgreSQL server (initdb, pg_ctl, psql,
# pgbench, pgcrypto), openssl (test certificates), procps (kill), iproute2 (ip), libclang and a C
# compiler (libpg_query) and C++ (libFuzzer, fuzz/smoke.sh), the client matrix's toolchains (Python venv, Node.js/npm,
# a JDK and pgjdbc, Go and pgx, Ruby with ruby-pg and ActiveRecord, PHP with PDO pgsql),
# and promtool for deploy/validate-manifests.sh (Debian ships it in
# the prometheus package; where systemd runs, that package also enables a Prometheus
# server on :9090). Installs only what is missing; safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'install-deps: %s\n' "$*" >&2; exit 1; }
. deploy/lib/packages.sh

missing=($(missing_postgres_package) $(missing_build_packages))
command -v openssl >/dev/null || missing+=(openssl)
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
# The fault tests cut a network path: a veth pair into a network namespace (needs root).
command -v ip >/dev/null || missing+=(iproute2)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
missing+=($(missing_go_packages) $(missing_ruby_packages) $(missing_php_packages))
command -v promtool >/dev/null || missing+=(prometheus)
apt_install "${missing[@]}"
say "test prerequisites present"
