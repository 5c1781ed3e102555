"""`firepath lab miscable` says what it did in the fabric's terms (pure parts; the fault itself on a running
lab is in tests/test_lab_e2e.py)."""

from __future__ import annotations

from lab.inject import cabling_ends
from lab.report import describe_fault


def test_miscable_is_described_by_switch_ports_not_veth_names() -> None:
    """Fresh-user finding: `lab miscable` printed the veth pairs it made (fpx1v3a, ...), names that appear
    nowhere else; the record now carries the new cabling as SWITCH:PORT pairs, and that is what is shown."""
    ifaces = {"tor-1-1:1": "fpx1v0a", "agg-1-1:1": "fpx1v0b", "tor-1-2:1": "fpx1v1a", "agg-1-2:1": "fpx1v1b"}
    new = [["fpx1v0a", "fpx1v1b"], ["fpx1v1a", "fpx1v0b"]]
    cabled = cabling_ends(ifaces, new)
    assert cabled == [["tor-1-1:1", "agg-1-2:1"], ["tor-1-2:1", "agg-1-1:1"]]
    fault = {"kind": "miscable", "a": "tor-1-1:1", "b": "tor-1-2:1", "old": [], "new": new, "cabled": cabled}
    text = describe_fault(fault)
    assert text == "miscabled tor-1-1:1<->tor-1-2:1 (as tor-1-1:1<->agg-1-2:1, tor-1-2:1<->agg-1-1:1)"
    assert "fpx1" not in text
    del fault["cabled"]                  # a record written by an older lab: no veth names either
    assert describe_fault(fault) == "miscabled tor-1-1:1<->tor-1-2:1"
