#!/usr/bin/env bash
# Installs the system packages firepath's tests and lab need (Debian/Ubuntu), if missing.
#   scripts/install-deps.sh           what `make test` and `firepath lab` need
#   scripts/install-deps.sh --bench   also the peer the benchmarks compare against (Debian `frr`: zebra,
#                                     ospfd, bgpd, bfdd; bench/peers/frr.py), not needed by `make test`
set -euo pipefail
need=()
if [ "${1:-}" = "--bench" ]; then
    [ -x /usr/lib/frr/zebra ] || need+=(frr)
fi
command -v ovs-vswitchd >/dev/null 2>&1 || need+=(openvswitch-switch)
command -v ovs-vsctl >/dev/null 2>&1 || need+=(openvswitch-common)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "firepath: missing system packages: ${need[*]}" >&2
    echo "firepath: run as root, or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "firepath: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
