#!/usr/bin/env bash
# Builds tether, installs `tether`, `tether-agent` and `tether-sandbox` into $PREFIX/bin (default
# /usr/local), then shows the main job working.
#
#   ./install.sh                      # against a throw-away sandbox cluster (tether-demo): the
#                                     # host's own network is not touched
#   ./install.sh --kubeconfig K [--context C] [-n NS]
#                                     # against your cluster: connect from this machine, show
#                                     # the status, quit (this changes the host's routes and
#                                     # DNS until the quit)
#
# Run as root. Set TETHER_NO_DEMO=1 to only build and install.
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${PREFIX:-/usr/local}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

bash scripts/install-deps.sh
cargo build --release --workspace
release="${CARGO_TARGET_DIR:-target}/release"
install -m 0755 "$release/tether" "$release/tether-agent" "$release/tether-sandbox" "$PREFIX/bin/"
echo "installed: $PREFIX/bin/tether $PREFIX/bin/tether-agent $PREFIX/bin/tether-sandbox ($("$PREFIX/bin/tether" --version))"

if [ -n "${TETHER_NO_DEMO:-}" ]; then
    exit 0
fi
if [ $# -eq 0 ]; then
    exec "$release/tether-demo"
fi
"$PREFIX/bin/tether" connect "$@"
trap '"$PREFIX/bin/tether" quit' EXIT
"$PREFIX/bin/tether" status
