"""asyncio runtime of one master replica: UDP sockets, one timer, Codec, REST, metrics, logs.

A thin shell around `controller.node.MasterNode` (the master core, its role driver and the rules between
them): every datagram is decoded (HMAC/replay checked by the Codec) and handed to the node; the runtime
executes the steps that come back (sends, events as metrics and log lines, each `PersistTerm` written to
the state dir before what follows) and re-arms the single timer at `node.next_deadline()`. `now` is the
event loop's monotonic clock.

Addresses: a switch is reached at the last UDP address a valid datagram from it came from; a master at
its configured address and peer port; the multicast group at distribution.group:port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from controller.actions import (
    GROUP,
    HOSTILE_REJECTIONS,
    Action,
    DampEvent,
    GuardEvent,
    Handover,
    InputLoss,
    NextVersion,
    PeerAcked,
    PersistTerm,
    Rejected,
    ReportAccepted,
    RoleChanged,
    Send,
    SwitchSilent,
    TermSeen,
    VersionChanged,
)
from controller.configpath import config_dir
from controller.core import MasterCore, Role
from controller.dupclients import DuplicateClients
from controller.durable import DrainStore, DurableState, DurableStateError, StateStore
from controller.fanout import FanoutEncoder
from controller.intake import (
    CHECK_EVERY,
    CLIENT_BATCH,
    OUT_CHUNK,
    TURN_BUDGET,
    Outbox,
    Overload,
    enable_timestamps,
    read_one_at,
    udp_drops,
    udp_socket,
    udp_stats,
)
from controller.metrics import MasterMetrics
from controller.node import MasterNode, Step, run_turn
from controller.peerinput import PeerInput
from controller.roles import RoleDriver, SingleMasterDriver
from controller.serverreload import ReloadOps
from proto.auth import KeyKind, KeyRing
from proto.bounded import RejectLog
from proto.budget import receive_buffer
from proto.config import Fabric
from proto.logsetup import kv
from proto.messages import Challenge, Codec, DecodeError, EncodeError, LsdDelta, LsdFull, PortReport

log = logging.getLogger("firepath.master")


class BindError(OSError):
    """A socket of the replica could not be opened: which one, where, and why (`firepath master` prints it)."""


@contextlib.contextmanager
def _naming(field: str, proto: str, host: str, port: int) -> Iterator[None]:
    """An OSError while opening the `field` socket becomes a BindError naming it: before, the replica died
    with `[Errno 99] Cannot assign requested address`, no port, no address, no option named."""
    try:
        yield
    except BindError:
        raise
    except OSError as e:
        hint = {errno.EADDRNOTAVAIL: f" ({host} is not an address of this host: the config's master address "
                                     "or --bind)",
                errno.EADDRINUSE: " (another process has it: stop it, or --" + field.replace("_", "-") + ")",
                errno.EACCES: " (a port below 1024 needs root)"}.get(e.errno or 0, "")
        raise BindError(f"{field}: cannot open {proto} {host}:{port}: {e.strerror or e}{hint}") from e


class MasterServer(ReloadOps):
    def __init__(
        self,
        fabric: Fabric,
        master_id: str,
        keyring: KeyRing,
        state_dir: str | Path,
        *,
        bind: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        rest_port: int | None = None,
        driver_factory: Callable[[MasterCore, StateStore], RoleDriver] | None = None,
    ) -> None:
        me = fabric.master(master_id)
        self.fabric = fabric
        #: the resolved directory of the config started with: a REST prepare reads there only (configpath)
        self.config_root = config_dir(fabric.source)
        self.id = master_id
        self.bind = bind if bind is not None else str(me.address)
        self.client_port = client_port if client_port is not None else me.client_port
        self.peer_port = peer_port if peer_port is not None else me.peer_port
        self.rest_port = rest_port if rest_port is not None else me.rest_port
        # A master never accepts GROUP-signed datagrams: every switch holds the group key.
        self.codec = Codec(
            keyring, master_id, [s.name for s in fabric.switches], [m.id for m in fabric.masters], accept_group=False
        )
        # Two clients of one switch: said once, counted, the older refused (controller.dupclients, bb40 F17)
        self.duplicates = DuplicateClients(3 * fabric.timers.report_refresh, fabric.timers.switch_dead, master_id,
                                           self.codec.switches)
        self.duplicates.attach(self.codec, self.now)
        self.fanout = FanoutEncoder(self.codec, keyring, fabric.switches[0].name if fabric.switches else None)
        self.store = StateStore(state_dir, [m.id for m in fabric.masters])
        self.drain_store = DrainStore(state_dir)
        self._drains_saved = -1
        self.core = MasterCore(fabric, master_id)
        self.metrics = MasterMetrics(master_id)
        self.metrics.before_exposition(self._flush_counts)
        self._rejected_by: dict[str, Any] = {}   # rejection reason -> its metric child
        # per-datagram counts as plain ints, into Prometheus once per turn or batch and before /metrics is
        # read (a locked Counter.inc per datagram, 3-4 a report, was ~4 % of a cold start's CPU, issue #18)
        self._received_n = 0
        self._challenges_n = 0
        self._reports_n = 0
        self._rejected_n: dict[str, int] = {}
        # One line per rejected datagram naming its source and reason, within a budget (proto.bounded): the
        # counter says how many, the line says from where and why (a black-box test found none at INFO).
        self._reject_log = {path: RejectLog(log, master_id, path) for path in ("client", "peer")}
        self._from: tuple[str, int] | None = None     # the source of the datagram being handled
        self._driver_factory = driver_factory
        self.driver: RoleDriver | None = None
        self.node: MasterNode | None = None     # set by start(): input flows to the node from then on
        self._report: tuple[str, Any, float] | None = None   # the PortReport of the current turn (observers)
        self.addresses: dict[str, tuple[str, int]] = {}
        self._master_ids = [m.id for m in fabric.masters]
        self.master_addrs = {m.id: (str(m.address), m.peer_port) for m in fabric.masters if m.id != master_id}
        dist = fabric.distribution
        self.group_addr = (str(dist.group), dist.port) if dist.mode == "multicast" and dist.group else None
        self._client_tx: Outbox | None = None
        self._peer_tx: Outbox | None = None
        self._peer_in: PeerInput | None = None     # FMRP input, each peer on its own queue (peerinput)
        # issue #18: a fan-out bigger than OUT_CHUNK continues over the next turns (after FMRP input)
        self._deferred: deque[Send] = deque()
        self._out_left = OUT_CHUNK
        self._batching = False
        self._backlog = False
        self._pump_soon = False
        self.overload: Overload | None = None
        self._frozen_peers = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rest_runner: Any = None
        self._pending_versions: dict[int, float] = {}   # version -> receipt time of the report that made it
        self._max_sent_version = -1
        self._damping_flaps_seen = 0
        self._sent_counts: dict[tuple[type, str], int] = {}
        self._client_sock: socket.socket | None = None
        self._client_buffered = False
        self._drops_checked = float("-inf")
        self._loss_noted = float("-inf")
        #: why the drain notes could not be saved last time (None: saved): a drain answer says so
        self.drains_save_error: str | None = None
        self._peer_drops: tuple[float, int | None] = (float("-inf"), None)   # (checked at, kernel total then)
        # Read-only observers (the topology page's feed, controller.page): `reported(switch, ports)` after a
        # port report is accepted, `changed()` after every batch of actions. They must be cheap and not raise.
        self.observers: list[Any] = []
        #: `hook(fabric)` for every valid config file read by reload() (issue #21: the security section)
        self.reload_hooks: list[Callable[[Fabric], None]] = []
        self.started_wall = time.time()
        self.persist_error: str | None = None   # the last failed durable save, until one succeeds
        self.persist_failures = 0

    # ------------------------------------------------------------------------------------ lifecycle
    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self, rest: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        durable = self.store.load()
        self._load_drains()
        self.driver = (self._driver_factory or (lambda core, store: SingleMasterDriver(core, durable.term)))(
            self.core, self.store
        )
        with _naming("client_port", "UDP", self.bind, self.client_port):
            self._client_sock = udp_socket(self.bind, self.client_port, multicast=self.group_addr is not None,
                                           rcvbuf=receive_buffer(len(self.fabric.switches)))
        with _naming("peer_port", "UDP", self.bind, self.peer_port):
            self._peer_in = PeerInput.open(self.bind, self.peer_port, self.master_addrs)
        peer_sock = self._peer_in.main
        enable_timestamps(self._client_sock)   # receive times: a request that crossed its answer (issue #18)
        self._client_tx = Outbox(self._client_sock, self._loop)
        self._peer_tx = Outbox(peer_sock, self._loop)
        self.overload = Overload(self._client_sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                                 hold=max(1.0, 2 * self.fabric.timers.keepalive))
        self.fanout.warm([s.name for s in self.fabric.switches])
        self.metrics.bind_clients_connected(self._clients_connected)
        # O(switches): computed when scraped, not after every datagram
        self.metrics.switches_silent.set_function(lambda: float(len(self.core.silent_switches(self.now()))))
        # The fabric, the core's tables and the derived keys live as long as the process: move them out of
        # the cyclic GC's reach, or every full collection rescans millions of objects (at 10,000 switches a
        # collection in the middle of a fan-out costs more than the fan-out itself).
        gc.collect()
        gc.freeze()
        log.info(kv("master_start", id=self.id, fabric=self.fabric.name, digest=self.fabric.digest[:12],
                    bind=self.bind, client_port=self.client_port, peer_port=self.peer_port,
                    rest_port=self.rest_port, durable_term=durable.term, state_dir=self.store.dir))
        self.node = MasterNode(self.core, self.driver)
        now = self.now()
        self._turn(self.node.start(now), now)
        # Read from now on (what arrived since the sockets opened waits in the kernel, not dropped).
        for sock in self._peer_in.sockets():
            self._loop.add_reader(sock.fileno(), self._pump)
        self._loop.add_reader(self._client_sock.fileno(), self._pump)
        if rest:
            from controller.rest import start_rest

            with _naming("rest_port", "TCP", self.bind, self.rest_port):
                self._rest_runner = await start_rest(self, self.bind, self.rest_port)

    async def stop(self) -> None:
        if self.node is not None and self._loop is not None:
            try:
                now = self.now()
                self._turn(self.node.stop(now), now)
            except Exception:  # pragma: no cover - best effort on shutdown
                log.exception(kv("stop_error"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in (self._client_sock, *(self._peer_in.sockets() if self._peer_in else ())):
            if sock is not None and self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
        for tx in (self._client_tx, self._peer_tx):
            if tx is not None:
                tx.close()
        if self._peer_in is not None:
            self._peer_in.close()         # the peers' connected sockets (its main one is the outbox's)
        self._deferred.clear()
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()
            self._rest_runner = None
        log.info(kv("master_stop", id=self.id, term=self.core.term, version=self.core.version))

    # ------------------------------------------------------------------------------------ input
    def _pump(self) -> None:
        """One turn of input (controller.intake): FMRP first, then a chunk of a deferred fan-out, then one
        bounded batch of client datagrams as one LSD version; bookkeeping once per batch."""
        self._pump_soon = False
        if self.node is None or self._client_sock is None:
            return
        t0 = time.perf_counter()
        self._out_left = OUT_CHUNK
        self._read_peers()
        self._flush_deferred()
        n = 0
        batch_version = self.core.version
        if self._out_left > 0:
            sock, end = self._client_sock, t0 + TURN_BUDGET
            self._batching = True
            self.core.begin_batch()
            offset = self.now() - time.time()     # wall -> our clock, for the kernel's receive times
            try:
                while n < CLIENT_BATCH:
                    got = read_one_at(sock, offset)   # its time is None if the socket gives none
                    if got is None:
                        break
                    self._on_datagram(got[0], got[1], arrived=got[2])
                    n += 1
                    if time.perf_counter() >= end:
                        break
            finally:
                self.core.end_batch()
                self._batching = False
                if n:
                    self._after_turn(rearm=True)
        self._backlog = n >= CLIENT_BATCH or (n > 0 and time.perf_counter() >= t0 + TURN_BUDGET)
        if self._backlog:     # input first: fan-out waits while input changes the LSD (Distributor.note_backlog)
            self.core.note_backlog(self.now(), changed=self.core.version != batch_version)
        spent = time.perf_counter() - t0
        if spent > 0.2:
            log.info(kv("slow_turn", ms=round(spent * 1000), datagrams=n, deferred=len(self._deferred)))
        if self._deferred and not self._pump_soon:
            self._pump_soon = True
            self._loop.call_soon(self._pump)  # type: ignore[union-attr]

    def _read_peers(self) -> None:
        """FMRP/replication input of this turn (controller.peerinput: each peer's queue, then strangers
        within a budget), each datagram handled at the time it arrived."""
        if self._peer_in is not None:
            self._peer_in.read(self.now, self._on_datagram)

    def _flush_deferred(self) -> None:
        q = self._deferred
        if not q:
            return
        end = time.perf_counter() + TURN_BUDGET
        while q and self._out_left > 0:
            self._send(q.popleft())
            self._out_left -= 1
            if not self._out_left & 63 and time.perf_counter() >= end:
                self._out_left = 0
        if not q:
            self.fanout.reset()
            self._flush_counts()

    def _count_rejected(self, reason: str) -> None:
        self._rejected_n[reason] = self._rejected_n.get(reason, 0) + 1

    def _on_datagram(self, data: bytes, addr: tuple[str, int], at: float | None = None,
                     arrived: float | None = None) -> None:
        """`at`: the time the turn runs at (peer datagrams: their arrival); `arrived`: a client datagram's
        receive time, given to the core (a request that waited while its answer went out, issue #18)."""
        t0 = time.perf_counter()
        self._received_n += 1
        try:
            sender, msg = self.codec.decode(data, source=addr)
        except DecodeError as e:
            self._count_rejected(e.reason)
            self._reject_log["client" if at is None else "peer"].note(time.monotonic(), e.reason, addr, e.detail)
            if e.reason == "stale":
                self._answer_stale(e.sender, addr)
            return
        now = self.now() if at is None else at
        if sender not in self.master_addrs and sender != self.id:
            self.addresses[sender] = addr
            self.duplicates.heard(sender, self.codec.incarnation_of(sender), addr, now)
            if self.codec.last_new_peer == sender:
                self.core.peer_restarted(sender)
        if isinstance(msg, Challenge):  # freshness only: the Codec took what it carries
            return
        if self.node is None:
            # The sockets are open before the driver starts (start() awaits in between): a datagram that
            # arrives then is dropped (peers repeat hellos, clients retry) — the driver must not see input
            # before start(), and the core's role is not decided yet.
            self.metrics.rejected.labels("not_started").inc()
            return
        self._report = (sender, msg.ports, t0) if isinstance(msg, PortReport) else None
        self._from = addr
        try:
            self._turn(self.node.datagram(sender, msg, now, arrived), now)
        finally:
            self._report = self._from = None

    def _answer_stale(self, peer: str | None, addr: tuple[str, int]) -> None:
        """A verified frame of an unverified incarnation (a restarted peer, or a replay): a Challenge, so a
        genuine peer is accepted at its next frame. A switch is answered at the datagram's source (not learnt
        from a stale frame: a replay gets one small datagram, never the LSD), at most once per (switch, source)
        per interval: replays from one address cannot starve another; a master at its configured address."""
        to_master = peer in self.master_addrs
        data = self.codec.answer(peer, time.monotonic(), None if to_master else addr)
        if data is None or peer is None:
            return
        tx = self._peer_tx if to_master else self._client_tx
        if tx is not None:
            tx.sendto(data, self.master_addrs[peer] if to_master else addr)
            self._challenges_n += 1

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self.node is not None
        t0 = time.perf_counter()
        self._out_left = OUT_CHUNK
        self._read_peers()          # FMRP first: the lease and the leader check see every hello that arrived
        now = self.now()
        try:
            self._turn(self.node.liveness(now), now, rearm=False)     # hellos before the core's fan-out
            loss = self._check_input_loss(now)
            if loss:
                self._turn(self.node.apply(loss, now), now, rearm=False)
            self._turn(self.node.timer(now), now)
            spent = time.perf_counter() - t0
            if spent > 0.2:
                log.info(kv("slow_timer_turn", ms=round(spent * 1000), deferred=len(self._deferred)))
            if self._deferred and not self._pump_soon:
                self._pump_soon = True
                self._loop.call_soon(self._pump)  # type: ignore[union-attr]
        finally:
            # A bug in one turn must not silence the replica for good (no hellos, no election): the timer
            # is always re-armed; asyncio logs the exception.
            if self._timer is None:
                self._rearm()

    def _check_input_loss(self, now: float) -> list[Action]:
        """Sample the client socket's kernel counters (every CHECK_EVERY, controller.intake.Overload):
        while the master drops or queues input it declares no switch silent (note_input_loss, at most once
        a second: it is O(switches))."""
        self._check_peer_drops(now)
        ov = self.overload
        if self._client_sock is None or ov is None or now - self._drops_checked < CHECK_EVERY:
            return []
        self._drops_checked = now
        was = ov.overloaded(now)
        dropped = ov.sample(now, udp_stats(self._client_sock), self._backlog)
        if not ov.overloaded(now):
            if was:
                log.warning(kv("overload_end", dropped_total=ov.total_dropped, peak_queue=ov.peak_queue))
            return []
        if not was:
            log.warning(kv("overload", dropped=dropped, backlog=self._backlog,
                           effect="no switch declared silent while overloaded"))
        if dropped or now - self._loss_noted >= 1.0:
            self._loss_noted = now
            return self.core.note_input_loss(dropped, now)
        return []

    def _check_peer_drops(self, now: float) -> None:
        """Once a second: the peer port's kernel drops (controller.peerinput) into the metric and one line."""
        checked, seen = self._peer_drops
        if self._peer_in is None or now - checked < 1.0:
            return
        total = udp_drops(self._peer_in.sockets())
        self._peer_drops = (now, total if total is not None else seen)
        if total is not None and seen is not None and total > seen:
            self.metrics.peer_input_drops.inc(total - seen)
            log.warning(kv("peer_input_drops", dropped=total - seen, effect="FMRP peers are read first"))

    # ------------------------------------------------------------------------------------ execution
    def _run(self, actions: list[Action], rearm: bool = True) -> None:
        """Execute actions a core call returned (drain, guard confirm) under the node's rules."""
        assert self.node is not None
        now = self.now()
        self._turn(self.node.apply(actions, now), now, rearm=rearm)

    def _load_drains(self) -> None:
        """The saved drain notes (controller.durable.DrainStore.restore; DurableStateError: no start)."""
        if self.drain_store.restore(self.core.drains):
            log.info(kv("drains_loaded", notes=len(self.core.drains.notes), file=self.drain_store.path))
        self._drains_saved = self.core.drains.changes

    def _save_drains(self) -> None:
        self._drains_saved = self.core.drains.changes
        try:
            self.drain_store.save_book(self.core.drains)
            self.drains_save_error = None
        except (OSError, ValueError) as e:     # still replicated to the backups; said once per change
            self.drains_save_error = f"{self.drain_store.path}: {e}"
            log.error(kv("drains_save_failed", file=self.drain_store.path, error=e,
                         effect="the drains would not survive a restart of every replica"))

    def _turn(self, step: Step, now: float, rearm: bool = True) -> None:
        """Execute one turn of the node (controller.node): sends and events in order, each PersistTerm
        written before what follows it; then the per-batch bookkeeping and the timer."""
        assert self.node is not None
        try:
            run_turn(self.node, step, now, self._execute, self._persist, clock=time.monotonic)
        except Exception:           # a bug: logged and counted; the node must take the next input
            self.metrics.turn_failures.inc()
            log.exception(kv("turn_failed", effect="the turn's unsent actions dropped, a pending term write "
                                                   "counted as failed"))
            try:
                run_turn(self.node, self.node.apply(self.node.abandon(now), now), now, self._execute, self._persist)
            except Exception:
                log.exception(kv("turn_failed", effect="its recovery failed too: dropped"))
                self.node.abandon(now)
        if self.core.drains.changes != self._drains_saved:
            self._save_drains()
        if not self._deferred:
            self.fanout.reset()
        if self.core.fabric is not self.fabric:
            self._follow_fabric()
        if not self._batching:          # a batch of client datagrams does this once, at its end
            self._after_turn(rearm)

    def _after_turn(self, rearm: bool) -> None:
        for o in self.observers:
            o.changed()
        self._flush_counts()
        self._refresh_gauges()
        n = len(self.core.dist.peers)
        if n > 1000 and n > 1.2 * self._frozen_peers:
            # issue #18: the state a cold start built (peers, views) lives on: out of the cyclic GC's reach
            # (freeze alone is O(1); a collect here would cost a full collection in the storm)
            self._frozen_peers = n
            gc.freeze()
        if rearm:
            self._rearm()

    def overload_now(self) -> bool:
        return self.overload is not None and self._loop is not None and self.overload.overloaded(self.now())

    def _execute(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                if a.dest in self.master_addrs or a.dest == GROUP:
                    # replicas, and the group's one datagram (its keepalive is every client's sign of life:
                    # queued behind a storm's acks it came > 300 ms late and made every switch probe
                    # every replica): never deferred
                    self._send(a)
                elif self._out_left > 0 and not self._deferred:
                    self._out_left -= 1
                    self._send(a)
                else:
                    self._deferred.append(a)      # the rest of a big fan-out: next turns (_pump)
            else:
                if isinstance(a, RoleChanged) and a.role != Role.MASTER.value:
                    self._deferred.clear()        # a deposed master's queued sends speak for a lost term
                self._event(a)

    def _persist(self, a: PersistTerm) -> bool:
        """Save the term (and vote) before anything that depends on it is sent. On failure (full disk, I/O
        error) the replica says so (log, metric, REST `persist_error`) and its dependent sends are dropped:
        it neither votes nor stands until a save succeeds. FMRP retries by itself (each election round
        persists again, rounds back off), so a replica recovers when space returns."""
        try:
            self.store.save(DurableState(a.term, a.voted_for))
        except (OSError, DurableStateError) as e:
            first = self.persist_error is None
            self.persist_error = str(e)
            self.persist_failures += 1
            self.metrics.persist_failures.inc()
            self.metrics.persist_ok.set(0)
            # Every election round retries: one error line per outage (and every 100th), not per round.
            level = logging.ERROR if first or self.persist_failures % 100 == 0 else logging.DEBUG
            log.log(level, kv("term_persist_failed", term=a.term, voted_for=a.voted_for, error=e,
                              failures=self.persist_failures))
            return False
        if self.persist_error is not None:
            log.info(kv("term_persist_recovered", term=a.term))
        self.persist_error = None
        self.metrics.persist_ok.set(1)
        log.info(kv("term_persisted", term=a.term, voted_for=a.voted_for))
        return True

    def _rearm(self) -> None:
        assert self.node is not None and self._loop is not None
        at = self.node.next_deadline()
        if at is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None
            return
        if self._timer is not None and self._timer_at == at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _send(self, a: Send) -> None:
        """Sign and send one message. The client path is the hot one (fan-out to every switch): one dict
        lookup, the fast encoder, a direct non-blocking sendto (asyncio's buffered path only when the
        socket is full), and a plain counter (flushed to Prometheus once per batch)."""
        msg = a.msg
        dest = a.dest
        addr = self.addresses.get(dest)
        try:
            if addr is not None:
                data = self.fanout.encode(msg, dest)
                kind = "client"
                if self._client_buffered or not self._sendto_now(self._client_sock, data, addr):
                    self._client_tx.sendto(data, addr)  # type: ignore[union-attr]
                    self._client_buffered = self._client_tx.get_write_buffer_size() > 0  # type: ignore[union-attr]
            elif dest in self.master_addrs:
                data = self.codec.encode(msg, to=dest)
                kind = "backup"
                self._peer_tx.sendto(data, self.master_addrs[dest])  # type: ignore[union-attr]
            elif dest == GROUP:
                if self.group_addr is None:
                    return
                data = self.codec.encode(msg, key=KeyKind.GROUP)
                kind = "group"
                self._client_tx.sendto(data, self.group_addr)  # type: ignore[union-attr]
            else:
                self.metrics.unroutable.inc()
                return
        except EncodeError as e:
            self.metrics.send_errors.inc()
            log.error(kv("encode_error", dest=dest, type=type(msg).__name__, error=e))
            return
        except OSError as e:  # pragma: no cover - depends on the kernel
            self.metrics.send_errors.inc()
            log.debug(kv("send_error", dest=dest, error=e))
            return
        key = (type(msg), kind)
        self._sent_counts[key] = self._sent_counts.get(key, 0) + 1
        if kind != "backup" and (type(msg) is LsdDelta or type(msg) is LsdFull):
            v = msg.to_version if type(msg) is LsdDelta else msg.version
            if v > self._max_sent_version:
                self._max_sent_version = v
                if self._pending_versions:
                    for pv in [pv for pv in self._pending_versions if pv <= v]:
                        self.metrics.report_to_send.observe(time.perf_counter() - self._pending_versions.pop(pv))

    @staticmethod
    def _sendto_now(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> bool:
        try:
            sock.sendto(data, addr)
            return True
        except (BlockingIOError, InterruptedError):
            return False

    def _flush_counts(self) -> None:
        """The counts kept as plain ints (sent, received, rejected, challenges, reports) into Prometheus."""
        m = self.metrics
        for (cls, kind), n in self._sent_counts.items():
            m.sent.labels(cls.__name__, kind).inc(n)
        self._sent_counts.clear()
        if self._received_n:
            m.received.inc(self._received_n)
            self._received_n = 0
        if self._challenges_n:
            m.challenges.inc(self._challenges_n)
            self._challenges_n = 0
        if self._reports_n:
            m.reports.inc(self._reports_n)
            self._reports_n = 0
        if self._rejected_n:
            for reason, n in self._rejected_n.items():
                counter = self._rejected_by.get(reason)
                if counter is None:   # one child per reason (a bounded set)
                    counter = self._rejected_by[reason] = m.rejected.labels(reason)
                counter.inc(n)
            self._rejected_n.clear()
        self.duplicates.flush(m.duplicate_clients)

    def _event(self, ev: Action) -> None:
        m = self.metrics
        if isinstance(ev, Rejected):
            self._count_rejected(ev.reason)
            if ev.reason in HOSTILE_REJECTIONS:       # authenticated, but not what its sender may say
                self._reject_log["peer" if ev.sender in self.master_addrs else "client"].note(
                    time.monotonic(), ev.reason, self._from, lambda: f"{ev.msg_type} from {ev.sender!r}")
            elif log.isEnabledFor(logging.DEBUG):     # routine (elections, rollouts): per datagram, debug
                log.debug(kv("rejected", sender=ev.sender, type=ev.msg_type, reason=ev.reason))
        elif isinstance(ev, VersionChanged):
            if self._report is not None:
                t0 = self._report[2]
                m.report_to_lsd.observe(time.perf_counter() - t0)
                self._pending_versions[ev.version] = t0
                if len(self._pending_versions) > 1024:      # nobody to send to: do not grow
                    self._pending_versions.pop(min(self._pending_versions))
            m.lsd_versions.labels(ev.cause).inc()
            m.lsd_changes.labels(ev.cause).inc(ev.changes)
            level = logging.DEBUG if ev.cause == "replication" else logging.INFO
            log.log(level, kv("lsd_version", version=ev.version, changes=ev.changes, cause=ev.cause))
        elif isinstance(ev, NextVersion):
            m.lsd_versions.labels("next_config").inc()      # the LSD served to moved switches (rollout)
            log.info(kv("lsd_next_version", version=ev.version, from_version=ev.from_version, changes=ev.changes,
                        urgent=ev.urgent))
        elif isinstance(ev, ReportAccepted):
            self._reports_n += 1
            if self._report is not None:
                for o in self.observers:
                    o.reported(self._report[0], self._report[1])
            if log.isEnabledFor(logging.DEBUG):       # per datagram: no line built for nothing
                log.debug(kv("report", switch=ev.switch, seq=ev.report_seq, changes=ev.changes))
        elif isinstance(ev, PeerAcked):
            m.client_lag.labels("backup" if ev.peer in self.master_addrs else "client").observe(ev.lag)
        elif isinstance(ev, RoleChanged):
            log.info(kv("role", role=ev.role, term=ev.term, leader=ev.leader))
        elif isinstance(ev, SwitchSilent):
            if ev.silent:
                m.switch_silences.inc()
            log.warning(kv("switch_silent" if ev.silent else "switch_heard_again", switch=ev.switch,
                           links="kept"))
        elif isinstance(ev, GuardEvent):
            reason = ev.reason if ev.kind != "hold" else "uncorroborated"
            m.guard_events.labels(ev.kind, reason).inc()
            names = ",".join(self.fabric.links[i].name for i in ev.links[:16])
            log.log(logging.WARNING if ev.kind == "hold" else logging.INFO,
                    kv(f"guard_{ev.kind}", links=len(ev.links), names=names, reason=ev.reason,
                       action="confirm with POST /v1/guard/confirm" if ev.kind == "hold" else ""))
        elif isinstance(ev, DampEvent):
            m.damping_events.labels(ev.kind).inc()
            if ev.kind == "defer":         # can be many per second from a bad switch: not a log line each
                log.debug(kv("damping_defer", switch=ev.switch, links=len(ev.links)))
            elif ev.kind == "storm":
                names = ",".join(self.fabric.links[i].name for i in ev.links[:16])
                log.warning(kv("damping_storm", scope=ev.switch or "fabric", links=len(ev.links), names=names,
                               effect="correlated drop: not charged as flaps"))
            else:
                name = self.fabric.links[ev.links[0]].name
                log.log(logging.WARNING if ev.kind == "suppress" else logging.INFO,
                        kv(f"damping_{ev.kind}", link=name, penalty=ev.penalty,
                           effect="held DOWN until the penalty decays" if ev.kind == "suppress" else "re-derived"))
        elif isinstance(ev, Handover):
            m.handovers.inc()
            log.warning(kv("handover", master=ev.master, successor=ev.successor, term=ev.term,
                           own_view=ev.own, successor_reach=ev.theirs, master_reach_in_successor_view=ev.ours))
        elif isinstance(ev, InputLoss):
            m.input_drops.inc(ev.dropped)
            log.warning(kv("input_loss", dropped=ev.dropped, effect="no switch declared silent"))
        elif isinstance(ev, TermSeen):
            # Normal on every failover (the new master's first messages reach us before its hello makes
            # us follow it): info, not warning. A split brain shows up as role changes and term churn.
            log.info(kv("higher_term_seen", sender=ev.sender, term=ev.term, our_term=self.core.term))

    def _refresh_gauges(self) -> None:
        self.metrics.lsd_version.set(self.core.version)
        self.metrics.term.set(self.core.term)
        self.metrics.is_master.set(1 if self.core.role == Role.MASTER else 0)
        self.metrics.guard_held.set(len(self.core.guard.held))
        damper = self.core.damper
        self.metrics.damping_suppressed.set(damper.n_suppressed)
        if damper.flaps > self._damping_flaps_seen:
            self.metrics.damping_flaps.inc(damper.flaps - self._damping_flaps_seen)
            self._damping_flaps_seen = damper.flaps
        if self._loop is not None:
            for mid, n in zip(self._master_ids, self.core.reach_counts(self.now()), strict=False):
                self.metrics.reach.labels(mid).set(n)

    def _clients_connected(self) -> float:
        if self._loop is None:
            return 0.0
        now = self.now()
        return float(self.core.clients_connected(now))

    # ------------------------------------------------------------------------------------ operator API
    def drain(self, *, link: str | None = None, switch: str | None = None, drained: bool,
              who: str | None = None, reason: str | None = None) -> dict[str, Any]:
        """Drain/undrain a link (by name) or every link of a switch, noting who and why (and the wall-clock
        time). Returns {"target", "links": [indices touched], "still": {index: [notes]}, "lifted": (notes),
        "drain": DrainResult | None} ("still": links of an undrained target another drain keeps drained;
        "lifted": notes an undrain removed; "drain": what a drain did to the target's note, controller.drains).
        Raises UnknownTarget, NotMaster, DrainRefused."""
        now = self.now()
        kind, target = ("link", link) if link is not None else ("switch", switch)
        assert target is not None
        drain = None
        if drained:
            actions, idx, drain = self.core.drain_target(kind, target, now, who=who, reason=reason, at=time.time())
            still: dict[int, Any] = {}
            lifted: tuple[Any, ...] = ()
        else:
            actions, result = self.core.undrain(kind, target, now)
            idx, still, lifted = self.core.resolve(kind, target)[1], result.still, result.removed
        log.info(kv("drain" if drained else "undrain", link=link, switch=switch, links=len(idx), who=who, reason=reason,
                    outcome=drain and drain.outcome, previous_reason=drain and drain.previous and drain.previous.reason))
        self._run(actions)
        return {"target": self.core.resolve(kind, target)[0], "links": list(idx), "still": still,
                "lifted": lifted, "drain": drain, "not_saved": self.drains_save_error}

    # ------------------------------------------------------------------------------------ config rollout (#21)
    # reload / prepare / commit / abort: controller.serverreload (ReloadOps)

    def guard_confirm(self, links: Sequence[str] | None = None) -> list[int]:
        """The operator confirms what the guard holds: publish the held links named in `links` ("a:1-b:2"), or
        every held one (None). Returns the indices released. Raises NotMaster, UnknownTarget (no such link),
        controller.guard.NotHeld (a link not held); then nothing changed."""
        named = None if links is None else [self.core.link_index(name) for name in links]
        actions = self.core.guard_confirm(self.now(), named)
        released = sorted(i for a in actions if isinstance(a, GuardEvent) and a.kind == "release"
                          and a.reason == "confirmed" for i in a.links)
        log.warning(kv("guard_confirm", links=len(released), named=links is not None))
        self._run(actions)
        return released


async def serve(server: MasterServer, stop: asyncio.Event) -> None:
    """Run `server` until `stop` is set, then shut it down cleanly."""
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
