#!/usr/bin/env bash
# Real-driver client matrix: real PostgreSQL drivers talk to a real PostgreSQL
# through rlsproxy, in every pool mode, and must behave as they do directly.
#
#   tests/clients/run.sh
#
# Drivers: psycopg 3, psycopg2, asyncpg, SQLAlchemy 2 (psycopg), node-postgres,
# pgjdbc, pgx v4 (Go), ruby-pg, ActiveRecord 6.1 (Ruby), PDO pgsql (PHP) with emulated
# prepares (pdo-emulated) and native ones (pdo-native); per driver: simple query,
# parameterized query, a prepared statement reused 10 times, BEGIN/COMMIT, ROLLBACK,
# COPY in/out (where the driver has it; not ActiveRecord), tenant isolation with two
# tokens, concurrent workers of both tenants, every check on exact rows. Driver
# specifics: pgx's statement cache (reuse, eviction, describe mode), ActiveRecord's
# migration (run as the owner, directly), model and transaction(isolation:
# :serializable), PDO's DEALLOCATE of a statement destroyed inside a transaction.
# Where transaction pooling differs (docs/transaction-pooling.md "Known differences": SQL DEALLOCATE of a
# protocol-level statement), the check asserts the difference exactly and says so in
# its name or comment. Plus the pattern the proxy replaces:
# an SQLAlchemy app whose RLS policies come from an Alembic migration, used with no
# tenant listener through the proxy (sees its tenant's rows) and directly (fails).
# Each check prints `PASS|FAIL|SKIP <mode> <driver> <check>`; the last line is
# `N passed, M failed, K skipped`; the exit status is 1 when M > 0.
#
# Environment:
#   RLSPROXY_CLIENT_MODES    pool modes to run (default "session transaction"); the mode
#                            "direct" is a baseline: the same programs against PostgreSQL
#                            itself (roles alice/bob with app.current_tenant as a role
#                            setting), so a check failing only through the proxy is a proxy bug
#   RLSPROXY_CLIENT_DRIVERS  drivers to run (default: all, see DRIVERS below: psycopg3 psycopg2
#                            asyncpg sqlalchemy node-pg pgjdbc pgx ruby-pg activerecord
#                            pdo-emulated pdo-native sqlalchemy-alembic)
#   RLSPROXY_CLIENT_WORKERS  concurrent workers per driver, alternating tenants (default 8)
#   RLSPROXY_CLIENT_TXNS     transactions per worker (default 100)
#   RLSPROXY_CLIENT_POOL_SIZE  pool.size in transaction mode (default 4; session mode: 40)
#   RLSPROXY_CLIENT_TIMEOUT  seconds one driver may run (default 300)
#   RLSPROXY_CLIENT_DEPS     where drivers are installed (default tests/clients/.deps)
#   CARGO_TARGET_DIR         where the proxy is built (default target/)
#   RLSPROXY_BIN             use this proxy binary instead of building one
#   RLSPROXY_CLIENT_KEEP     a folder to copy the proxy/PostgreSQL logs and outputs to
#   CLIENT_VERBOSE=1         tracebacks/stack traces of failed checks on stderr
#   RLSPROXY__SECTION__KEY   apply to the proxy as usual (e.g. RLSPROXY__LOG__FILTER=debug)
# Installs (idempotent): a Python venv, node-postgres (npm), and with apt-get when
# missing: Debian's pgjdbc and a JDK, golang-go and golang-github-jackc-pgx-v4-dev
# (built offline in GOPATH mode into .deps/go), ruby, ruby-pg and ruby-activerecord,
# php-cli and php-pgsql, the PostgreSQL server. Only the selected drivers' installs run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"

MODES=${RLSPROXY_CLIENT_MODES:-session transaction}
DRIVERS=${RLSPROXY_CLIENT_DRIVERS:-psycopg3 psycopg2 asyncpg sqlalchemy node-pg pgjdbc pgx ruby-pg activerecord pdo-emulated pdo-native sqlalchemy-alembic}
DEPS=${RLSPROXY_CLIENT_DEPS:-$HERE/.deps}
TIMEOUT=${RLSPROXY_CLIENT_TIMEOUT:-300}
export CLIENT_WORKERS=${RLSPROXY_CLIENT_WORKERS:-8}
export CLIENT_TXNS=${RLSPROXY_CLIENT_TXNS:-100}
START=$SECONDS

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'tests/clients: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=cm
# as_root, as_pg, find_pg_bindir, random_secret, free_port, pg_start, pg_super, ...
. "$REPO/deploy/lib/throwaway-pg.sh"

