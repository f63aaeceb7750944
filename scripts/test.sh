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

# Lists the tests of tests/tests/<file>.rs (whose names contain <filter>, if given) as
# skipped with <reason>, in cargo's words so the summary below counts them.
report_skipped() { # <reason> <filter> <file>...
    local reason="$1" filter="$2" t name n=0
    shift 2
    for t in "$@"; do
        while read -r name; do
            echo "test $name ... ignored, $reason" | tee -a "$log"
            n=$((n + 1))
        done < <(cargo test -q -p tether-tests --test "$t" -- --list --include-ignored "$filter" 2>/dev/null | sed -n 's/: test$//p')
    done
    echo "test result: ok. 0 passed; 0 failed; $n ignored; 0 measured; 0 filtered out" >>"$log"
}

# Scenarios only the real control plane can judge (RBAC: the builtin one stores it but does
# not enforce it). Their tests sit in a module `upstream_only`; the builtin run leaves them
# out and reports them as skipped, the upstream run below runs them.
upstream_only=(rbac)
test_args=(--skip upstream_only::)
if [ "$(id -u)" -eq 0 ]; then
    test_args+=(--include-ignored)
else
    echo "not root: the tests that need root are skipped" >&2
fi
set +e
# --no-fail-fast: one failing test binary must not hide how the others did.
cargo test --workspace --no-fail-fast -- "${test_args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
report_skipped "builtin control plane: it does not enforce RBAC (see tests/tests/rbac.rs)" upstream_only:: "${upstream_only[@]}"

# The end-to-end Kubernetes scenarios again, against the real control plane
# (`tether-sandbox up --control-plane upstream`, built by scripts/build-upstream.sh). Where it
# cannot run (not root, no Go, modules not fetchable) each scenario is reported as skipped
# with the reason, in cargo's words so the summary below counts it.
upstream_scenarios=(kubernetes kubectl intercept personal run rootless doctor loadbalancer ingress ingress_hosts "${upstream_only[@]}")
skip_upstream() { # <reason>
    report_skipped "upstream control plane: $1" "" "${upstream_scenarios[@]}"
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
