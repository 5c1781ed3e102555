#!/usr/bin/env bash
# Installs the system packages firepath's tests and lab need (Debian/Ubuntu), if missing.
set -euo pipefail
need=()
command -v ovs-vswitchd >/dev/null 2>&1 || need+=(openvswitch-switch)
command -v ovs-vsctl >/dev/null 2>&1 || need+=(openvswitch-common)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
# the browser tests of the topology page (tests/test_web_browser.py) drive a real headless Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
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
