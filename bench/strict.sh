#!/usr/bin/env bash
# Strict mode's cost, quickly: rlsproxy in transaction mode (guard on), default mode on
# database app vs strict mode on app_strict (the same data under migrations/0003's strict
# policies), pgbench with 16 clients, a primary-key read (rls-read) and the RLS read/write
# mix (rls-mix), default and strict interleaved over ROUNDS rounds; prints each run and the
# median TPS ratio strict / default per workload. bench/run.sh has the same rows in full.
#
#   bench/strict.sh                           (BENCH_SECONDS=10, ROUNDS=3)
#   BENCH_SECONDS=5 ROUNDS=3 bench/strict.sh  quick
#
# Settings (environment): BENCH_SECONDS, ROUNDS, CLIENTS (16), POOL_SIZE (8),
# WORKER_THREADS (1), TENANTS (50), DOCS (200 documents per tenant).
set -euo pipefail

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

BENCH_SECONDS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
POOL_SIZE=${POOL_SIZE:-8}
WORKER_THREADS=${WORKER_THREADS:-1}
TENANTS=${TENANTS:-50}
DOCS=${DOCS:-200}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/strict: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=bs
# shellcheck source=../deploy/lib/throwaway-pg.sh
. "$REPO/deploy/lib/throwaway-pg.sh"
# shellcheck source=lib/targets.sh
. "$REPO/bench/lib/targets.sh"

apt_install $(missing_postgres_package) $(missing_build_packages)
PG_BIN=$(find_pg_bindir) || die "PostgreSQL installed, but no initdb found"
pg_tools
PGBENCH=$(command -v pgbench || echo "$PG_BIN/pgbench")
cargo build --release --bin rlsproxy
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/rlsproxy"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_targets
    pg_remove
    exit "$rc"
}
make_work rlsproxy-strict-bench

PG_PORT=$(free_port)
say "Throwaway PostgreSQL on 127.0.0.1:$PG_PORT; $TENANTS tenants x $DOCS documents"
pg_start 'max_connections = 100' >"$WORK/pg_start.log"
pg_create_app
load_bench_documents "$TENANTS" "$DOCS"
prepare_strict_db

configure_proxies 100
export RLSPROXY__LOG__FILTER=warn RLSPROXY__JWT__ALGORITHMS=HS256
RLSPROXY__JWT__SECRET=$(random_secret)
export RLSPROXY__JWT__SECRET
start_proxy default transaction "$POOL_SIZE"
DEFAULT_PORT=$STARTED_PORT
start_strict_proxy strict transaction "$POOL_SIZE"
STRICT_PORT=$STARTED_PORT
TOKEN=$("$BIN" token --config "$CFG" --tenant 1 --sub bench --ttl 24h | tail -n 1 | tr -d '[:space:]')

P="$REPO/bench/workloads"
declare -A ARGS=(
    [rls-read]="-f $P/rls-read.sql -D lo=$DOC_LO -D hi=$DOC_HI"
    [rls-mix]="-f $P/rls-read.sql@8 -f $P/rls-write.sql@2 -D lo=$DOC_LO -D hi=$DOC_HI -D tenant=1"
)
declare -A TPS=()
say "pgbench: $CLIENTS clients, ${BENCH_SECONDS}s per run, $ROUNDS round(s), default and strict interleaved"
for round in $(seq 1 "$ROUNDS"); do
    for workload in rls-read rls-mix; do
        for mode in default strict; do
            port=$DEFAULT_PORT
            [ "$mode" = strict ] && port=$STRICT_PORT
            # shellcheck disable=SC2086 # the workload's arguments are a word list
            out=$(PGHOST=127.0.0.1 PGPORT=$port PGUSER=bench PGPASSWORD=$TOKEN PGDATABASE=app PGSSLMODE=disable \
                "$PGBENCH" -n ${ARGS[$workload]} -M simple -c "$CLIENTS" -j 2 -T "$BENCH_SECONDS" 2>&1) \
                || die "pgbench failed ($workload, $mode): $out"
            grep -qiE 'error|aborted' <<<"$out" && die "errors in pgbench ($workload, $mode): $out"
            tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
            TPS[$workload-$mode]+="$tps "
            printf '  round %s  %-8s %-7s tps=%s\n' "$round" "$workload" "$mode" "$tps" >&2
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
for workload in rls-read rls-mix; do
    d=$(median <<<"${TPS[$workload-default]}")
    s=$(median <<<"${TPS[$workload-strict]}")
    awk -v w="$workload" -v d="$d" -v s="$s" \
        'BEGIN {printf "%-8s default %8.0f tps  strict %8.0f tps  strict/default %.2f\n", w, d, s, s / d}'
done
