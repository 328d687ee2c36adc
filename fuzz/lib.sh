# Shared by fuzz/run.sh and fuzz/smoke.sh (sourced from fuzz/): the targets, libFuzzer's
# limits, and the loop that runs each target and reports the ones that failed.

TARGETS=(client_stream server_stream guard_sql guard_cache jwt_password config_toml)
# Memory (MiB), time per input (s), input size: what each target is held to.
LIMITS=(-rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1)

# dict_args TARGET: libFuzzer's -dict option when dicts/TARGET.dict exists (run from fuzz/).
dict_args() {
    [ -f "dicts/$1.dict" ] && echo "-dict=$PWD/dicts/$1.dict"
    return 0
}

# run_each SECONDS RUN TARGET...: `RUN TARGET SECONDS` fuzzes one target; prints libFuzzer's
# summary of each and returns non-zero if any target failed.
run_each() {
    local seconds=$1 run=$2 target
    local failed=()
    shift 2
    for target in "$@"; do
        echo "== $target: ${seconds}s"
        "$run" "$target" "$seconds" 2>&1 |
            grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY|.*(ERROR|panicked|Test unit written|deadly signal))'
        [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("$target")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/; make each a test in tests/fuzz_regressions.rs)"
        return 1
    fi
    echo "all targets passed"
}
