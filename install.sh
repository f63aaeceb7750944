#!/usr/bin/env bash
# Builds tether, installs `tether`, `tether-agent` and `tether-sandbox` into $PREFIX/bin (default /usr/local),
# then shows the main job working: a throw-away "cluster" and "laptop" (two network
# namespaces; the host's own network is not touched), `tether connect` from the laptop,
# requests to cluster names and addresses, and the laptop restored afterwards.
# Run as root. Set TETHER_NO_DEMO=1 to only build and install.
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${PREFIX:-/usr/local}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

bash scripts/install-deps.sh
cargo build --release --workspace
install -m 0755 target/release/tether target/release/tether-agent target/release/tether-sandbox "$PREFIX/bin/"
echo "installed: $PREFIX/bin/tether $PREFIX/bin/tether-agent $PREFIX/bin/tether-sandbox ($("$PREFIX/bin/tether" --version))"

if [ -z "${TETHER_NO_DEMO:-}" ]; then
    target/release/tether-demo
fi
