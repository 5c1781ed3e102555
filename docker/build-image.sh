#!/usr/bin/env bash
# Builds the master image from this checkout without network access during the image build:
#   1. the firepath wheel and its dependencies' wheels into docker/wheels/ (pip on the host: the Python
#      index or the local mirror/cache pip is configured with);
#   2. docker build of docker/Dockerfile with docker/ as the context (only the wheels and this directory).
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
mkdir -p "$here/wheels"
rm -f "$here"/wheels/firepath-*.whl         # dependencies' wheels stay: the next build reuses them
"$python" -m pip wheel -q --disable-pip-version-check --wheel-dir "$here/wheels" --find-links "$here/wheels" "$repo"
# The legacy builder: Debian's docker.io has no buildx, and it needs nothing beyond the engine.
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" -t "$tag" "$here" >/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'image %s (base %s) built in %d.%03d s\n' "$tag" "$base" $((ms / 1000)) $((ms % 1000))
