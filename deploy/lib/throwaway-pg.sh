# Throwaway PostgreSQL for rlsproxy's scripts (deploy/quickstart.sh,
# tests/clients/run.sh): a cluster in a temp dir on a free loopback port, the
# example schema (migrations/*.sql) in database app, app_proxy's password set,
# and everything stopped (by PID, or pg_ctl) and removed on exit.
#
# Source it (`. deploy/lib/throwaway-pg.sh`) from a bash script running with
# `set -euo pipefail` in the repository root. The caller provides:
#   die MESSAGE     print an error and exit 1
#   say MESSAGE     print progress
#   cleanup         the EXIT trap installed by make_work (see there)
#   SECRET_PREFIX   a few letters that start every random_secret
# and these globals are set here: PG_BIN, PSQL (pg_tools), WORK and PROXY_PID
# (make_work), PG_PORT and SUPERUSER_PW (pg_start), PROXY_PW (pg_create_app).

# as_root, apt_install, missing_build_packages, missing_postgres_package.
. "$(dirname "${BASH_SOURCE[0]}")/packages.sh"

# The PostgreSQL server refuses to run as root: as root, use the postgres OS user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then (cd "$WORK" && runuser -u postgres -- "$@")
    else (cd "$WORK" && "$@"); fi
}

# Prints the newest PostgreSQL bin directory that has an initdb; fails if none.
find_pg_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    done
    if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

# Once PG_BIN is known: refuses root without a postgres OS user, sets PSQL.
pg_tools() {
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        die "running as root needs an OS user 'postgres' (PostgreSQL refuses to run as root)"
    fi
    PSQL=$(command -v psql || echo "$PG_BIN/psql")
}

# Prints 32 random hex digits after $SECRET_PREFIX (passwords, the JWT secret).
random_secret() { printf '%s%s' "$SECRET_PREFIX" "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }

# A TCP connect to a free port on loopback fails at once.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a random free TCP port on 127.0.0.1 (never $PG_PORT).
free_port() {
    local port
    for _ in $(seq 1 100); do
        # Below Linux's ephemeral range (32768+), where outgoing connections take their
        # local ports: a port free to connect to could still be taken by one of them.
        port=$((20000 + RANDOM % 12000))
        if [ "$port" != "${PG_PORT:-}" ] && ! port_in_use "$port"; then echo "$port"; return 0; fi
    done
    die "no free TCP port found on 127.0.0.1"
}

# Waits up to 10 s for process PID to listen on 127.0.0.1:PORT; returns 1 when
# the process exits first, 2 when it is still not listening.
wait_listening() {
    local pid=$1 port=$2
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        port_in_use "$port" && return 0
        sleep 0.1
    done
    return 2
}

# Stops process PID (SIGTERM, SIGKILL after 5 s) and reaps it; nothing without a PID.
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops the proxy started as $PROXY_PID.
stop_proxy() {
    stop_pid "$PROXY_PID"
    PROXY_PID=
}

# Creates WORK, a temp dir named NAME.XXXXXX owned by the server's OS user, and
# traps exit: the caller's `cleanup` on EXIT, status 130 on SIGINT, 143 on SIGTERM.
# `cleanup` should end with stop_proxy, pg_remove and `exit` with the status.
make_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PROXY_PID=
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK"; fi
}

# Stops the server by the PID in $WORK/data/postmaster.pid (pg_ctl, fast
# shutdown) and removes $WORK. For cleanup: never fails.
pg_remove() {
    if [ -f "$WORK/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}

# initdb in $WORK/data (superuser postgres: trust on the Unix socket in $WORK,
# SCRAM with $SUPERUSER_PW over TCP), then starts it on 127.0.0.1:$PG_PORT
# (set it first, with free_port) and waits until it accepts connections.
# Arguments: extra postgresql.conf lines, e.g. 'max_connections = 200'.
pg_start() {
    SUPERUSER_PW=$(random_secret)
    (umask 077 && printf '%s\n' "$SUPERUSER_PW" >"$WORK/superuser.pw")
    if [ "$(id -u)" = 0 ]; then chown postgres: "$WORK/superuser.pw"; fi
    as_pg "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$WORK/superuser.pw" -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 \
        || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    rm -f "$WORK/superuser.pw"
    # postgresql.auto.conf is read last: these settings win over initdb's defaults.
    {
        cat <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
password_encryption = 'scram-sha-256'
fsync = off
EOF
        if [ "$#" -gt 0 ]; then printf '%s\n' "$@"; fi
    } >"$WORK/data/postgresql.auto.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 start >/dev/null
}

# psql as the superuser over the Unix socket in $WORK (trust): schema owner, bypasses RLS.
pg_super() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }

# Creates database app, applies migrations/*.sql in order (with `list`: naming
# each file on stderr) and gives app_proxy the new password $PROXY_PW.
pg_create_app() {
    local file
    PROXY_PW=$(random_secret)
    pg_super -d postgres -c 'CREATE DATABASE app'
    for file in migrations/*.sql; do
        if [ "${1:-}" = list ]; then echo "    $file" >&2; fi
        pg_super -d app -f "$file" >/dev/null
    done
    # A psql variable, so the password is quoted by psql rather than spliced by hand.
    echo "ALTER ROLE app_proxy PASSWORD :'pw';" | pg_super -d app -v pw="$PROXY_PW"
}

# pg_enable_strict DB: strict mode in database DB (migrations/0003 is applied with the
# others): a new signing key under kid k1 (its hex in $WORK/strict.key, owner-only, for the
# proxy's context.strict_key_file) and the example tables under strict policies.
pg_enable_strict() {
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$WORK/strict.key")
    pg_super -d "$1" -v key="$(cat "$WORK/strict.key")" >/dev/null <<'SQL'
INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('k1', decode(:'key', 'hex'));
SELECT rlsproxy.enable_strict_policies('tenants', 'id');
SELECT rlsproxy.enable_strict_policies('users');
SELECT rlsproxy.enable_strict_policies('documents');
SQL
}
