#!/usr/bin/env bash
# Builds the master image from this checkout with no network access during the image build:
#   1. the firepath wheel into docker/wheels/app/, and the wheels of its dependencies into docker/wheels/deps/
#      (pip on the host: offline from what is already there, else from the Python index or the mirror pip
#      is configured with);
#   2. docker build of docker/Dockerfile with docker/ as the context. The dependencies are one layer and
#      firepath another, so a rebuild after a source change reinstalls firepath only.
#   docker/build-image.sh [TAG]                  default firepath:latest
#   BASE_IMAGE=firepath-base:bookworm docker/build-image.sh    (default python:3.11-slim)
#   PYTHON=.venv/bin/python                      the interpreter whose pip builds the wheels (default python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
tag=${1:-firepath:latest}
base=${BASE_IMAGE:-python:3.11-slim}
python=${PYTHON:-python3}
start=$(date +%s%N)
pip=("$python" -m pip wheel -q --disable-pip-version-check)
rm -rf "$here/wheels/app"
mkdir -p "$here/wheels/app" "$here/wheels/deps"
"${pip[@]}" --no-deps --wheel-dir "$here/wheels/app" "$repo"
# the dependencies: offline when every wheel is already there, else fetched; never firepath itself
if ! "${pip[@]}" --no-index --find-links "$here/wheels/deps" --find-links "$here/wheels/app" \
        --wheel-dir "$here/wheels/deps" firepath >/dev/null 2>&1; then
    "${pip[@]}" --find-links "$here/wheels/deps" --find-links "$here/wheels/app" --wheel-dir "$here/wheels/deps" firepath
fi
rm -f "$here"/wheels/deps/firepath-*.whl
# The legacy builder: Debian's docker.io has no buildx, and it needs nothing beyond the engine.
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "$here" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'image %s (base %s) built in %d.%03d s\n' "$tag" "$base" $((ms / 1000)) $((ms % 1000))
