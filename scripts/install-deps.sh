#!/usr/bin/env bash
# Installs the system packages firepath's lab and tests need (Debian/Ubuntu), if missing.
#   scripts/install-deps.sh               OVS, nftables, iproute2, ping (the lab, `make demo`), and for eBGP
#                                         borders ExaBGP (the border's speaker) and FRR (the lab's external router)
#   scripts/install-deps.sh --containers  also docker.io, docker-compose, debootstrap, chromium(+driver); starts the Docker
#                                         engine when it is not running (tests/test_containers.py, `make test`)
#   scripts/install-deps.sh --bench       also the peer the benchmarks compare against (Debian `frr`: zebra,
#                                         ospfd, bgpd, bfdd; bench/peers/frr.py; FRR is now a default too)
set -euo pipefail
containers=0
[ "${1:-}" = "--containers" ] && containers=1
need=()
if [ "${1:-}" = "--bench" ]; then
    [ -x /usr/lib/frr/zebra ] || need+=(frr)
fi
command -v ovs-vswitchd >/dev/null 2>&1 || need+=(openvswitch-switch)
command -v ovs-vsctl >/dev/null 2>&1 || need+=(openvswitch-common)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v exabgp >/dev/null 2>&1 || need+=(exabgp)
{ [ -x /usr/lib/frr/bgpd ] && command -v vtysh >/dev/null 2>&1; } || need+=(frr)
if [ $containers -eq 1 ]; then
    # the controller cluster in containers: engine (+ its CLI), compose v1, a base image builder
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
    # the browser tests of the topology page (tests/test_page_browser.py) drive a real headless Chromium
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "firepath: missing system packages: ${need[*]}" >&2
        echo "firepath: run as root, or: sudo apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "firepath: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ $containers -eq 1 ]; then
    exec bash "$(dirname "$0")/start-dockerd.sh"
fi
