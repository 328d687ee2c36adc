#!/usr/bin/env bash
# Records the traffic of the test suite's real clients (tokio-postgres, psql, pgbench and
# the suite's raw-protocol clients) through the proxy, and turns it into the seed corpora in
# fuzz/seeds/ (see seeds.py and tests/common/tap.rs). Needs what `cargo test` needs (the
# PostgreSQL binaries). Extra arguments go to `cargo test` (default: the relay, differential,
# attacks, transaction and security suites).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
recordings="$(mktemp -d)"
trap 'rm -rf "$recordings"' EXIT
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--test relay --test differential --test attacks --test transaction --test security)
(cd "$root" && RLSPROXY_FUZZ_RECORD="$recordings" cargo test "${args[@]}")
python3 "$root/fuzz/seeds.py" "$recordings" "$root/fuzz/seeds"
