#!/usr/bin/env bash
# rlsproxy benchmark (issue 5): direct PostgreSQL vs PgBouncer (transaction mode)
# vs rlsproxy (session and transaction mode, guard on and off, strict mode), with pgbench,
# interleaved over several rounds, medians reported; plus the multi-tenant load
# generator, idle-connection memory, and the round trips over a delayed link.
#
#   bench/run.sh                          full run (BENCH_SECONDS=10, ROUNDS=3)
#   BENCH_SECONDS=3 ROUNDS=1 IDLE_CLIENTS=1000 bench/run.sh   quick run
#
# Settings (environment): BENCH_SECONDS (10), ROUNDS (3), SCALE (pgbench -s, 10),
# POOL_SIZE (8: PgBouncer default_pool_size and rlsproxy transaction-mode pool),
# WORKER_THREADS (1: rlsproxy [listen] worker_threads; PgBouncer is single-threaded too),
# IDLE_CLIENTS ("1000 10000": idle-connection counts for the memory test; 0 skips it),
# DELAY_MS (5: one-way delay added to the upstream link for the round-trip test; 0 skips it).
# Output: bench/results/<timestamp>.md and .png (printed at the end) and
# bench/results/<timestamp>/ (raw output of every run, runs.tsv, rss.tsv, logs).
# Installs PostgreSQL, PgBouncer and Python's venv with apt-get when missing, and
# matplotlib (for the chart) in bench/.venv with pip.
set -euo pipefail

usage() { sed -n '2,19s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

BENCH_SECONDS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-8}
WORKER_THREADS=${WORKER_THREADS:-1}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000 10000}
DELAY_MS=${DELAY_MS:-5}
MAX_IDLE=$(printf '%s\n' $IDLE_CLIENTS | sort -n | tail -n 1)
TENANTS=50       # tenants with bench documents (the load generator uses them all)
DOCS=2000        # documents per tenant

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=bn
# as_root, as_pg, find_pg_bindir, free_port, pg_start, pg_super, pg_create_app, ...
. "$REPO/deploy/lib/throwaway-pg.sh"
# start_pgbouncer, start_proxy, start_delay_relay, target_env, cpu_ticks, stop_targets, ...
. "$REPO/bench/lib/targets.sh"

# --- prerequisites -------------------------------------------------------------

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
PACKAGES=($(missing_postgres_package) $(missing_build_packages))
command -v pgbouncer >/dev/null || PACKAGES+=(pgbouncer)
command -v python3 >/dev/null || PACKAGES+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || PACKAGES+=(python3-venv)
apt_install "${PACKAGES[@]}"
PG_BIN=$(find_pg_bindir) || die "PostgreSQL installed, but no initdb found"
pg_tools
PGBENCH=$(command -v pgbench || echo "$PG_BIN/pgbench")
VENV="$REPO/bench/.venv"
if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    say "Installing matplotlib in $VENV (for the chart)"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'matplotlib>=3.7,<4' \
        || die "could not install matplotlib in $VENV"
