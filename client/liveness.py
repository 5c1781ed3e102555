"""OVSDB runtime of link OAM: configure CFM on this switch's fabric ports and monitor what OVS reports.

The thin I/O half of `client.oam` (which holds every rule). One thread owns an OVSDB IDL (the `ovs`
package's Python IDL, the client library Open vSwitch itself ships; os-ken already depends on it, so it
costs no new dependency, and its monitor replicates just the columns we register):

- it finds our bridge by `datapath_id` (the switch id, as OpenFlow sees it) and the fabric ports'
  `Interface` rows by `ofport`;
- it writes the desired CFM config (`ConfigureOam`: `cfm_mpid`, `other_config:cfm_interval`,
  `other_config:cfm_extended=true`) only where a row differs, so a restarted client changes nothing and
  CFM keeps running in the datapath while no client runs (like the flows, fail_mode=secure);
- it turns every change of a monitored row into an `OamObserved` event (`cfm_mpid`, `cfm_fault`,
  `cfm_remote_mpids`, `bfd_status`): ovsdb-server pushes the updates (an OVSDB monitor), nothing polls.

Failures are events, not exceptions: `OamSetupFailed(ports, reason)` when the OVSDB cannot be reached or
read, its schema has no CFM columns, or a transaction is refused; the core then falls those ports back to
software ND. `OvsdbConnection(up)` reports the session state (the IDL reconnects by itself).
Events are handed to `on_event` from this thread; the caller queues them (client.daemon).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from client.oam import ConfigureOam, OamObservation, OamObserved, OamSetupFailed, OvsdbConnection

# ovs.poller probes for eventlet/gevent monkey-patching at import. We use neither (os-ken runs on native
# threads), and importing eventlet would cost every client ~0.16 s of CPU at start and ~20 MB of RSS: hide
# the modules not already loaded while the ovs package is imported (the probe then finds nothing).
_HIDDEN = [name for name in ("eventlet", "gevent") if name not in sys.modules]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ovs.db.idl
        import ovs.jsonrpc
        import ovs.poller
        import ovs.stream
finally:
    for _name in _HIDDEN:
        sys.modules.pop(_name, None)

log = logging.getLogger("firepath.client.liveness")

__all__ = ["OvsdbLiveness", "fetch_schema"]

DB = "Open_vSwitch"
#: Interface columns the monitor replicates (and the ones that must exist for OAM).
CFM_COLUMNS = ("cfm_mpid", "cfm_fault", "cfm_remote_mpids")
_INTERFACE_COLUMNS = ["name", "ofport", "other_config", "bfd_status", *CFM_COLUMNS]


def _opt(value: Any) -> Any:
    """An optional OVSDB column read through the IDL: [] or [x] (or x), as None or x."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def fetch_schema(remote: str, timeout: float = 5.0) -> dict:
    """The Open_vSwitch schema as the server has it (JSON). OSError if it cannot be read."""
    error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), timeout * 1000)
    if error:
        raise OSError(error, f"cannot connect to OVSDB {remote}: {os.strerror(error)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        error, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request("get_schema", [DB]))
        if error:
            raise OSError(error, f"OVSDB {remote}: get_schema: {os.strerror(error)}")
        if reply.error is not None:
            raise OSError(0, f"OVSDB {remote}: get_schema: {reply.error}")
        return reply.result
    finally:
        rpc.close()


def _refs(row: Any, column: str) -> list[Any]:
    """The uuids a reference column of an IDL row holds, whether or not the replica has those rows."""
    datum = row._data.get(column)
    return [atom.value for atom in datum.values] if datum is not None else []


class OvsdbLiveness:
    """The OVSDB thread of one client: `start()`, `configure(action)` any time, `stop()`."""

    def __init__(self, remote: str, dpid: int, on_event: Callable[[Any], None]) -> None:
        self.remote = remote
        self.datapath_id = f"{dpid:016x}"
        self.on_event = on_event
        self._desired = ConfigureOam({}, 0)
        self._desired_seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._last: dict[int, OamObservation] = {}
        self._refused: set[int] = set()       # ports whose transaction OVSDB refused: not retried
        self.transactions = 0
        self.updates = 0
        self.replicated = (0, 0, 0)          # Bridge, Port, Interface rows in the replica (narrowed)

    # ------------------------------------------------------------------------------------------ API
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="ovsdb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(2.0)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def configure(self, action: ConfigureOam) -> None:
        """Desired CFM config (replaces the previous one); applied by the OVSDB thread."""
        with self._lock:
            self._desired = action
            self._desired_seq += 1
        self._wake()

    # ------------------------------------------------------------------------------------------ thread
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _main(self) -> None:
        try:
            schema = fetch_schema(self.remote)
        except OSError as e:
            self.on_event(OamSetupFailed(None, str(e.strerror or e)))
            return
        columns = schema.get("tables", {}).get("Interface", {}).get("columns", {})
        missing = [c for c in CFM_COLUMNS if c not in columns]
        if missing:
            self.on_event(OamSetupFailed(None, f"OVSDB {self.remote}: schema has no Interface.{missing[0]} "
                                               "(an OVS without CFM)"))
            return
        helper = ovs.db.idl.SchemaHelper(schema_json=schema)
        helper.register_columns("Bridge", ["name", "datapath_id", "ports"])
        helper.register_columns("Port", ["name", "interfaces"])
        helper.register_columns("Interface", [c for c in _INTERFACE_COLUMNS if c in columns])
        idl = ovs.db.idl.Idl(self.remote, helper)
        # Conditional monitoring (OVSDB monitor_cond): one ovsdb-server may hold every bridge of a lab (or
        # of a big switch); without conditions each client replicated all of them and woke up on every CFM
        # change anywhere (64 clients x 64 bridges on a 4 x 16 lab). Our bridge only, then its ports and
        # their interfaces, refined as the replica learns their uuids (`_narrow`).
        idl.cond_change("Bridge", [["datapath_id", "==", self.datapath_id]])
        idl.cond_change("Port", [])
        idl.cond_change("Interface", [])
        try:
            self._loop(idl)
        except Exception as e:  # a bug here must not pass silently: every port falls back to ND
            log.exception("ovsdb thread failed")
            self.on_event(OamSetupFailed(None, f"OVSDB thread failed: {e}"))
        finally:
            idl.close()

    def _loop(self, idl: Any) -> None:
        seen_seqno = -1
        seen_desired = -1
        txn: Any = None
        txn_ports: tuple[int, ...] = ()
        connected = False
        while not self._stop.is_set():
            idl.run()
            # the IDL has no public "connected now"; its jsonrpc session does (ovs.jsonrpc.Session)
            up = idl._session.is_connected() and idl.has_ever_connected()
            if up != connected:
                connected = up
                self.on_event(OvsdbConnection(up))
            if txn is not None:
                txn, seen_seqno = self._commit(txn, txn_ports, seen_seqno)
            with self._lock:
                desired, desired_seq = self._desired, self._desired_seq
            if idl.change_seqno != seen_seqno or desired_seq != seen_desired:
                seen_seqno, seen_desired = idl.change_seqno, desired_seq
                self._narrow(idl)
                rows = self._rows(idl)
                if rows is not None:
                    self.updates += 1
                    if txn is None:
                        txn, txn_ports = self._reconcile(idl, rows, desired)
                        if txn is not None:      # send it now: the IDL must not run with an open txn
                            txn, seen_seqno = self._commit(txn, txn_ports, seen_seqno)
                    self._observe(rows, desired)
            poller = ovs.poller.Poller()
            idl.wait(poller)
            if txn is not None:
                txn.wait(poller)
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            poller.block()
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)

    def _commit(self, txn: Any, ports: tuple[int, ...], seen_seqno: int) -> tuple[Any, int]:
        """Advance a transaction; (txn or None when finished, seqno to compare against)."""
        status = txn.commit()
        if status == ovs.db.idl.Transaction.INCOMPLETE:
            return txn, seen_seqno
        if status in (ovs.db.idl.Transaction.ERROR, ovs.db.idl.Transaction.ABORTED,
                      ovs.db.idl.Transaction.NOT_LOCKED):
            reason = f"OVSDB refused the CFM config: {status}: {txn.get_error() or ''}".strip()
            self._refused.update(ports)
            self.on_event(OamSetupFailed(ports, reason))
        elif status == ovs.db.idl.Transaction.TRY_AGAIN:
            seen_seqno = -1          # re-read and retry once the replica moved on
        return None, seen_seqno

    def _narrow(self, idl: Any) -> None:
        """Monitor only the Port rows our bridge lists and the Interface rows those ports list (a clause
        per uuid; the clauses of a monitor condition are ORed). The references are read from the rows'
        raw data: the IDL hides references to rows it does not replicate (yet)."""
        ports: list[Any] = []
        for bridge in idl.tables["Bridge"].rows.values():
            if _opt(bridge.datapath_id) == self.datapath_id:
                ports = _refs(bridge, "ports")
        ifaces: list[Any] = []
        for uuid in ports:
            row = idl.tables["Port"].rows.get(uuid)
            if row is not None:
                ifaces += _refs(row, "interfaces")
        self.replicated = tuple(len(idl.tables[t].rows) for t in ("Bridge", "Port", "Interface"))
        idl.cond_change("Port", [["_uuid", "==", ["uuid", str(u)]] for u in sorted(ports)])
        idl.cond_change("Interface", [["_uuid", "==", ["uuid", str(u)]] for u in sorted(ifaces)])

    def _rows(self, idl: Any) -> dict[int, Any] | None:
        """ofport -> Interface row of our bridge; None until the replica has our bridge."""
        for bridge in idl.tables["Bridge"].rows.values():
            if _opt(bridge.datapath_id) == self.datapath_id:
                out = {}
                for port in bridge.ports:
                    for iface in port.interfaces:
                        ofport = _opt(iface.ofport)
                        if ofport is not None and ofport > 0:
                            out[ofport] = iface
                return out
        return None

    def _reconcile(self, idl: Any, rows: dict[int, Any], desired: ConfigureOam) -> tuple[Any, tuple[int, ...]]:
        txn = None
        ports = []
        interval = str(desired.interval_ms)
        for port, want in desired.mpids.items():
            row = rows.get(port)
            if row is None or port in self._refused:
                continue
            oc = row.other_config
            if (_opt(row.cfm_mpid) == want and oc.get("cfm_interval") == interval
                    and oc.get("cfm_extended") == "true"):
                continue
            txn = txn or ovs.db.idl.Transaction(idl)
            row.cfm_mpid = want
            row.setkey("other_config", "cfm_interval", interval)
            row.setkey("other_config", "cfm_extended", "true")
            ports.append(port)
        for port in desired.disable:
            row = rows.get(port)
            if row is None or port in self._refused or _opt(row.cfm_mpid) is None:
                continue
            txn = txn or ovs.db.idl.Transaction(idl)
            row.cfm_mpid = []
            ports.append(port)
        if txn is not None:
            txn.add_comment(f"firepath client: CFM on ports {ports}")
            self.transactions += 1
        return txn, tuple(ports)

    def _observe(self, rows: dict[int, Any], desired: ConfigureOam) -> None:
        watched = (*desired.mpids, *desired.disable)    # removed ports too: the core waits to see them gone
        for port in [p for p in self._last if p not in watched]:
            del self._last[port]
        for port in watched:
            row = rows.get(port)
            if row is None:
                obs = OamObservation(port, None, None)
            else:
                bfd = row.bfd_status if hasattr(row, "bfd_status") else {}
                obs = OamObservation(
                    port,
                    _opt(row.cfm_mpid),
                    _opt(row.cfm_fault),
                    tuple(sorted(row.cfm_remote_mpids)),
                    None if "forwarding" not in bfd else bfd["forwarding"] == "true",
                )
            if self._last.get(port) != obs:
                self._last[port] = obs
                self.on_event(OamObserved(obs))
