"""Turns LSD updates and local port events into OpenFlow batches on the switch (the client's data path).

Runs on its own thread so that a big computation (a snapshot, a reconciliation that reads the switch back)
never delays Neighbor Discovery. Inputs come from the control thread (`on_lsd`, `on_port_usable`,
`on_connected`, `on_disconnected`) and the driver (`on_driver_event` for barrier replies); the work is
coalesced: whatever arrived while a batch was being computed or programmed is folded into the next one, the
newest LSD wins.

Fewer thread hand-offs on the common path (issue #20, "link down, remote switches"): a small update (an LSD
delta or a local repair) that finds the programmer idle is computed and sent on the caller's thread (the
control thread) instead of waking the programmer thread, as long as the last computation took at most
`INLINE_BUDGET`; and a batch is never waited for by a blocked thread: its barrier reply (or its timeout,
or the connection's end) completes it on whichever thread learns of it — the plan is committed, the version
acknowledged, the next round started. One batch is in flight at a time, whoever sent it (`_busy`), so the
make-before-break order of the batches is what it was.

Order of priorities in one round: local repair first (a port that stopped being usable leaves every
ECMP group at once, before any master update), then reconciliation after a (re)connection, then routes.

Local repair and its end: a port is *excluded* from the moment it stops being usable locally. It comes
back only when it is usable again (ND two-way up) **and** the LSD says its link is UP: at once with an
LSD applied after that (Firepath: the master's view decides when a repaired link carries traffic again),
or, when the master never saw a short failure, after one keepalive interval of usability while the LSD
still says UP (time for a master update about the failure to arrive first).

Programming of LSD version V is acknowledged (`programmed_version`) only after the barrier reply of
the batch that installed it *and* no OpenFlow error for that batch: then the switch forwards according
to V. A batch the switch rejected in part (an OpenFlow error arrives before its barrier reply) is not
committed to the plan; the next round reads the switch back and sends only what differs, i.e. retries
what failed (like Open/R's Fib), after a backoff of RETRY_MIN doubling to RETRY_MAX, sooner if a new
LSD or a local repair arrives. Errors and retries are counted (`of_errors`, `of_retries`,
`last_of_error` in `status()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from client.of.events import BarrierDone, Driver, NotConnected, OfError
from client.ofplan import OfPlanner, nd_meter_rate
from client.replica import LsdApplied
from client.routes import RouteComputer, RouteDelta
from proto.config import Fabric
from proto.logsetup import kv

log = logging.getLogger("firepath.client.programmer")

BARRIER_TIMEOUT = 5.0
#: A small update is computed inline (on the caller's thread) only while the last computation took at
#: most this long (s): the control thread also sends ND, so a big fabric's updates stay on the programmer thread.
INLINE_BUDGET = 0.002
#: Backoff (s) before a rejected batch is retried: doubles from RETRY_MIN up to RETRY_MAX.
RETRY_MIN = 0.05
RETRY_MAX = 5.0


#: OpenFlow error type METER_MOD_FAILED and the codes that only mean our model of the switch was wrong
#: (METER_EXISTS, UNKNOWN_METER); any other code means the switch cannot give us the meter we want.
OFPET_METER_MOD_FAILED = 12
METER_MODEL_CODES = frozenset({1, 3})


class BatchRejected(RuntimeError):
    """The switch answered a batch's barrier after rejecting one of its messages."""


class _OnTheThread(Exception):
    """A round taken inline needs the switch read back: the programmer thread does it."""


@dataclass(slots=True)
class _Batch:
    """The batch in flight: what its barrier reply completes."""

    batch_id: int
    version: int | None
    started: float            # programmer clock, for last_program_ms
    size: int
    deadline: float           # time.monotonic(): no barrier reply by then -> the connection is presumed gone


