"""Shared pytest configuration for firepath's tests."""

from __future__ import annotations

import os
import shutil

import pytest


def ovs_available() -> str | None:
    """Return None when real-OVS tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, Open vSwitch)"
    for tool in ("ovs-vswitchd", "ovsdb-server", "ovs-vsctl", "ovs-ofctl", "ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (make test installs openvswitch-switch, nftables, iproute2)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = ovs_available()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "ovs" in item.keywords:
            item.add_marker(skip)