fi
# 10,000 idle clients need as many descriptors in the proxies and the client script.
ulimit -n $((MAX_IDLE * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

say "Building rlsproxy and the load generator (cargo build --release)"
cargo build --release --bin rlsproxy --example loadgen
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/rlsproxy"
LOADGEN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/loadgen"
[ -x "$BIN" ] && [ -x "$LOADGEN" ] || die "no binaries under ${CARGO_TARGET_DIR:-$REPO/target}/release"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$REPO/bench/results"
RAW="$RESULTS/$STAMP"
mkdir -p "$RAW"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
        for log in "$WORK"/*.log; do
            [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    stop_targets
    # Keep the logs next to the results: errors seen during runs are in them.
    cp "$WORK"/*.log "$RAW/" 2>/dev/null
    pg_remove
    exit "$rc"
}
make_work rlsproxy-bench

# --- PostgreSQL: app (example RLS schema + bench documents), bench (pgbench) ---

PG_PORT=$(free_port)
say "Starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT (fsync=off) in $WORK"
pg_start 'max_connections = 300' 'shared_buffers = 256MB' >"$WORK/pg_start.log"
say "Applying migrations/*.sql to database app; $TENANTS tenants x $DOCS documents"
pg_create_app
load_bench_documents "$TENANTS" "$DOCS"
say "Database app_strict: a copy of app under strict mode's policies"
prepare_strict_db
pg_super -d postgres -c 'CREATE DATABASE bench OWNER app_proxy'
# PG15's public schema belongs to pg_database_owner, whose rights a NOINHERIT
# owner does not use: give the schema to app_proxy itself (as the tests do).
pg_super -d bench -c 'ALTER SCHEMA public OWNER TO app_proxy'
say "pgbench -i -s $SCALE in database bench (as app_proxy)"
PGPASSWORD=$PROXY_PW "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app_proxy bench \
    >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --- targets -----------------------------------------------------------------------

start_pgbouncer "$POOL_SIZE" $((MAX_IDLE + 200))
say "PgBouncer $(pgbouncer --version | head -n 1 | awk '{print $2}') on 127.0.0.1:$PGB_PORT"

configure_proxies $((MAX_IDLE + 1000))
export RLSPROXY__LOG__FILTER=warn
export RLSPROXY__JWT__ALGORITHMS=HS256
RLSPROXY__JWT__SECRET=$(random_secret)
export RLSPROXY__JWT__SECRET

# Session mode: a client holds a server connection, so the pool must fit 32 clients.
start_proxy session session 40
SESSION_PID=$STARTED_PID SESSION_PORT=$STARTED_PORT
start_proxy transaction transaction "$POOL_SIZE"
TXN_PID=$STARTED_PID TXN_PORT=$STARTED_PORT
start_proxy tx-noguard transaction "$POOL_SIZE" RLSPROXY__GUARD__ENABLED=false
NOGUARD_PID=$STARTED_PID NOGUARD_PORT=$STARTED_PORT
start_strict_proxy tx-strict transaction "$POOL_SIZE"
STRICT_PID=$STARTED_PID STRICT_PORT=$STARTED_PORT
say "rlsproxy ($WORKER_THREADS worker thread(s)): session mode on $SESSION_PORT (pool 40), transaction mode on $TXN_PORT (pool $POOL_SIZE), without guard on $NOGUARD_PORT, strict mode on $STRICT_PORT (database app_strict)"
TOKEN=$("$BIN" token --config "$CFG" --tenant 1 --sub bench --ttl 24h | tail -n 1 | tr -d '[:space:]')
[ -n "$TOKEN" ] || die "rlsproxy token printed no token"

DELAY_NOTE="not run (DELAY_MS=0)"
if [ "$DELAY_MS" -gt 0 ]; then
    # The delay sits on the upstream link: between pgbench and PostgreSQL for direct,
    # between rlsproxy and PostgreSQL for the proxy. Each path has exactly one delayed hop.
    if netem_available; then
        DELAY_NOTE="the kernel has netem, but this script delays in user space for both paths alike"
    else
        DELAY_NOTE="this kernel has no tc netem (CONFIG_NET_SCH_NETEM): bench/delay_relay.py, a user-space relay, delays each direction"
    fi
    start_delay_relay "$PG_PORT" "$DELAY_MS"
    RELAY_PID=$STARTED_PID RELAY_PORT=$STARTED_PORT
    start_proxy delayed transaction "$POOL_SIZE" RLSPROXY__UPSTREAM__PORT="$RELAY_PORT"
    DELAYED_PID=$STARTED_PID DELAYED_PORT=$STARTED_PORT
    say "Delayed upstream link: $DELAY_MS ms each way ($DELAY_NOTE)"
fi

# --- workloads -------------------------------------------------------------------

P="$REPO/bench/workloads"
PROXIES="rlsproxy-session rlsproxy-transaction"
READ="-f $P/rls-read.sql -D lo=$DOC_LO -D hi=$DOC_HI"
MIX="-f $P/rls-read.sql@8 -f $P/rls-write.sql@2 -D lo=$DOC_LO -D hi=$DOC_HI -D tenant=1"
APPSIDE_MIX="-f $P/appside-rls-read.sql@8 -f $P/appside-rls-write.sql@2 -D lo=$DOC_LO -D hi=$DOC_HI -D tenant=1"
# name | database | pgbench arguments | clients | targets | pgbench arguments for PgBouncer
# (PgBouncer runs the app-side pattern where the workload needs a tenant context).
# rlsproxy-tx-strict is transaction mode in strict mode (guard on), on app_strict (a copy of
# app): it runs the example-schema workloads only, next to transaction mode's default mode.
WORKLOADS=(
    "select-simple|bench|-S -M simple|1|direct pgbouncer $PROXIES|"
    "select-simple|bench|-S -M simple|8|direct pgbouncer $PROXIES|"
    "select-simple|bench|-S -M simple|32|direct pgbouncer $PROXIES rlsproxy-tx-noguard|"
    # PgBouncer 1.18 cannot run named prepared statements in transaction mode.
    "select-prepared|bench|-S -M prepared|8|direct $PROXIES|"
    "select-prepared|bench|-S -M prepared|32|direct $PROXIES rlsproxy-tx-noguard|"
    "appside-set_config|bench|-f $P/appside-select.sql -M simple|32|direct pgbouncer|"
    "rls-mix|app|$MIX -M simple|32|direct pgbouncer $PROXIES rlsproxy-tx-noguard rlsproxy-tx-strict|$APPSIDE_MIX -M simple"
    "rls-read|app|$READ -M simple|16|rlsproxy-transaction rlsproxy-tx-strict|"
    "rls-mix|app|$MIX -M simple|16|rlsproxy-transaction rlsproxy-tx-strict|"
)
if [ "$DELAY_MS" -gt 0 ]; then
    WORKLOADS+=(
        "delayed-select-simple|bench|-S -M simple|1|direct-delayed rlsproxy-delayed|"
        "delayed-select-prepared|bench|-S -M prepared|1|direct-delayed rlsproxy-delayed|"
    )
fi

# run_one ROUND NAME DATABASE ARGS CLIENTS TARGET: one pgbench run; appends to runs.tsv:
# round workload clients target tps lat_avg_ms p50_ms p99_ms failed status proxy_cpu_us
RUNS="$RAW/runs.tsv"
printf 'round\tworkload\tclients\ttarget\ttps\tlat_avg_ms\tp50_ms\tp99_ms\tfailed\tstatus\tproxy_cpu_us\n' >"$RUNS"
run_one() {
    local round=$1 name=$2 db=$3 args=$4 clients=$5 target=$6
    local tag="r$round-$name-c$clients-$target" out logdir jobs=1 status=0 env_line pid before after
    out="$RAW/$tag.txt"
    logdir="$WORK/txlog-$tag"
    mkdir -p "$logdir"
    [ "$clients" -ge 2 ] && jobs=2
    env_line=$(target_env "$target")
    pid=${env_line##*PROXY_PID=}
    before=$(cpu_ticks "$pid")
    # shellcheck disable=SC2086 # $args and $env_line are word lists on purpose
    env PGHOST=127.0.0.1 PGDATABASE="$db" PGSSLMODE=disable $env_line \
        "$PGBENCH" -n $args -c "$clients" -j "$jobs" -T "$BENCH_SECONDS" \
        --log --log-prefix="$logdir/tx" >"$out" 2>&1 || status=$?
    after=$(cpu_ticks "$pid")
    local tps lat failed p50 p99 txs cpu=-
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    if [ -n "$pid" ] && [ "${txs:-0}" -gt 0 ]; then
        cpu=$(awk -v t=$((after - before)) -v n="$txs" -v hz="$(getconf CLK_TCK)" \
            'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
    fi
    # Per-transaction log: column 3 is the latency in microseconds.
    read -r p50 p99 < <(cat "$logdir"/tx.* 2>/dev/null | awk '{print $3}' | sort -n \
        | awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit}
                 i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1
                 printf "%.3f %.3f\n", v[i50]/1000, v[i99]/1000}')
    rm -rf "$logdir"
    if grep -qiE 'error|aborted' "$out"; then status="${status}:errors"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$clients" "$target" \
        "${tps:--}" "${lat:--}" "$p50" "$p99" "${failed:--}" "$status" "$cpu" >>"$RUNS"
    printf '  round %s  %-23s c=%-3s %-21s tps=%-10s avg=%sms p99=%sms cpu=%sus/tx %s\n' "$round" "$name" \
        "$clients" "$target" "${tps:--}" "${lat:--}" "$p99" "$cpu" \
        "$([ "$status" = 0 ] || echo "FAILED ($status): $out")" >&2
}

say "Workloads: ${BENCH_SECONDS}s each, $ROUNDS round(s), targets interleaved"
for round in $(seq 1 "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r name db args clients targets bouncer_args <<<"$w"
        for target in $targets; do
            a=$args
            [ "$target" = pgbouncer ] && [ -n "$bouncer_args" ] && a=$bouncer_args
            run_one "$round" "$name" "$db" "$a" "$clients" "$target"
        done
    done
done

# --- the multi-tenant load generator through rlsproxy (transaction mode) -----------

LOADGEN_TSV="$RAW/loadgen.tsv"
printf 'mode\tsummary\n' >"$LOADGEN_TSV"
for mode in read mixed; do
    say "Load generator: 200 clients over $TENANTS tenants, $mode, ${BENCH_SECONDS}s (transaction mode)"
    line=$(LOADGEN_SECRET=$RLSPROXY__JWT__SECRET "$LOADGEN" --port "$TXN_PORT" --dbname app \
        --setup-url "host=$WORK port=$PG_PORT user=postgres dbname=app" \
        --clients 200 --tenants "$TENANTS" --duration "${BENCH_SECONDS}s" --mode "$mode" \
        2>"$RAW/loadgen-$mode.err" | tail -n 1) || line="FAILED: $(tail -n 3 "$RAW/loadgen-$mode.err" | tr '\n' ' ')"
    printf '  %s\n' "$line" >&2
    printf '%s\t%s\n' "$mode" "$line" >>"$LOADGEN_TSV"
done

# --- memory: RSS with idle client connections ----------------------------------

RSS="$RAW/rss.tsv"
printf 'target\tclients\trss_before_kib\trss_after_kib\topened\n' >"$RSS"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for count in $IDLE_CLIENTS; do
    [ "$count" -gt 0 ] || continue
    say "Memory: $count idle client connections (startup + auth, then idle)"
    for target in pgbouncer rlsproxy-transaction; do
        case "$target" in
            pgbouncer) pid=$PGB_PID port=$PGB_PORT user=app_proxy pw=$PROXY_PW ;;
            rlsproxy-transaction) pid=$TXN_PID port=$TXN_PORT user=bench pw=$TOKEN ;;
        esac
        before=$(rss_kib "$pid")
        # idle_clients.py opens the connections, prints how many succeeded, then
        # waits for a line on stdin before closing them: we read RSS meanwhile.
        coproc IDLE { python3 "$REPO/bench/idle_clients.py" 127.0.0.1 "$port" "$user" bench "$pw" "$count" 2>"$RAW/idle-$target-$count.err"; }
        read -r opened <&"${IDLE[0]}" || opened=0
        sleep 1
        after=$(rss_kib "$pid")
        echo done >&"${IDLE[1]}" || true
        wait "$IDLE_PID" || true
        printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$count" "$before" "$after" "$opened" >>"$RSS"
        printf '  %-21s opened %s: RSS %s KiB -> %s KiB\n' "$target" "$opened" "$before" "$after" >&2
    done
done

# --- report and chart ---------------------------------------------------------------

REPORT="$RESULTS/$STAMP.md"
CHART="$RESULTS/$STAMP.png"
"$VENV/bin/python" "$REPO/bench/chart.py" "$RUNS" "$CHART" "rlsproxy $(git -C "$REPO" describe --always --dirty 2>/dev/null), $(nproc) CPUs, $STAMP"
python3 "$REPO/bench/report.py" "$RUNS" "$RSS" "$LOADGEN_TSV" "$(basename "$CHART")" >"$REPORT" <<EOF
machine: $(uname -srm), $(nproc) CPUs, $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM
postgres: $("$PG_BIN/postgres" --version | awk '{print $3}') (fsync=off, shared_buffers=256MB), pgbench -s $SCALE; example schema with $TENANTS tenants x $DOCS documents
pgbouncer: $(pgbouncer --version | head -n 1 | awk '{print $2}') transaction mode, default_pool_size $POOL_SIZE, SCRAM
rlsproxy: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) release, $WORKER_THREADS worker thread(s), guard on unless noted; session pool 40, transaction pool $POOL_SIZE; rlsproxy-tx-strict: strict mode on app_strict
runs: $BENCH_SECONDS s each, $ROUNDS round(s) interleaved, pgbench -j 2 (1 for 1 client), tenant-1 token; direct sets the tenant with PGOPTIONS
delayed link: $DELAY_MS ms each way on the upstream link; $DELAY_NOTE
date: $STAMP
EOF
say "Report: $REPORT, chart: $CHART (raw output: $RAW/)"
cat "$REPORT"
