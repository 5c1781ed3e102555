"""Shared pytest configuration for firepath's tests."""

from __future__ import annotations

import logging
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


@pytest.fixture(autouse=True)
def _root_logging_back() -> object:
    """A test that runs a daemon's or a command's main() gets proto.logsetup's stderr handler on the root
    logger, bound to the stream pytest captured for that test and closes after it: a thread of the test that
    logged later wrote to a closed file ('ValueError: I/O operation on closed file' in the run's output).
    Take that handler off again, and the root level back."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for h in root.handlers[:]:
        if h not in before and type(h) is logging.StreamHandler:
            root.removeHandler(h)
    root.setLevel(level)
