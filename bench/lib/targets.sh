# The benchmark's targets (sourced by bench/run.sh after deploy/lib/throwaway-pg.sh):
# PgBouncer and rlsproxy processes, the delay relay, and how pgbench reaches each.
# Every process started here is recorded in STARTED_PIDS and stopped by PID.

STARTED_PIDS=()

# Every target started here, by PID (stop_pid is deploy/lib/throwaway-pg.sh's).
stop_targets() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
}

# start_pgbouncer POOL_SIZE MAX_CLIENTS: transaction mode, SCRAM, databases bench and app;
# sets PGB_PID, PGB_PORT. Runs as the postgres OS user when we are root (it refuses root).
start_pgbouncer() {
    PGB_PORT=$(free_port)
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
app = host=127.0.0.1 port=$PG_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $1
max_client_conn = $2
logfile = $WORK/pgbouncer.log
pidfile =
EOF
    (umask 077 && printf '"app_proxy" "%s"\n' "$PROXY_PW" >"$WORK/userlist.txt")
    local as_pg=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
        # setpriv execs (runuser would stay as the parent): $! is PgBouncer's own PID.
        as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    (cd "$WORK" && exec "${as_pg[@]}" pgbouncer "$WORK/pgbouncer.ini") >"$WORK/pgbouncer.stdout.log" 2>&1 &
    PGB_PID=$!
    STARTED_PIDS+=("$PGB_PID")
    wait_listening "$PGB_PID" "$PGB_PORT" || die "PgBouncer is not listening on $PGB_PORT"
}

# start_proxy NAME MODE POOL_SIZE [VAR=VALUE...]: rlsproxy on a free port with $CFG and the
# RLSPROXY__* environment, plus the given overrides; sets STARTED_PID and STARTED_PORT.
start_proxy() {
    local name=$1 mode=$2 size=$3 rc=0
    shift 3
    STARTED_PORT=$(free_port)
    env RLSPROXY__LISTEN__ADDRESS="127.0.0.1:$STARTED_PORT" RLSPROXY__POOL__MODE="$mode" \
        RLSPROXY__POOL__SIZE="$size" "$@" "$BIN" run --config "$CFG" >"$WORK/rlsproxy-$name.log" 2>&1 &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
    wait_listening "$STARTED_PID" "$STARTED_PORT" || rc=$?
    [ "$rc" = 0 ] || die "rlsproxy ($name) did not start"
}

# load_bench_documents TENANTS DOCS: that many tenants in app, each with DOCS documents of
# contiguous ids; sets DOC_LO and DOC_HI to tenant 1's.
load_bench_documents() {
    pg_super -d app <<SQL
INSERT INTO tenants (id, name) SELECT t, 'bench tenant ' || t FROM generate_series(1, $1) t
ON CONFLICT (id) DO NOTHING;
-- One INSERT, ordered by tenant: each tenant's documents get contiguous ids.
INSERT INTO documents (tenant_id, title, body)
SELECT t, 'bench ' || i, md5(i::text) FROM generate_series(1, $1) t, generate_series(1, $2) i
ORDER BY t, i;
ANALYZE;
SQL
    read -r DOC_LO DOC_HI < <(pg_super -d app -At -F ' ' \
        -c "SELECT min(id), max(id) FROM documents WHERE tenant_id = 1 AND title LIKE 'bench %'")
}

# configure_proxies MAX_CLIENTS: $CFG (the example configuration with the database the client
# asks for, no admin listener: several proxies run at once) and the RLSPROXY__* environment
# for the throwaway PostgreSQL; default mode (start_strict_proxy switches strict mode on).
# Call it after prepare_strict_db.
configure_proxies() {
    CFG="$WORK/rlsproxy.toml"
    grep -v -e '^database = ' -e '^address = "127.0.0.1:9930"' config/rlsproxy.example.toml >"$CFG"
    export RLSPROXY__LISTEN__REQUIRE_TLS=non-loopback
    export RLSPROXY__LISTEN__MAX_CLIENTS="$1"
    export RLSPROXY__LISTEN__WORKER_THREADS="$WORKER_THREADS"
    export RLSPROXY__UPSTREAM__HOST=127.0.0.1
    export RLSPROXY__UPSTREAM__PORT="$PG_PORT"
    export RLSPROXY__UPSTREAM__USER=app_proxy
    export RLSPROXY__UPSTREAM__PASSWORD="$PROXY_PW"
    export RLSPROXY__UPSTREAM__SSLMODE=disable
    # The database line is dropped above: clients pick app, app_strict or bench.
    export RLSPROXY__UPSTREAM__ALLOWED_DATABASES=app,app_strict,bench
    export RLSPROXY__GUARD__ENABLED=true
    export RLSPROXY__CONTEXT__STRICT=false
    # The key of prepare_strict_db, for the strict-mode targets.
    export RLSPROXY__CONTEXT__STRICT_KEY_FILE="$WORK/strict.key"
}

