#!/usr/bin/env bash
# rlsproxy benchmark (issue 5, first version): direct PostgreSQL vs PgBouncer
# (transaction mode) vs rlsproxy (session and transaction mode) with pgbench,
# interleaved over several rounds, medians reported.
#
#   bench/run.sh                          full run (BENCH_SECONDS=10, ROUNDS=3)
#   BENCH_SECONDS=5 ROUNDS=1 bench/run.sh quick run
#
# Settings (environment): BENCH_SECONDS (10), ROUNDS (3), SCALE (pgbench -s, 10),
# POOL_SIZE (8: PgBouncer default_pool_size and rlsproxy transaction-mode pool),
# IDLE_CLIENTS ("1000 10000": counts for the idle-connection memory test; 0 skips it).
# Output: bench/results/<timestamp>.md (printed at the end) and
# bench/results/<timestamp>/ (raw pgbench output of every run, runs.tsv).
# Installs PostgreSQL and PgBouncer with apt-get when missing.
set -euo pipefail

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; "") ;; *) usage >&2; exit 2 ;; esac

BENCH_SECONDS=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-8}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000 10000}
MAX_IDLE=$(printf '%s\n' $IDLE_CLIENTS | sort -n | tail -n 1)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=bn
# as_root, as_pg, find_pg_bindir, free_port, pg_start, pg_super, pg_create_app, ...
. "$REPO/deploy/lib/throwaway-pg.sh"

# --- prerequisites -------------------------------------------------------------

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
PACKAGES=($(missing_postgres_package) $(missing_build_packages))
command -v pgbouncer >/dev/null || PACKAGES+=(pgbouncer)
command -v python3 >/dev/null || PACKAGES+=(python3)
apt_install "${PACKAGES[@]}"
PG_BIN=$(find_pg_bindir) || die "PostgreSQL installed, but no initdb found"
pg_tools
PGBENCH=$(command -v pgbench || echo "$PG_BIN/pgbench")

say "Building rlsproxy (cargo build --release)"
cargo build --release
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/rlsproxy"
[ -x "$BIN" ] || die "no binary at $BIN"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$REPO/bench/results"
RAW="$RESULTS/$STAMP"
mkdir -p "$RAW"

# --- cleanup: every process we started, by PID --------------------------------

