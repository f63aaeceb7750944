#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end
# scenarios (which need root: they create network namespaces and TUN devices).
#
# Tests that need root are marked `#[ignore = "needs root ..."]`: run as root (as CI is),
# this script includes them; run as another user, they are reported as skipped with that
# reason, never as passed. So that "include the ignored ones" means exactly "the root
# ones", no test may be ignored for any other reason.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

other_ignores="$(grep -rn --include='*.rs' '#\[ignore' cli agent tunnel sandbox tests | grep -v '#\[ignore = "needs root' || true)"
if [ -n "$other_ignores" ]; then
    echo "tests ignored for a reason other than root (this script runs every ignored test as root):" >&2
    echo "$other_ignores" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the workspace's binaries, so build them all first.
cargo build --workspace --all-targets
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
include=()
if [ "$(id -u)" -eq 0 ]; then
    include=(-- --include-ignored)
else
    echo "not root: the tests that need root are skipped" >&2
fi
set +e
cargo test --workspace "${include[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The end-to-end Kubernetes scenarios again, against the real control plane
# (`tether-sandbox up --control-plane upstream`, built by scripts/build-upstream.sh). Where it
# cannot run (not root, no Go, modules not fetchable) each scenario is reported as skipped
# with the reason, in cargo's words so the summary below counts it.
upstream_scenarios=(kubernetes kubectl)
skip_upstream() { # <reason>
    local t n=0
    for t in "${upstream_scenarios[@]}"; do
        while read -r name; do
            echo "test upstream::$name ... ignored, upstream control plane: $1" | tee -a "$log"
            n=$((n + 1))
        done < <(cargo test -q -p tether-tests --test "$t" -- --list --include-ignored 2>/dev/null | sed -n 's/: test$//p')
    done
    echo "test result: ok. 0 passed; 0 failed; $n ignored; 0 measured; 0 filtered out" >>"$log"
}
if [ "$(id -u)" -ne 0 ]; then
    skip_upstream "needs root"
else
    set +e
    bash scripts/build-upstream.sh
    built=$?
    set -e
    case $built in
    0)
        for t in "${upstream_scenarios[@]}"; do
            set +e
            TETHER_SANDBOX_CONTROL_PLANE=upstream cargo test -p tether-tests --test "$t" -- --include-ignored 2>&1 | tee -a "$log"
            s=${PIPESTATUS[0]}
            set -e
            [ "$s" -eq 0 ] || status=$s
        done
        ;;
    3) skip_upstream "Go is not installed" ;;
    4) skip_upstream "scripts/build-upstream.sh cannot fetch the Go modules" ;;
    *) echo "scripts/build-upstream.sh failed ($built)" >&2; status=1 ;;
    esac
fi
# Why tests were skipped, one line per reason.
grep -o '\.\.\. ignored, .*' "$log" | sed 's/^\.\.\. ignored, //' | sort | uniq -c |
    awk '{ n = $1; $1 = ""; printf "skipped %d:%s\n", n, $0 }' || true
# One closing line for the whole suite (cargo prints one per test binary, the last of which
# is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
