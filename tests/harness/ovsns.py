"""One OVS instance (ovsdb-server + ovs-vswitchd) in a network namespace of its own, for real-OVS tests:
created, started, and torn down by name whatever the test did."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

from lab import netns
from lab.ovs import OvsInstance


@contextlib.contextmanager
def ovs_in_netns(prefix: str) -> Iterator[tuple[str, OvsInstance, str]]:
    """(token, the running OvsInstance, its namespace `PREFIX-TOKEN-lab`); its run dir is /tmp/PREFIX-TOKEN.
    Everything named `PREFIX-TOKEN*` (namespaces, veths) is removed on exit."""
    tok = secrets.token_hex(2)
    ns = f"{prefix}-{tok}-lab"
    netns.create_netns(ns)
    ovs = OvsInstance(Path(f"/tmp/{prefix}-{tok}"), netns=ns)
    try:
        ovs.start()
        yield tok, ovs, ns
    finally:
        ovs.teardown(remove_run_dir=True)
        netns.cleanup(f"{prefix}-{tok}")
