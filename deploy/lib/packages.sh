# Installing Debian packages for rlsproxy's scripts: one place for apt-get.
# Source it from a bash script that defines `die MESSAGE` and `say MESSAGE`.

# Runs a command as root, through sudo when we are not root (apt-get).
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"; fi
}

# Installs the given Debian packages (none given: nothing to do); apt-get update runs once.
APT_UPDATED=0
apt_install() {
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null || die "please install: $* (no apt-get here)"
    if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -q >/dev/null; APT_UPDATED=1; fi
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Prints the packages building rlsproxy needs and lacks: libpg_query (the statement guard)
# is built through bindgen, which needs libclang and a C compiler; libFuzzer (fuzz/smoke.sh)
# is C++.
missing_build_packages() {
    if command -v dpkg >/dev/null; then
        dpkg -s libclang-dev >/dev/null 2>&1 || echo libclang-dev
    fi
    command -v cc >/dev/null || echo build-essential
    command -v c++ >/dev/null || echo g++
}

# Prints whether the PostgreSQL server (initdb, pgbench, pgcrypto: Debian's postgresql) is missing.
missing_postgres_package() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || echo postgresql
}

# The client matrix's Go, Ruby and PHP drivers, all Debian packages (tests/clients/run.sh):
# prints the packages that are missing.
# Go: Debian's pgx v4 is a GOPATH tree under /usr/share/gocode, built offline in GOPATH mode.
PGX_SRC=/usr/share/gocode/src/github.com/jackc/pgx/v4
missing_go_packages() {
    command -v go >/dev/null || echo golang-go
    [ -d "$PGX_SRC" ] || echo golang-github-jackc-pgx-v4-dev
}
# Ruby: ruby-pg and ActiveRecord (Rails 6.1) on the distribution's ruby.
missing_ruby_packages() {
    command -v ruby >/dev/null || echo ruby
    ruby -e 'require "pg"' 2>/dev/null || echo ruby-pg
    ruby -e 'require "active_record"' 2>/dev/null || echo ruby-activerecord
}
# PHP: the CLI and PDO pgsql.
missing_php_packages() {
    command -v php >/dev/null || echo php-cli
    php -r 'exit(extension_loaded("pdo_pgsql") ? 0 : 1);' 2>/dev/null || echo php-pgsql
}
