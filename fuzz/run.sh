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
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_stream server_stream guard_sql guard_cache jwt_password config_toml)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
export RUSTC_BOOTSTRAP=1
flags=(-s none -a)
cargo fuzz build "${flags[@]}" || exit 1

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    echo "== $target: ${seconds}s"
    cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY|.*(ERROR|panicked|Test unit written|deadly signal))'
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("$target")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "all targets passed"
