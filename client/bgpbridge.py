"""The process ExaBGP runs for a border client (issue #13): relays ExaBGP's API both ways over a unix socket.

ExaBGP's process API talks to a child process it starts itself: JSON events on the child's stdin,
commands from the child's stdout, one per line. The border client (`client.bgpspeaker`) listens on a unix
socket; this child connects to it and copies lines stdin -> socket and socket -> stdout until either side
closes. Usage (in ExaBGP's `process { run ... }`): `python -m client.bgpbridge SOCKET`.
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m client.bgpbridge SOCKET", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[0])
    except OSError as e:
        print(f"bgpbridge: cannot connect to {argv[0]}: {e}", file=sys.stderr)
        return 1

    def commands() -> None:        # client -> ExaBGP
        out = sys.stdout.buffer
        while chunk := sock.recv(65536):
            out.write(chunk)
            out.flush()
        os._exit(0)                 # the client went away: ExaBGP restarts us (and we reconnect or fail)

    threading.Thread(target=commands, daemon=True).start()
    stdin = sys.stdin.buffer.raw
    while chunk := stdin.read(65536):   # ExaBGP -> client (JSON lines)
        sock.sendall(chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