PGB_PID=
SESSION_PID=
TXN_PID=
stop_pid() { # SIGTERM, SIGKILL after 5 s, reap
    local pid=$1
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
        for log in "$WORK"/*.log; do
            [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    stop_pid "$SESSION_PID"
    stop_pid "$TXN_PID"
    stop_pid "$PGB_PID"
    stop_proxy
    # Keep the logs next to the results: errors seen during runs are in them.
    cp "$WORK"/*.log "$RAW/" 2>/dev/null
    pg_remove
    exit "$rc"
}
make_work rlsproxy-bench

# --- PostgreSQL: app (example RLS schema) and bench (pgbench tables) -----------

PG_PORT=$(free_port)
say "Starting a throwaway PostgreSQL on 127.0.0.1:$PG_PORT (fsync=off) in $WORK"
pg_start 'max_connections = 300' 'shared_buffers = 256MB' >"$WORK/pg_start.log"
say "Applying migrations/*.sql to database app"
pg_create_app
pg_super -d postgres -c 'CREATE DATABASE bench OWNER app_proxy'
# PG15's public schema belongs to pg_database_owner, whose rights a NOINHERIT
# owner does not use: give the schema to app_proxy itself (as the tests do).
pg_super -d bench -c 'ALTER SCHEMA public OWNER TO app_proxy'
say "pgbench -i -s $SCALE in database bench (as app_proxy)"
PGPASSWORD=$PROXY_PW "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app_proxy bench \
    >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# --- PgBouncer, transaction mode (runs as the postgres OS user when we are root) -

PGB_PORT=$(free_port)
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((MAX_IDLE + 200))
logfile = $WORK/pgbouncer.log
pidfile =
EOF
(umask 077 && printf '"app_proxy" "%s"\n' "$PROXY_PW" >"$WORK/userlist.txt")
if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK/pgbouncer.ini" "$WORK/userlist.txt"; fi
say "Starting PgBouncer $(pgbouncer --version | head -n 1 | awk '{print $2}') on 127.0.0.1:$PGB_PORT"
# setpriv execs (runuser would stay as PgBouncer's parent): $! is PgBouncer's own PID,
# the one we read VmRSS of and stop.
if [ "$(id -u)" = 0 ]; then AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups); else AS_PG=(); fi
(cd "$WORK" && exec "${AS_PG[@]}" pgbouncer "$WORK/pgbouncer.ini") >"$WORK/pgbouncer.stdout.log" 2>&1 &
PGB_PID=$!
wait_listening "$PGB_PID" "$PGB_PORT" || die "PgBouncer is not listening on $PGB_PORT"

# --- rlsproxy, session and transaction mode -----------------------------------

CFG="$WORK/rlsproxy.toml"
cp config/rlsproxy.example.toml "$CFG"
export RLSPROXY__LISTEN__REQUIRE_TLS=non-loopback
export RLSPROXY__UPSTREAM__HOST=127.0.0.1
export RLSPROXY__UPSTREAM__PORT="$PG_PORT"
export RLSPROXY__UPSTREAM__DATABASE=bench
export RLSPROXY__UPSTREAM__USER=app_proxy
export RLSPROXY__UPSTREAM__PASSWORD="$PROXY_PW"
export RLSPROXY__UPSTREAM__SSLMODE=disable
export RLSPROXY__GUARD__ENABLED=true
export RLSPROXY__LOG__FILTER=warn
export RLSPROXY__JWT__ALGORITHMS=HS256
RLSPROXY__JWT__SECRET=$(random_secret)
export RLSPROXY__JWT__SECRET

# start_proxy MODE POOL_SIZE: starts rlsproxy on a free port; sets STARTED_PID, STARTED_PORT.
start_proxy() {
    local mode=$1 size=$2 rc=0
    STARTED_PORT=$(free_port)
    RLSPROXY__LISTEN__ADDRESS="127.0.0.1:$STARTED_PORT" RLSPROXY__POOL__MODE="$mode" \
        RLSPROXY__POOL__SIZE="$size" "$BIN" run --config "$CFG" >"$WORK/rlsproxy-$mode.log" 2>&1 &
    STARTED_PID=$!
    wait_listening "$STARTED_PID" "$STARTED_PORT" || rc=$?
    [ "$rc" = 0 ] || die "rlsproxy ($mode) did not start"
}
# Session mode: a client holds a server connection, so the pool must fit 32 clients.
start_proxy session 40
SESSION_PID=$STARTED_PID SESSION_PORT=$STARTED_PORT
start_proxy transaction "$POOL_SIZE"
TXN_PID=$STARTED_PID TXN_PORT=$STARTED_PORT
say "rlsproxy session mode on $SESSION_PORT (pool 40), transaction mode on $TXN_PORT (pool $POOL_SIZE)"
TOKEN=$("$BIN" token --config "$CFG" --tenant 1 --sub bench --ttl 24h | tail -n 1 | tr -d '[:space:]')
[ -n "$TOKEN" ] || die "rlsproxy token printed no token"

# --- targets and workloads -----------------------------------------------------

TARGETS=(direct pgbouncer rlsproxy-session rlsproxy-transaction)
# target_env TARGET: the libpq environment for pgbench.
target_env() {
    case "$1" in
        direct) echo "PGPORT=$PG_PORT PGUSER=app_proxy PGPASSWORD=$PROXY_PW" ;;
        pgbouncer) echo "PGPORT=$PGB_PORT PGUSER=app_proxy PGPASSWORD=$PROXY_PW" ;;
        rlsproxy-session) echo "PGPORT=$SESSION_PORT PGUSER=bench PGPASSWORD=$TOKEN" ;;
        rlsproxy-transaction) echo "PGPORT=$TXN_PORT PGUSER=bench PGPASSWORD=$TOKEN" ;;
    esac
}

# What an application does without the proxy (DESIGN.md section 6): its own
# transaction around every query, to scope set_config to it (PgBouncer-safe).
cat >"$WORK/appside.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
BEGIN;
SELECT set_config('app.current_tenant', '1', true);
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
EOF

# name | pgbench arguments | clients | targets ("all" = every target)
WORKLOADS=(
    "select-simple|-S -M simple|1|all"
    "select-simple|-S -M simple|8|all"
    "select-simple|-S -M simple|32|all"
    "select-prepared|-S -M prepared|8|all"
    "select-prepared|-S -M prepared|32|all"
    "appside-set_config|-f $WORK/appside.sql -M simple|8|direct pgbouncer"
    "appside-set_config|-f $WORK/appside.sql -M simple|32|direct pgbouncer"
)

# run_one ROUND NAME ARGS CLIENTS TARGET: one pgbench run; appends a line to runs.tsv:
# round workload clients target tps lat_avg_ms p50_ms p99_ms failed status
RUNS="$RAW/runs.tsv"
printf 'round\tworkload\tclients\ttarget\ttps\tlat_avg_ms\tp50_ms\tp99_ms\tfailed\tstatus\n' >"$RUNS"
run_one() {
    local round=$1 name=$2 args=$3 clients=$4 target=$5
    local tag="r$round-$name-c$clients-$target" out logdir jobs=1 status=0
    out="$RAW/$tag.txt"
    logdir="$WORK/txlog-$tag"
    mkdir -p "$logdir"
    [ "$clients" -ge 2 ] && jobs=2
    # shellcheck disable=SC2086 # $args and target_env are word lists on purpose
    env PGHOST=127.0.0.1 PGDATABASE=bench PGSSLMODE=disable $(target_env "$target") \
        "$PGBENCH" -n $args -c "$clients" -j "$jobs" -T "$BENCH_SECONDS" \
        --log --log-prefix="$logdir/tx" >"$out" 2>&1 || status=$?
    local tps lat failed p50 p99
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    # Per-transaction log: column 3 is the latency in microseconds.
    read -r p50 p99 < <(cat "$logdir"/tx.* 2>/dev/null | awk '{print $3}' | sort -n \
        | awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit}
                 i50=int(NR*0.50); if (i50<1) i50=1; i99=int(NR*0.99); if (i99<1) i99=1
                 printf "%.3f %.3f\n", v[i50]/1000, v[i99]/1000}')
    rm -rf "$logdir"
    if grep -qiE 'error|aborted' "$out"; then status="${status}:errors"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$clients" "$target" \
        "${tps:--}" "${lat:--}" "$p50" "$p99" "${failed:--}" "$status" >>"$RUNS"
    printf '  round %s  %-20s c=%-3s %-21s tps=%-10s avg=%sms p99=%sms %s\n' "$round" "$name" "$clients" \
        "$target" "${tps:--}" "${lat:--}" "$p99" "$([ "$status" = 0 ] || echo "FAILED ($status): $out")" >&2
}

say "Workloads: ${BENCH_SECONDS}s each, $ROUNDS round(s), targets interleaved"
for round in $(seq 1 "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r name args clients targets <<<"$w"
        [ "$targets" = all ] && targets="${TARGETS[*]}"
        for target in $targets; do run_one "$round" "$name" "$args" "$clients" "$target"; done
    done
done

# --- memory: RSS with idle client connections ----------------------------------

RSS="$RAW/rss.tsv"
printf 'target\tclients\trss_before_kib\trss_after_kib\topened\n' >"$RSS"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
for count in $IDLE_CLIENTS; do
    [ "$count" -gt 0 ] || continue
    say "Memory: $count idle client connections (startup + auth, then idle)"
    for target in pgbouncer rlsproxy-transaction rlsproxy-session; do
        case "$target" in
            pgbouncer) pid=$PGB_PID port=$PGB_PORT user=app_proxy pw=$PROXY_PW ;;
            rlsproxy-transaction) pid=$TXN_PID port=$TXN_PORT user=bench pw=$TOKEN ;;
            rlsproxy-session) continue ;; # each session holds a server connection: pointless
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

# --- report --------------------------------------------------------------------

REPORT="$RESULTS/$STAMP.md"
python3 "$REPO/bench/report.py" "$RUNS" "$RSS" >"$REPORT" <<EOF
machine: $(uname -srm), $(nproc) CPUs, $(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
postgres: $("$PG_BIN/postgres" --version | awk '{print $3}') (fsync=off, shared_buffers=256MB), pgbench -s $SCALE
pgbouncer: $(pgbouncer --version | head -n 1 | awk '{print $2}') transaction mode, default_pool_size $POOL_SIZE, SCRAM
rlsproxy: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) release, guard on; session pool 40, transaction pool $POOL_SIZE
runs: $BENCH_SECONDS s each, $ROUNDS round(s) interleaved, pgbench -j 2 (1 for 1 client), tenant-1 token
date: $STAMP
EOF
say "Report: $REPORT (raw output: $RAW/)"
cat "$REPORT"
