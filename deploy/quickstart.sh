#!/usr/bin/env bash
# rlsproxy quick start: a throwaway PostgreSQL loaded with the example schema
# (migrations/, its tables converted to strict mode's policies), the proxy in
# front of it in strict mode with the statement guard on (the recommended set-up),
# and one token per tenant, so that the same query through the proxy returns
# different rows for each tenant.
#
#   deploy/quickstart.sh             demo, then keep running until Ctrl-C
#   deploy/quickstart.sh --no-wait   demo, then stop and clean up (CI smoke test)
#   deploy/quickstart.sh --db-only   only PostgreSQL + schema, to run the proxy yourself
#
# Everything lives in one temp dir that is removed on exit. Nothing is installed
# except PostgreSQL itself (apt-get), and only when no initdb is found.
set -euo pipefail

usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }

WAIT=1
DB_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --no-wait) WAIT=0 ;;
        --db-only) DB_ONLY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

SECRET_PREFIX=qs
# as_root, as_pg, find_pg_bindir, random_secret, free_port, pg_start, pg_super, ...
. "$REPO/deploy/lib/throwaway-pg.sh"

# --- prerequisites -------------------------------------------------------------

PACKAGES=($(missing_postgres_package))
if [ "$DB_ONLY" = 0 ]; then
    command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
    PACKAGES+=($(missing_build_packages))
fi
apt_install "${PACKAGES[@]}"
PG_BIN=$(find_pg_bindir) || die "PostgreSQL installed, but no initdb found"
pg_tools

if [ "$DB_ONLY" = 0 ]; then
    [ -f config/rlsproxy.example.toml ] || die "config/rlsproxy.example.toml is missing"
    say "Building rlsproxy (cargo build --release)"
    cargo build --release
    BIN="$REPO/target/release/rlsproxy"
fi

# --- cleanup on every exit: Ctrl-C, error or end of demo -----------------------

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "$rc" != 0 ] && [ "$rc" != 130 ] && [ "$rc" != 143 ]; then
        for log in "$WORK/rlsproxy.log" "$WORK/postgres.log"; do
            [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 30 "$log" >&2; }
        done
    fi
    stop_proxy
    pg_remove
    exit "$rc"
}
make_work rlsproxy-quickstart

# --- PostgreSQL ----------------------------------------------------------------

PG_PORT=$(free_port)
say "Starting a throwaway PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT in $WORK"
pg_start
say "Applying migrations/*.sql to database app"
pg_create_app list
say "Strict mode: a signing key ($WORK/strict.key, also in rlsproxy_private.keys), the example tables under strict policies"
pg_enable_strict app

if [ "$DB_ONLY" = 1 ]; then
    cat <<EOF

PostgreSQL is ready (upstream of the proxy):
  host 127.0.0.1  port $PG_PORT  database app  user app_proxy  password $PROXY_PW
  superuser:  $PSQL -h $WORK -p $PG_PORT -U postgres app

Run the proxy against it (strict mode, key k1 in $WORK/strict.key), e.g.:
  RLSPROXY__UPSTREAM__PORT=$PG_PORT RLSPROXY__UPSTREAM__PASSWORD=$PROXY_PW \\
  RLSPROXY__UPSTREAM__SSLMODE=disable RLSPROXY__UPSTREAM__DATABASE=app \\
  RLSPROXY__CONTEXT__STRICT_KEY_FILE=$WORK/strict.key \\
  cargo run --release -- run --config config/rlsproxy.example.toml
EOF
    if [ "$WAIT" = 1 ]; then
        say "Press Ctrl-C to stop PostgreSQL and remove $WORK"
        while true; do sleep 3600; done
    fi
    exit 0
fi

# --- the proxy -----------------------------------------------------------------

PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
CFG="$WORK/rlsproxy.toml"
cp config/rlsproxy.example.toml "$CFG"
# RLSPROXY__SECTION__KEY overrides the file: the example stays untouched.
export RLSPROXY__LISTEN__ADDRESS="127.0.0.1:$PROXY_PORT"
export RLSPROXY__ADMIN__ADDRESS="127.0.0.1:$ADMIN_PORT"
export RLSPROXY__LISTEN__REQUIRE_TLS=non-loopback
export RLSPROXY__UPSTREAM__HOST=127.0.0.1
export RLSPROXY__UPSTREAM__PORT="$PG_PORT"
export RLSPROXY__UPSTREAM__DATABASE=app
export RLSPROXY__UPSTREAM__USER=app_proxy
export RLSPROXY__UPSTREAM__PASSWORD="$PROXY_PW"
export RLSPROXY__UPSTREAM__SSLMODE=disable
export RLSPROXY__CONTEXT__STRICT_KEY_FILE="$WORK/strict.key"
export RLSPROXY__JWT__ALGORITHMS=HS256
RLSPROXY__JWT__SECRET=$(random_secret)
export RLSPROXY__JWT__SECRET

say "Starting rlsproxy on 127.0.0.1:$PROXY_PORT, strict mode and guard on (log: $WORK/rlsproxy.log)"
"$BIN" run --config "$CFG" >"$WORK/rlsproxy.log" 2>&1 &
PROXY_PID=$!
rc=0
wait_listening "$PROXY_PID" "$PROXY_PORT" || rc=$?
[ "$rc" != 1 ] || die "rlsproxy exited at start"
[ "$rc" = 0 ] || die "rlsproxy is not listening on 127.0.0.1:$PROXY_PORT after 10 s"

mint() { "$BIN" token --config "$CFG" --tenant "$1" | tail -n 1 | tr -d '[:space:]'; }
TOKEN1=$(mint 1)
TOKEN2=$(mint 2)
[ -n "$TOKEN1" ] && [ -n "$TOKEN2" ] || die "rlsproxy token printed no token"

# The token is the password; the tenant comes from its signed claim, not from the user name.
conninfo() { echo "host=127.0.0.1 port=$PROXY_PORT user=$1 dbname=app password=$2 sslmode=disable"; }
QUERY="select title from documents"
cat <<EOF

rlsproxy is ready. Paste either line into another terminal:

# tenant 1 (acme)
$PSQL "$(conninfo alice "$TOKEN1")" -c "$QUERY"

# tenant 2 (globex)
$PSQL "$(conninfo bob "$TOKEN2")" -c "$QUERY"

# metrics and probes
curl -s http://127.0.0.1:$ADMIN_PORT/metrics
EOF

say "Running both: same query, same table, different rows"
echo "--- tenant 1:"
OUT1=$("$PSQL" -X -v ON_ERROR_STOP=1 "$(conninfo alice "$TOKEN1")" -c "$QUERY") \
    || die "psql through the proxy failed for tenant 1"
echo "$OUT1"
echo "--- tenant 2:"
OUT2=$("$PSQL" -X -v ON_ERROR_STOP=1 "$(conninfo bob "$TOKEN2")" -c "$QUERY") \
    || die "psql through the proxy failed for tenant 2"
echo "$OUT2"
# Smoke test: each tenant sees its own documents and none of the other's.
grep -q 'acme roadmap' <<<"$OUT1" && ! grep -q globex <<<"$OUT1" \
    && grep -q 'globex handbook' <<<"$OUT2" && ! grep -q acme <<<"$OUT2" \
    || die "unexpected rows: tenant isolation did not hold"

if [ "$WAIT" = 0 ]; then
    say "Demo passed; stopping (--no-wait)"
    exit 0
fi
say "Press Ctrl-C to stop the proxy and PostgreSQL and remove $WORK"
rc=0
wait "$PROXY_PID" || rc=$?
PROXY_PID=
die "rlsproxy exited unexpectedly (status $rc)"