# prepare_strict_db: database app_strict, a copy of app (schema, policies, data) whose example
# tables run strict mode's policies (pg_enable_strict: the key is in $WORK/strict.key). Call
# it once app is loaded and before anything connects to app.
prepare_strict_db() {
    pg_super -d postgres -c 'CREATE DATABASE app_strict TEMPLATE app'
    pg_enable_strict app_strict
    pg_super -d app_strict -c 'ANALYZE'
}

# start_strict_proxy NAME MODE POOL_SIZE [VAR=VALUE...]: start_proxy in strict mode (guard on)
# on database app_strict, with the key of prepare_strict_db.
start_strict_proxy() {
    local name=$1 mode=$2 size=$3
    shift 3
    start_proxy "$name" "$mode" "$size" RLSPROXY__UPSTREAM__DATABASE=app_strict RLSPROXY__CONTEXT__STRICT=true "$@"
}

# start_delay_relay TARGET_PORT DELAY_MS: bench/delay_relay.py in front of TARGET_PORT;
# sets STARTED_PID and STARTED_PORT.
start_delay_relay() {
    STARTED_PORT=$(free_port)
    python3 "$REPO/bench/delay_relay.py" "$STARTED_PORT" "$1" "$2" >"$WORK/delay-relay-$1.log" 2>&1 &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
    wait_listening "$STARTED_PID" "$STARTED_PORT" || die "the delay relay did not start"
}

# Whether this kernel can add delay with tc netem (in a throwaway network namespace).
netem_available() {
    command -v ip >/dev/null && command -v tc >/dev/null || return 1
    local ns="rlsbench$$" ok=1
    ip netns add "$ns" 2>/dev/null || return 1
    ip -n "$ns" link add veth0 type veth peer name veth1 2>/dev/null \
        && ip netns exec "$ns" tc qdisc add dev veth0 root netem delay 1ms 2>/dev/null && ok=0
    ip netns del "$ns" 2>/dev/null
    return "$ok"
}

# target_env TARGET: the libpq environment under which pgbench reaches TARGET, and the PID
# whose CPU time is charged to it (PROXY_PID=, empty for direct).
target_env() {
    local proxy="PGUSER=bench PGPASSWORD=$TOKEN"
    local pg="PGUSER=app_proxy PGPASSWORD=$PROXY_PW"
    case "$1" in
        direct) echo "PGPORT=$PG_PORT $pg PGOPTIONS=-capp.current_tenant=1 PROXY_PID=" ;;
        pgbouncer) echo "PGPORT=$PGB_PORT $pg PROXY_PID=$PGB_PID" ;;
        rlsproxy-session) echo "PGPORT=$SESSION_PORT $proxy PROXY_PID=$SESSION_PID" ;;
        rlsproxy-transaction) echo "PGPORT=$TXN_PORT $proxy PROXY_PID=$TXN_PID" ;;
        rlsproxy-tx-noguard) echo "PGPORT=$NOGUARD_PORT $proxy PROXY_PID=$NOGUARD_PID" ;;
        rlsproxy-tx-strict) echo "PGPORT=$STRICT_PORT $proxy PROXY_PID=$STRICT_PID" ;;
        direct-delayed) echo "PGPORT=$RELAY_PORT $pg PROXY_PID=" ;;
        rlsproxy-delayed) echo "PGPORT=$DELAYED_PORT $proxy PROXY_PID=$DELAYED_PID" ;;
        *) die "unknown target $1" ;;
    esac
}

# cpu_ticks PID: user + system CPU time of PID in clock ticks (0 without a PID).
cpu_ticks() {
    [ -n "$1" ] || { echo 0; return; }
    awk '{print $14 + $15}' "/proc/$1/stat"
}
