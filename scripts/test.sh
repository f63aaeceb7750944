#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end
# scenarios (which need root: they create network namespaces and TUN devices).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the workspace's binaries, so build them all first.
cargo build --workspace --all-targets
cargo test --workspace
