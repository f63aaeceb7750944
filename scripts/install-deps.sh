#!/usr/bin/env bash
# Installs the system packages tether's build, demo and tests use, if any is missing.
# Debian/Ubuntu (apt). Run as root.
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
command -v dig >/dev/null || need+=(dnsutils)
command -v nft >/dev/null || need+=(nftables)
command -v sysctl >/dev/null || need+=(procps)
command -v kill >/dev/null || need+=(procps)
command -v getent >/dev/null || need+=(libc-bin)
command -v cc >/dev/null || need+=(gcc)
command -v pkg-config >/dev/null || need+=(pkg-config)
# The completion tests load tether's scripts in each shell, and `tether run`'s use python3.
command -v bash >/dev/null || need+=(bash)
command -v zsh >/dev/null || need+=(zsh)
command -v fish >/dev/null || need+=(fish)
command -v python3 >/dev/null || need+=(python3)
command -v pgrep >/dev/null || need+=(procps)
# The rootless scenario drops to another uid (setpriv) inside a mount namespace (unshare),
# and checks a statically linked client (busybox-static's wget).
command -v setpriv >/dev/null || need+=(util-linux)
command -v unshare >/dev/null || need+=(util-linux)
command -v mknod >/dev/null || need+=(coreutils)
[ -x /bin/busybox ] || need+=(busybox-static)
# The sandbox's ingress controller (`--demo`) runs nginx; /usr/sbin may not be on a user's PATH.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)

if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -e /dev/net/tun ]; then
    modprobe tun 2>/dev/null || true
fi
