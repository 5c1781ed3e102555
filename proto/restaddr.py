"""Where a switch client's REST API listens: the one rule for the client (which binds it), the operator
commands (`firepath clients|status --client-rest`, controller.ops.clientrest) and a master replica's page
(`GET /v1/switch/NAME`, controller.clientfetch), which read it.

The client serves its REST on its own host's 127.0.0.1, port `rest_port` (the config's, or `--rest-port`;
the lab's at 28000 + id when the config has none): never on the control-plane network, as `/v1/reload`
(admin token) and `/v1/routes` (an OVS read) are the switch's own business. So only a process in the
switch's network namespace can read it: an operator command run there, and a master replica running in
that namespace too — known by the switch's datagrams arriving from a loopback address (only a local
process can send from 127.0.0.0/8 over `lo`; the lab gives each client 127.1.0.<id>). The address those
datagrams come from is never where the master connects: a lab client's 127.1.0.<id> has nothing
listening on it, so whoever squatted it (any local user) answered in the client's place.
"""

from __future__ import annotations

import ipaddress

CLIENT_REST_HOST = "127.0.0.1"
MAX_STATE = 1 << 20          # bytes of a client's /v1/state read at most (a real one is a few KiB)


def client_rest_url(port: int, path: str = "/v1/state") -> str:
    """The URL of `path` on the client REST at `port` (read from within the switch's namespace)."""
    return f"http://{CLIENT_REST_HOST}:{int(port)}{path}"


def shares_namespace(source: str) -> bool:
    """True when a datagram from `source` (an address string) came from this network namespace: a loopback
    address. False for anything else, an unparsable string included."""
    try:
        return ipaddress.ip_address(source.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
