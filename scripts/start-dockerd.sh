#!/usr/bin/env bash
# Starts the Docker engine if it is installed and not answering: through systemd when systemd runs the
# machine, else dockerd in the background (CI containers and machines without an init system).
# Without root, or without docker.io, it says so and leaves it to the containers test to report.
set -euo pipefail
command -v dockerd >/dev/null 2>&1 || exit 0
# The engine's own client (/usr/bin/docker, same release as dockerd): a newer CLI elsewhere on PATH works too.
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli=$(command -v docker || true)
[ -n "$docker_cli" ] || exit 0
if "$docker_cli" info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "firepath: the Docker engine is not running; start it as root (scripts/start-dockerd.sh)" >&2
    exit 0
fi
if [ -d /run/systemd/system ] && systemctl start docker >/dev/null 2>&1; then
    :
else
    echo "firepath: starting dockerd (log /var/log/firepath-dockerd.log)"
    nohup dockerd >>/var/log/firepath-dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 120); do
    "$docker_cli" info >/dev/null 2>&1 && exit 0
    sleep 0.5
done
echo "firepath: dockerd did not answer within 60 s; see /var/log/firepath-dockerd.log" >&2
exit 1
