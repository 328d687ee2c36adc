#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, starting from
# the recorded seeds (seeds/TARGET) and the working corpus (corpus/TARGET, git-ignored).
# Crashes, out-of-memory inputs and timeouts land in artifacts/TARGET/; the script goes on
# with the other targets and exits non-zero if any target failed.
#
#   fuzz/run.sh 20          # 20 s per target (CI runs fuzz/smoke.sh instead)
#   fuzz/run.sh 600 guard_cache   # one target
#
# libFuzzer needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 enables
# them. No sanitizer (-s none): the proxy is safe Rust, and AddressSanitizer would not see
# into libpg_query's C (built without it) anyway; panics, overflows (debug assertions on),
# memory (-rss_limit_mb) and time (-timeout) are what is checked.
set -uo pipefail
cd "$(dirname "$0")"
. ./lib.sh
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
export RUSTC_BOOTSTRAP=1
flags=(-s none -a)
cargo fuzz build "${flags[@]}" || exit 1

fuzz_one() {
    mkdir -p "corpus/$1" "seeds/$1"
    cargo fuzz run "${flags[@]}" "$1" "corpus/$1" "seeds/$1" -- -max_total_time="$2" "${LIMITS[@]}" $(dict_args "$1")
}
run_each "$seconds" fuzz_one "${targets[@]}"