class Programmer:
    def __init__(self, fabric: Fabric, switch: str, driver: Driver, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fabric = fabric
        self.switch = switch
        self.driver = driver
        self.clock = clock
        self.routes = RouteComputer(fabric, switch)
        self.planner = OfPlanner(fabric, switch, auto_commit=False,
                                 nd_meter_pps=nd_meter_rate(fabric.timers.nd_interval))
        self._port_link = {port: fabric.link_at(switch, port).index for port in fabric.fabric_ports(switch)}
        # ND being two-way UP again is itself proof the link works; wait one keepalive so that a master
        # update about the failure that is still on its way can arrive first.
        self._restore_after = max(fabric.timers.keepalive, 3 * fabric.timers.nd_interval)
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        # Inputs (guarded by _cv).
        self._lsd: LsdApplied | None = None          # newest LSD not yet computed
        self._changed: set[int] = set()               # links changed since the last computation
        self._full = False                            # a snapshot arrived: recompute everything
        self._connected = False
        self._reconcile = False
        self._usable: dict[int, bool] = {}
        self._usable_since: dict[int, float] = {}
        self._excluded: dict[int, float] = {}         # port -> when it was excluded
        self._repair_pending = False
        self._external: dict[Any, tuple] | None = None  # eBGP border: new external routes (issue #13)
        self._ext_pending = False                        # ... set in the planner, not yet planned
        # State of the programmer thread.
        self._states: bytes | None = None
        self._version = -1
        self._computed = False
        self._readback = False                        # the switch rejected something: read it back
        self._busy = False                            # a round computes or its batch is in flight (_cv)
        self._inflight: _Batch | None = None          # the batch sent, not answered yet (_barrier_lock)
        self._failed: set[int] = set()                # batches with an OpenFlow error (guarded by lock)
        # A batch being written (its id not known yet): its replies may come first (_barrier_lock). The lock is
        # never held while writing: the receive thread must keep reading (a batch of many rejected messages
        # fills the switch's reply queue, and then the switch stops reading ours).
        self._sending = False
        self._early_done: set[int] = set()
        self._barrier_lock = threading.Lock()
        self._compute_s = float("inf")                # CPU time of the last computation (inline only below budget)
        #: called (programmer thread) with whether the switch kept routes, after each read-back without an LSD:
        #: the client's LSD request says so (LsdRequest.kept); set by the daemon
        self.on_kept_routes: Callable[[bool], None] | None = None
        self.inline_rounds = 0                        # rounds run on the caller's thread
        self._retry_at = 0.0                          # no retry of a rejected batch before this time
        self._backoff = RETRY_MIN
        # Status (read by REST/metrics; plain values, updated atomically).
        self.programmed_version = -1
        self.last_program_ms = 0.0
        self.batches = 0
        self.local_repairs = 0
        self.reconciles = 0
        self.of_errors = 0
        self.nd_meters = self.planner.nd_meter_pps is not None   # False once the switch refused them
        self._meters_refused = ""
        self.of_retries = 0
        self.last_of_error = ""
        self.last_batch_size = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="programmer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)

    # ------------------------------------------------------------------------------------------ inputs
    def on_lsd(self, applied: LsdApplied) -> None:
        with self._cv:
            self._lsd = applied
            if applied.full:
                self._full = True
            self._changed.update(applied.changed)
            work = self._take_inline()
            if work is None:
                self._cv.notify()
                return
        self._run(work)

    def on_external(self, routes: dict[Any, tuple]) -> None:
        """eBGP border (issue #13): prefix -> ((external port, peer MAC), ...) it sends outside itself now."""
        with self._cv:
            self._external = dict(routes)
            self._cv.notify()

    def on_port_usable(self, port: int, usable: bool) -> None:
        now = self.clock()
        with self._cv:
            self._usable[port] = usable
            if usable:
                self._usable_since[port] = now
                return
            if port in self._excluded:
                return
            self._excluded[port] = now
            self._repair_pending = True
            work = self._take_inline()
            if work is None:
                self._cv.notify()
                return
        self._run(work)

    def on_connected(self) -> None:
        with self._cv:
            self._connected = True
            self._reconcile = True
            self._cv.notify()

    def on_disconnected(self) -> None:
        with self._cv:
            self._connected = False
        # A batch in flight will never be answered (the driver forgets a dead connection's barriers): give it
        # up now, so the reconciliation after the next connection does not wait for BARRIER_TIMEOUT.
        self._abandon("connection ended")

    def on_driver_event(self, event: BarrierDone | OfError) -> None:
        """From the driver, on the thread that received the reply: a barrier completes its batch here."""
        if isinstance(event, BarrierDone):
            with self._barrier_lock:
                batch = self._inflight
                if batch is None or batch.batch_id != event.batch_id:
                    if self._sending:           # answered before send() returned its id: `_program` completes it
                        self._early_done.add(event.batch_id)
                    return
                self._inflight = None
                rejected = event.batch_id in self._failed
                self._failed.discard(event.batch_id)
            self._complete(batch, rejected)
        else:
            self.of_errors += 1
            self.last_of_error = event.text
            log.error("switch rejected a message of batch %s: %s", event.batch_id, event.text)
            if event.type == OFPET_METER_MOD_FAILED and event.code not in METER_MODEL_CODES:
                self._meters_refused = event.text
            with self._barrier_lock:        # errors precede their batch's barrier reply on the connection
                if self._sending or (self._inflight is not None and self._inflight.batch_id == event.batch_id):
                    self._failed.add(event.batch_id)
            with self._cv:
                self._readback = True                 # our model of the switch is wrong: reconcile
                self._reconcile = True
                self._cv.notify()

    # ------------------------------------------------------------------------------------------ the loop
    def _has_work(self) -> bool:
        if not self._connected or self._busy:
            return False
        if self._repair_pending or self._lsd is not None or (self._external is not None and self._computed):
            return True
        # A reconcile without an LSD reads the switch back and adds its route-independent flows (`_round`).
        return self._reconcile and self.clock() >= self._retry_at

    def _take(self) -> tuple[LsdApplied | None, set[int], bool, bool]:
        """The inputs of the next round (with _cv held); the programmer is busy from now on."""
        lsd, self._lsd = self._lsd, None
        changed, self._changed = self._changed, set()
        full, self._full = self._full, False
        external = self._external if self._computed or lsd is not None else None
        if external is not None:
            self._external = None
            self.planner.set_external(external)
            self._ext_pending = True
        reconcile = self._reconcile
        if reconcile:
            self._reconcile = False
        self._repair_pending = False
        self._busy = True
        return lsd, changed, full, reconcile

    def _take_inline(self) -> tuple[LsdApplied | None, set[int], bool, bool] | None:
        """(with _cv held) The inputs of a round to run on the caller's thread, or None: only a small update
        (a delta or a local repair on computed routes, nothing to read back, no external routes) that finds
        the programmer idle, while the last computation stayed within INLINE_BUDGET."""
        if (self._stop or not self._connected or self._busy or not self._computed or self._full
                or self._reconcile or self._readback or self._external is not None or self._ext_pending
                or (self._meters_refused and self.nd_meters) or self._compute_s > INLINE_BUDGET
                or self._thread is None):
            return None
        self.inline_rounds += 1
        return self._take()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stop:
                        return
                    self._expire()
                    if self._has_work():
                        break
                    self._cv.wait(self._wait_timeout())
                    if not self._busy and self._connected and self._restorable():
                        break
                work = self._take()
            self._run(work)

    def _run(self, work: tuple[LsdApplied | None, set[int], bool, bool]) -> None:
        """One round on this thread: compute and send; its barrier reply completes it (`_complete`)."""
        try:
            self._round(*work)
        except _OnTheThread:
            self._idle(reconcile=True)
        except NotConnected:
            self._idle(reconcile=True)      # program again after the reconnection
        except Exception:
            log.exception("programming round failed")
            self._idle(reconcile=True)
            if threading.current_thread() is self._thread:
                time.sleep(0.1)

    def _idle(self, reconcile: bool = False) -> None:
        with self._cv:
            self._busy = False
            if reconcile:
                self._reconcile = True
            self._cv.notify()

    def _wait_timeout(self) -> float | None:
        timeouts = []
        if self._excluded:
            timeouts.append(max(0.01, self._restore_after / 4))
        if self._reconcile and self._retry_at > 0 and not self._busy:
            timeouts.append(max(0.001, self._retry_at - self.clock()))
        batch = self._inflight
        if batch is not None:
            timeouts.append(max(0.001, batch.deadline - time.monotonic()))
        return min(timeouts) if timeouts else None

    def _expire(self) -> None:
        batch = self._inflight
        if batch is not None and time.monotonic() >= batch.deadline:
            self._abandon(f"no barrier reply for batch {batch.batch_id} in {BARRIER_TIMEOUT}s", batch.batch_id)

    def _abandon(self, why: str, batch_id: int | None = None) -> None:
        """Give up the batch in flight (`batch_id`: only that one), not committed: the next round reads the
        switch back."""
        with self._barrier_lock:
            batch = self._inflight
            if batch is not None and (batch_id is None or batch.batch_id == batch_id):
                self._inflight = None
                self._failed.discard(batch.batch_id)
            else:
                batch = None
        if batch is not None:
            log.warning("batch %d (version %s) abandoned: %s", batch.batch_id, batch.version, why)
            self._idle(reconcile=True)

    def _restorable(self) -> bool:
        """An excluded port may return by elapsed time alone (no LSD change came)."""
        if self._states is None:
            return False
        now = self.clock()
        return any(self._may_restore(port, now, new_lsd=False) for port in self._excluded)

    def _may_restore(self, port: int, now: float, new_lsd: bool) -> bool:
        """Usable again (ND two-way up), the newest LSD lets routing use the link (UP, or the soft-drained
        link of a drained switch), and either an LSD arrived since or the port has been usable for
        `_restore_after`."""
        assert self._states is not None
        if not self._usable.get(port) or not self.routes.link_usable(self._states, self._port_link[port]):
            return False
        return new_lsd or now - self._usable_since.get(port, now) >= self._restore_after

    def _round(self, lsd: LsdApplied | None, changed: set[int], full: bool, reconcile: bool) -> None:
        started = self.clock()
        cpu0 = time.perf_counter()
        if lsd is not None:
            if full and self._computed and lsd.states == self._states:
                full = False        # a new master's snapshot equal to what we have: nothing to recompute
            self._states = lsd.states
            self._version = lsd.version
        if self._meters_refused and self.nd_meters:
            # Fail loudly, then fall back: ND is still punted only from fabric ports, unmetered.
            log.error("switch refused the ND punt meters (%s): punting ND without meters", self._meters_refused)
            self.planner.set_nd_meter(None)
            self.nd_meters = False
            reconcile = True
        if self._states is None:
            # No LSD yet (a fresh switch, or just restarted): routes stay as they are (a restarted client's
            # flows are the last good state; OVS skips a dead port's buckets through watch_port). Only the
            # route-independent flows go in, once per connection: without the ND punt a fresh switch could
            # verify no neighbour, and its first report waits for that (client.core's first-report hold).
            if not reconcile:
                self._idle()
                return
            self._read_back()
            if self.on_kept_routes is not None:
                self.on_kept_routes(self.planner.holds_routes())
            self._program(self.planner.plan_static(), started, None)
            return
        self._update_exclusions(lsd is not None)
        excluded = self._excluded_ports()
        if reconcile or self._readback:
            if threading.current_thread() is not self._thread:
                # An OpenFlow error arrived since this small update was taken inline: reading the switch back
                # blocks, so the programmer thread does it (a full computation on the LSD just taken).
                raise _OnTheThread
            self._read_back()
            cpu0 = time.perf_counter()      # the read-back's wait is not computation
        if not self._computed or full or reconcile:
            messages = self.planner.set_routes(self.routes.compute(self._states), excluded)
            self._computed = True
        else:
            delta = self.routes.update(self._states, changed) if changed else RouteDelta({}, frozenset())
            messages = self.planner.update(delta, excluded)
        if self._ext_pending:
            # external routes changed: a full diff (BGP changes are rare; client.ofplan.set_external)
            self._ext_pending = False
            messages = self.planner.set_routes(dict(self.routes.routes), excluded)
        self._compute_s = max(0.0, time.perf_counter() - cpu0)
        self._program(messages, started, self._version)

    def _read_back(self) -> None:
        """Load what the switch has installed into the plan (blocks for the dumps' replies)."""
        flows, groups = self.driver.dump_state()
        self.planner.load_installed(flows, groups, self.driver.dump_meters())
        self._readback = False
        self.reconciles += 1

    def _excluded_ports(self) -> frozenset[int]:
        with self._cv:
            return frozenset(self._excluded)

    def _update_exclusions(self, new_lsd: bool) -> None:
        """Return excluded ports to service (see `_may_restore`)."""
        now = self.clock()
        with self._cv:
            for port in [p for p in self._excluded if self._may_restore(p, now, new_lsd)]:
                del self._excluded[port]

    def _program(self, messages: list[Any], started: float, version: int | None) -> None:
        """Send the batch; it is completed by its barrier reply (`_complete`), not waited for here."""
        if not messages:
            if version is not None:
                self.programmed_version = version
            self.last_program_ms = (self.clock() - started) * 1000.0
            self._idle()
            return
        with self._barrier_lock:
            self._sending = True
        try:
            batch_id = self.driver.send(messages)       # may be written (and answered) before it returns
        except BaseException:
            with self._barrier_lock:
                self._sending = False
                self._failed.clear()
                self._early_done.clear()
            raise
        batch = _Batch(batch_id, version, started, len(messages), time.monotonic() + BARRIER_TIMEOUT)
        with self._barrier_lock:
            self._sending = False
            self._failed &= {batch_id}
            answered = batch_id in self._early_done
            self._early_done.clear()
            if answered:
                rejected = batch_id in self._failed
                self._failed.discard(batch_id)
            else:
                self._inflight = batch
        if answered:
            self._complete(batch, rejected)

    def _complete(self, batch: _Batch, rejected: bool) -> None:
        """The barrier reply of `batch` arrived: commit it (or, rejected in part, retry after a backoff)."""
        self.batches += 1
        if rejected:
            # Not committed: the plan keeps its old model of the switch; the version stays unprogrammed.
            e = BatchRejected(f"switch rejected part of batch {batch.batch_id} (version {batch.version}): "
                              f"{self.last_of_error}")
            with self._cv:
                self._reconcile = True      # read back and send what differs, after the backoff
                self._retry_at = self.clock() + self._backoff
                self._backoff = min(self._backoff * 2, RETRY_MAX)
                self.of_retries += 1
                self._busy = False
                self._cv.notify()
            log.warning("%s; retrying in %.0f ms", e, (self._retry_at - self.clock()) * 1000)
            return
        self._backoff = RETRY_MIN
        self.last_batch_size = batch.size
        self.planner.commit()
        if batch.version is not None:
            self.programmed_version = batch.version
        self.last_program_ms = (self.clock() - batch.started) * 1000.0
        log.info(kv("programmed", version=batch.version, messages=batch.size, excluded=sorted(self._excluded_ports()),
                    ms=round(self.last_program_ms, 2)))
        self._idle()

    # ------------------------------------------------------------------------------------------ status
    def route_snapshot(self) -> tuple[dict[Any, frozenset[int]], dict[frozenset[int], int], frozenset[int]]:
        """(routes, group id per next-hop set, excluded ports) as computed/planned last, for REST. Read from
        another thread without a lock: copied again if the programmer thread changed them meanwhile."""
        for _ in range(20):
            try:
                routes = dict(self.routes.routes)
                sets = set(routes.values())
                group_of = {s: gid for s in sets if (gid := self.planner.group_id(s)) is not None}
                return routes, group_of, frozenset(self._excluded)
            except RuntimeError:          # "dictionary changed size during iteration"
                time.sleep(0.001)
        raise RuntimeError("route table kept changing while being read")

    def status(self) -> dict[str, Any]:
        return {
            "programmed_version": self.programmed_version,
            "hash_basis": self.planner.selection.param,
            "drained_switches": sorted(self.routes.drained_switches),
            "last_program_ms": round(self.last_program_ms, 3),
            "last_batch_size": self.last_batch_size,
            "routes": len(self.routes.routes),
            "groups": self.planner.group_count,
            "excluded_ports": sorted(self._excluded),
            "of_batches": self.batches,
            "of_errors": self.of_errors,
            "of_retries": self.of_retries,
            "nd_meters": self.nd_meters,
            "last_of_error": self.last_of_error,
            "reconciles": self.reconciles,
            "inline_rounds": self.inline_rounds,
        }
