#!/usr/bin/env bash
# Builds a local base image for docker/Dockerfile without any image registry: a minimal Debian root file
# system (debootstrap, from the Debian mirror apt already uses) with python3 and venv, imported as IMAGE.
# Skips the work when IMAGE already exists (the Docker engine's image store is the cache).
#   docker/build-base.sh [IMAGE]        default firepath-base:<this machine's Debian codename>
# Needs root, debootstrap and a running Docker engine. The release defaults to this machine's, so that
# wheels built here (CPython ABI) install in the image; FIREPATH_BASE_SUITE and FIREPATH_BASE_MIRROR override.
set -euo pipefail
suite=${FIREPATH_BASE_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
image=${1:-firepath-base:$suite}
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image: cached"
    exit 0
fi
mirror=${FIREPATH_BASE_MIRROR:-}
if [ -z "$mirror" ]; then
    # deb822 sources first (URIs: ...), then the one-line format (deb URL SUITE ...)
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
root=$(mktemp -d /var/tmp/firepath-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "base image $image: debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "base image $image: built in $(( $(date +%s) - start )) s"
