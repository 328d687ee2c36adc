#!/usr/bin/env bash
# Soak: nothing lost, no tenant crossed, nothing growing. A throwaway PostgreSQL, rlsproxy in
# transaction mode, and examples/soak.rs's clients appending a ledger through it (16 clients,
# 8 tenants, two rows per transaction, each acknowledged COMMIT remembered) while a chaos
# loop, every CHAOS_EVERY seconds, does the next of: SIGHUP reload, pg_terminate_backend of a
# random server connection of the proxy, a PostgreSQL restart (pg_ctl restart -m fast). The
# clients also reconnect every 200 transactions (churn). At the end the ledger is checked
# against the database (examples/soak.rs says how), and the proxy's RSS, open file
# descriptors and server connections, sampled every SAMPLE_EVERY seconds, must not grow
# after warm-up (the first quarter of the samples).
#
#   bench/soak.sh [DURATION]     DURATION as humantime (default 1h; CI runs 2m)
#
# Settings (environment): CHAOS_EVERY (5), SAMPLE_EVERY (10), POOL_SIZE (8),
# SOAK_PROFILE (release; dev reuses the test build).
set -euo pipefail

usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
DURATION=${1:-1h}
CHAOS_EVERY=${CHAOS_EVERY:-5}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
POOL_SIZE=${POOL_SIZE:-8}
SOAK_PROFILE=${SOAK_PROFILE:-release}
WORKER_THREADS=1

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/soak: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=sk
# shellcheck source=../deploy/lib/throwaway-pg.sh
. "$REPO/deploy/lib/throwaway-pg.sh"
# shellcheck source=lib/targets.sh
. "$REPO/bench/lib/targets.sh"

apt_install $(missing_postgres_package) $(missing_build_packages)
PG_BIN=$(find_pg_bindir) || die "PostgreSQL installed, but no initdb found"
pg_tools
cargo build --profile "$SOAK_PROFILE" --bin rlsproxy --example soak
OUT="${CARGO_TARGET_DIR:-$REPO/target}/$([ "$SOAK_PROFILE" = dev ] && echo debug || echo "$SOAK_PROFILE")"
BIN="$OUT/rlsproxy"
SOAK="$OUT/examples/soak"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "${CHAOS_PID:-}" ] && kill "$CHAOS_PID" 2>/dev/null
    stop_targets
    pg_remove
    exit "$rc"
}
make_work rlsproxy-soak

PG_PORT=$(free_port)
pg_start 'max_connections = 100' >"$WORK/pg_start.log"
pg_create_app
configure_proxies 100
export RLSPROXY__LOG__FILTER=warn RLSPROXY__JWT__ALGORITHMS=HS256
RLSPROXY__JWT__SECRET=$(random_secret)
export RLSPROXY__JWT__SECRET
start_proxy soak transaction "$POOL_SIZE"
PROXY=$STARTED_PID
say "rlsproxy (pid $PROXY) on 127.0.0.1:$STARTED_PORT, PostgreSQL on $PG_PORT; soak for $DURATION"

server_connections() {
    pg_super -d postgres -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_proxy'" 2>/dev/null || echo -1
}
sample() {
    printf '%s %s %s %s\n' "$SECONDS" "$(awk '/^VmRSS/ {print $2}' "/proc/$PROXY/status")" \
        "$(find "/proc/$PROXY/fd" -mindepth 1 -maxdepth 1 | wc -l)" "$(server_connections)"
}

"$SOAK" --port "$STARTED_PORT" --config "$CFG" --duration "$DURATION" \
    --setup-url "host=$WORK port=$PG_PORT user=postgres dbname=app" >"$WORK/soak.out" 2>&1 &
SOAK_PID=$!
STARTED_PIDS+=("$SOAK_PID")

# The chaos loop, in the background; its log says what it did when.
(
    step=0
    while sleep "$CHAOS_EVERY"; do
        case $((step % 3)) in
            0) echo "$SECONDS reload" && kill -HUP "$PROXY" ;;
            1) echo "$SECONDS terminate a server connection" && pg_super -d postgres -At -c \
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_proxy' ORDER BY random() LIMIT 1" ;;
            2) echo "$SECONDS restart PostgreSQL" && as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" \
                -m fast -w -t 60 restart >/dev/null ;;
        esac
        step=$((step + 1))
    done
) >"$WORK/chaos.log" 2>&1 &
CHAOS_PID=$!

echo "# seconds rss_kib fds server_connections" >"$WORK/samples"
while kill -0 "$SOAK_PID" 2>/dev/null; do
    sample >>"$WORK/samples"
    for _ in $(seq "$SAMPLE_EVERY"); do kill -0 "$SOAK_PID" 2>/dev/null && sleep 1; done
done
kill "$CHAOS_PID" 2>/dev/null || true
wait "$CHAOS_PID" 2>/dev/null || true
CHAOS_PID=
SOAK_RC=0
wait "$SOAK_PID" || SOAK_RC=$?

say "chaos: $(grep -c reload "$WORK/chaos.log") reloads, $(grep -c terminate "$WORK/chaos.log") terminations, $(grep -c restart "$WORK/chaos.log") restarts"
cat "$WORK/samples"
cat "$WORK/soak.out"
kill -0 "$PROXY" 2>/dev/null || die "rlsproxy died during the soak; see $WORK/rlsproxy-soak.log"
[ "$SOAK_RC" = 0 ] || die "the ledger check failed (exit $SOAK_RC)"

# Growth after warm-up: the last sample against the largest of the first quarter after it,
# allowing noise (RSS 20 % + 8 MiB, 8 descriptors); server connections never above the pool.
awk -v pool="$POOL_SIZE" '
    /^#/ { next }
    { n++; rss[n] = $2; fds[n] = $3; conns[n] = $4 }
    END {
        warm = int(n / 4) + 1
        if (n - warm < 2) { print "too few samples after warm-up"; exit 1 }
        for (i = warm; i <= warm + int((n - warm) / 4); i++) {
            if (rss[i] > base_rss) base_rss = rss[i]
            if (fds[i] > base_fds) base_fds = fds[i]
        }
        for (i = warm; i <= n; i++) if (conns[i] > pool) { print "server connections above the pool: " conns[i]; bad = 1 }
        if (rss[n] > base_rss * 1.2 + 8192) { print "RSS grew: " base_rss " -> " rss[n] " KiB"; bad = 1 }
        if (fds[n] > base_fds + 8) { print "file descriptors grew: " base_fds " -> " fds[n]; bad = 1 }
        printf "flat after warm-up: RSS %d -> %d KiB, fds %d -> %d\n", base_rss, rss[n], base_fds, fds[n]
        exit bad
    }' "$WORK/samples" || die "growth after warm-up"
say "soak passed"
