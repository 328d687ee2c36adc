#!/usr/bin/env bash
# Runs rlsproxy's test suite on a fresh Debian/Ubuntu machine: installs what the
# tests need when it is missing (deploy/install-deps.sh), then checks formatting and
# lints, validates deploy/'s manifests, runs every test against a real PostgreSQL
# that the tests start themselves (initdb into a temp dir, random port), and the
# real-driver client matrix (which installs its own drivers), with a two-minute soak between,
# then a short run of every fuzz target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Whatever a fresh machine lacks (PostgreSQL server, libclang-dev, openssl, drivers' toolchains,
# promtool).
deploy/install-deps.sh

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
# The debug binary (cargo test reuses it): deploy/validate-manifests.sh runs the
# Kubernetes ConfigMaps through its check-config.
cargo build --locked --bin rlsproxy
# Kubernetes manifests, Dockerfile, alert rules and dashboard, offline (seconds once
# deploy/.venv exists; the first run pip-installs the pinned validators).
RLSPROXY_BIN="${CARGO_TARGET_DIR:-target}/debug/rlsproxy" deploy/validate-manifests.sh
cargo test --locked
# Two minutes of the soak (bench/soak.sh; an hour outside CI): a ledger of acknowledged commits
# checked against the database under reloads, terminated server connections and restarts.
SOAK_PROFILE=dev bench/soak.sh 2m
# Real drivers through the proxy in both pool modes (installs them into tests/clients/.deps).
tests/clients/run.sh
# Every fuzz target for 10 s from its seeds (fuzz/smoke.sh; long runs: fuzz/run.sh). Last: its
# build switches on RUSTC_BOOTSTRAP, which makes the next plain build redo proc-macro2's tree.
fuzz/smoke.sh 10