# Content hash of files: a stamp that tells whether an install is up to date.
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- installs (idempotent) -------------------------------------------------------

install_postgres() {
    apt_install $(missing_postgres_package)
    PG_BIN=$(find_pg_bindir) || die "no initdb after install"
    pg_tools
}

install_python() {
    local venv="$DEPS/venv" want
    want=$(stamp_of "$HERE/py/requirements.txt")
    if [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/python" ]; then return 0; fi
    command -v python3 >/dev/null || apt_install python3 python3-venv
    say "Python venv with the drivers of py/requirements.txt in $venv"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/py/requirements.txt"
    echo "$want" >"$venv/.stamp"
}

install_node() {
    local dir="$DEPS/node" want
    want=$(stamp_of "$HERE/node/package.json")
    if [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ] && [ -d "$dir/node_modules/pg" ]; then return 0; fi
    command -v npm >/dev/null || apt_install nodejs npm
    say "node-postgres (npm) in $dir"
    mkdir -p "$dir"
    cp "$HERE/node/package.json" "$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --silent)
    echo "$want" >"$dir/.stamp"
}

PGJDBC_JAR=/usr/share/java/postgresql.jar
install_java() {
    local dir="$DEPS/java" want
    [ -f "$PGJDBC_JAR" ] || apt_install libpostgresql-jdbc-java
    command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
    want=$(stamp_of "$HERE/java/JdbcClient.java" "$PGJDBC_JAR")
    if [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
    say "Compiling java/JdbcClient.java against $PGJDBC_JAR"
    rm -rf "$dir" && mkdir -p "$dir"
    javac -encoding UTF-8 -cp "$PGJDBC_JAR" -d "$dir" "$HERE/java/JdbcClient.java"
    echo "$want" >"$dir/.stamp"
}

# Debian's pgx v4 is a GOPATH tree (no module proxy, no network): build in GOPATH mode
# against it. The stamp includes the Go and pgx versions.
install_go() {
    local dir="$DEPS/go" want
    apt_install $(missing_go_packages)
    want=$({ cat "$HERE/go/pgx_client.go"; go version; dpkg-query -W -f '${Version}' golang-github-jackc-pgx-v4-dev 2>/dev/null || true; } | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ] && [ -x "$dir/pgx_client" ]; then return 0; fi
    say "Building go/pgx_client.go against Debian's pgx ($PGX_SRC)"
    mkdir -p "$dir"
    GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$dir/cache" GOFLAGS= GOPROXY=off \
        go build -o "$dir/pgx_client" "$HERE/go/pgx_client.go"
    echo "$want" >"$dir/.stamp"
}

# Debian's ruby-pg and ruby-activerecord (Rails 6.1); Debian's php-cli and php-pgsql.
install_ruby() { apt_install $(missing_ruby_packages); }
install_php() { apt_install $(missing_php_packages); }

build_proxy() {
    if [ -n "${RLSPROXY_BIN:-}" ]; then BIN=$RLSPROXY_BIN; return 0; fi
    command -v cargo >/dev/null || die "cargo not found"
    say "Building rlsproxy (cargo build --release)"
    cargo build --release --quiet
    BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/rlsproxy"
    [ -x "$BIN" ] || die "no proxy binary at $BIN"
}

wants() { [[ " $DRIVERS " == *" $1 "* ]]; }

mkdir -p "$DEPS"
install_postgres
if wants psycopg3 || wants psycopg2 || wants asyncpg || wants sqlalchemy || wants sqlalchemy-alembic; then install_python; fi
if wants node-pg; then install_node; fi
if wants pgjdbc; then install_java; fi
if wants pgx; then install_go; fi
if wants ruby-pg || wants activerecord; then install_ruby; fi
if wants pdo-emulated || wants pdo-native; then install_php; fi
build_proxy
say "Installs and build ready after $((SECONDS - START)) s"

# --- cleanup of everything started here, by PID ------------------------------------

DRIVER_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    # timeout(1) passes SIGTERM on to the driver program it runs.
    if [ -n "$DRIVER_PID" ]; then kill -TERM "$DRIVER_PID" 2>/dev/null; wait "$DRIVER_PID" 2>/dev/null; fi
    stop_proxy
    if [ -n "${RLSPROXY_CLIENT_KEEP:-}" ]; then
        mkdir -p "$RLSPROXY_CLIENT_KEEP" && cp "$WORK"/*.log "$WORK"/*.out "$RLSPROXY_CLIENT_KEEP"/ 2>/dev/null
    fi
    pg_remove
    exit "$rc"
}
make_work rlsproxy-clients

# --- PostgreSQL ----------------------------------------------------------------------

PG_PORT=$(free_port)
say "PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT"
pg_start 'max_connections = 200'
pg_create_app

# --- the proxy's configuration: a TOML file, per-mode RLSPROXY__* overrides ----------

# upstream.database is unset: the proxy connects to the database the client asks
# for (app for the drivers, alembic_app for the Alembic pattern), among those listed.
CFG="$WORK/rlsproxy.toml"
cat >"$CFG" <<EOF
[listen]
address = "127.0.0.1:6432"
require_tls = "non-loopback"
shutdown_grace_s = 2

[upstream]
host = "127.0.0.1"
port = $PG_PORT
user = "app_proxy"
sslmode = "disable"
allowed_databases = ["app", "alembic_app"]

[pool]
# Per mode: RLSPROXY__POOL__MODE and RLSPROXY__POOL__SIZE (see start_proxy).
mode = "session"

[jwt]
algorithms = ["HS256"]
secret = "$(random_secret)"
tenant_claim = "tenant_id"

[log]
filter = "info"
EOF
export RLSPROXY__UPSTREAM__PASSWORD=$PROXY_PW

mint() { "$BIN" token --config "$CFG" --tenant "$1" --sub "$2" --ttl 2h | tail -n 1 | tr -d '[:space:]'; }
TOKEN_T1=$(mint 1 alice)
TOKEN_T2=$(mint 2 bob)
[ -n "$TOKEN_T1" ] && [ -n "$TOKEN_T2" ] || die "rlsproxy token printed no token"
export TOKEN_T1 TOKEN_T2 PROXY_HOST=127.0.0.1 PROXY_DB=app
# For the Alembic pattern: the superuser (admin connection) and app_proxy, direct.
export PG_HOST=127.0.0.1 PG_PORT PG_SUPERUSER=postgres PG_SUPERUSER_PASSWORD=$SUPERUSER_PW
export PG_APP_PROXY_PASSWORD=$PROXY_PW

# Baseline mode "direct": roles alice and bob whose tenant is a role setting and
# whose password is their token, so the driver programs run unchanged.
if [[ " $MODES " == *" direct "* ]]; then
    pg_super -d app -v t1="$TOKEN_T1" -v t2="$TOKEN_T2" <<'EOF'
CREATE ROLE alice LOGIN NOINHERIT PASSWORD :'t1';
CREATE ROLE bob LOGIN NOINHERIT PASSWORD :'t2';
ALTER ROLE alice IN DATABASE app SET app.current_tenant = '1';
ALTER ROLE bob IN DATABASE app SET app.current_tenant = '2';
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users, documents TO alice, bob;
GRANT USAGE ON SEQUENCE users_id_seq, documents_id_seq TO alice, bob;
EOF
fi

# Starts the proxy in a pool mode; on failure, says why in $WORK/why.
start_proxy() {
    local mode=$1 log=$2
    PROXY_PORT=$(free_port)
    export PROXY_PORT
    # Session mode: one server connection per client, so room for all of them.
    # Transaction mode: fewer server connections than concurrent clients.
    local size=40
    [ "$mode" = transaction ] && size=${RLSPROXY_CLIENT_POOL_SIZE:-4}
    export CLIENT_UPSTREAM_POOL_SIZE=$size # ActiveRecord's pinned sessions must fit in it
    RLSPROXY__POOL__MODE=$mode RLSPROXY__POOL__SIZE=$size \
        RLSPROXY__LISTEN__ADDRESS="127.0.0.1:$PROXY_PORT" \
        "$BIN" run --config "$CFG" >"$log" 2>&1 &
    PROXY_PID=$!
    local rc=0
    wait_listening "$PROXY_PID" "$PROXY_PORT" || rc=$?
    if [ "$rc" = 1 ]; then
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=
        echo "rlsproxy exited at start: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1)" >"$WORK/why"
    elif [ "$rc" = 2 ]; then
        echo "rlsproxy is not listening on 127.0.0.1:$PROXY_PORT after 10 s" >"$WORK/why"
    fi
    return "$rc"
}

# Sets CMD to the command line of a driver's program.
driver_cmd() {
    case "$1" in
        psycopg3 | psycopg2 | asyncpg | sqlalchemy) CMD=("$DEPS/venv/bin/python" "$HERE/py/${1}_client.py") ;;
        sqlalchemy-alembic) CMD=("$DEPS/venv/bin/python" "$HERE/py/alembic_pattern.py") ;;
        node-pg) CMD=(node "$HERE/node/pg_client.js") ;;
        pgjdbc) CMD=(java -cp "$DEPS/java:$PGJDBC_JAR" JdbcClient) ;;
        pgx) CMD=("$DEPS/go/pgx_client") ;;
        ruby-pg) CMD=(ruby "$HERE/ruby/pg_client.rb") ;;
        activerecord) CMD=(ruby "$HERE/ruby/activerecord_client.rb") ;;
        pdo-emulated) CMD=(php "$HERE/php/pdo_client.php" emulated) ;;
        pdo-native) CMD=(php "$HERE/php/pdo_client.php" native) ;;
        *) return 1 ;;
    esac
}

# --- the matrix ------------------------------------------------------------------------

RESULTS="$WORK/results.txt"
: >"$RESULTS"
record() { echo "$1" | tee -a "$RESULTS"; }
declare -A TIMES=()

for mode in $MODES; do
    say "pool mode $mode"
    export RLS_MODE=$mode
    log="$WORK/rlsproxy-$mode.log"
    if [ "$mode" = direct ]; then
        export PROXY_PORT=$PG_PORT
    elif ! start_proxy "$mode" "$log"; then
        record "FAIL $mode proxy start: $(cat "$WORK/why")"
        continue
    fi
    for driver in $DRIVERS; do
        driver_cmd "$driver" || { record "FAIL $mode $driver run: unknown driver"; continue; }
        if [ "$mode" = direct ] && [ "$driver" = sqlalchemy-alembic ]; then
            record "SKIP $mode $driver all: it compares direct and proxied access itself"
            continue
        fi
        t0=${EPOCHREALTIME/[.,]/}
        out="$WORK/$mode-$driver.out"
        rc=0
        # In the background and waited for, so that Ctrl-C/SIGTERM reach the traps at once.
        NODE_PATH="$DEPS/node/node_modules" PYTHONPATH="$HERE/py" PYTHONDONTWRITEBYTECODE=1 \
            timeout --kill-after=10 "$TIMEOUT" "${CMD[@]}" >"$out" </dev/null &
        DRIVER_PID=$!
        wait "$DRIVER_PID" || rc=$?
        DRIVER_PID=
        t1=${EPOCHREALTIME/[.,]/}
        TIMES["$mode $driver"]=$(((t1 - t0) / 1000))
        grep -E '^(PASS|FAIL|SKIP) ' "$out" | tee -a "$RESULTS" || true
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            record "FAIL $mode $driver run: timed out after $TIMEOUT s"
        elif [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$out"; then
            record "FAIL $mode $driver run: exited with status $rc and no FAIL line"
        fi
    done
    if [ "$mode" != direct ] && ! kill -0 "$PROXY_PID" 2>/dev/null; then
        record "FAIL $mode proxy alive: rlsproxy exited during the run"
    fi
    stop_proxy
    if [ -f "$log" ] && grep -q "^FAIL $mode " "$RESULTS"; then
        echo "--- rlsproxy ($mode) warnings and errors, last 20:" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E ' (WARN|ERROR) ' | tail -n 20 >&2 || true
    fi
done

echo "--- time per driver:" >&2
for key in "${!TIMES[@]}"; do echo "    $key: ${TIMES[$key]} ms"; done | sort >&2
passed=$(grep -c '^PASS ' "$RESULTS" || true)
failed=$(grep -c '^FAIL ' "$RESULTS" || true)
skipped=$(grep -c '^SKIP ' "$RESULTS" || true)
echo "total $((SECONDS - START)) s" >&2
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
