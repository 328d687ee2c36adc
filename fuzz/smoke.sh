#!/usr/bin/env bash
# CI's short fuzz run: every target for SECONDS (default 10) from its recorded seeds, so that
# a crash the fuzzers can reach quickly fails CI, and what was once found stays found (the
# findings also replay in tests/fuzz_regressions.rs). Long runs: fuzz/run.sh.
#
#   fuzz/smoke.sh 10
#
# Needs no cargo-fuzz and shares the proxy's target/debug: a dev build in which only the
# proxy's code and the targets carry libFuzzer's coverage instrumentation
# ([profile.dev.package.*] rustflags in fuzz/Cargo.toml, a nightly cargo feature enabled with
# RUSTC_BOOTSTRAP=1), so the dependencies already built for the tests are reused. The one
# cost: crates whose build scripts read RUSTC_BOOTSTRAP (proc-macro2 and what depends on it)
# are built again, here and by the next plain `cargo build`; deploy/test.sh runs this last.
set -uo pipefail
# A relative CARGO_TARGET_DIR means the repository's root, as for deploy/test.sh's cargo.
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=$(cd "$root" && realpath -m "${CARGO_TARGET_DIR:-target}")
cd "$root/fuzz"
. ./lib.sh
seconds=${1:-10}

RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$target_dir cargo build --locked --bins || exit 1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The first directory receives what libFuzzer finds; the seeds stay as recorded.
fuzz_one() {
    mkdir -p "$work/$1" "artifacts/$1"
    "$target_dir/debug/$1" "$work/$1" "seeds/$1" -max_total_time="$2" "${LIMITS[@]}" -artifact_prefix="artifacts/$1/" $(dict_args "$1")
}
run_each "$seconds" fuzz_one "${TARGETS[@]}"
