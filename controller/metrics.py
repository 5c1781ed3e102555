"""Prometheus metrics of one master replica (own CollectorRegistry, so several replicas/tests coexist)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LAG_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 1000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class MasterMetrics:
    def __init__(self, master_id: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._flushes: list[Callable[[], None]] = []
        self.master_id = master_id
        self.lsd_version = Gauge("firepath_master_lsd_version", "Current LSD version", registry=r)
        self.term = Gauge("firepath_master_term", "Current term of this replica", registry=r)
        self.is_master = Gauge("firepath_master_is_master", "1 if this replica is the master", registry=r)
        self.lsd_versions = Counter(
            "firepath_master_lsd_versions_total", "LSD versions created/applied, by cause", ["cause"], registry=r
        )
        self.lsd_changes = Counter(
            "firepath_master_lsd_link_changes_total", "Link state changes in the LSD, by cause", ["cause"],
            registry=r,
        )
        self.sent = Counter(
            "firepath_master_messages_sent_total", "Datagrams sent, by message type and destination kind",
            ["type", "dest"], registry=r,
        )
        self.received = Counter(
            "firepath_master_datagrams_received_total", "Datagrams received (before validation)", registry=r
        )
        self.rejected = Counter(
            "firepath_master_datagrams_rejected_total",
            "Datagrams rejected, by reason (codec: bad_hmac, replay, ...; core: digest_mismatch, ...)",
            ["reason"], registry=r,
        )
        self.unroutable = Counter(
            "firepath_master_unroutable_total", "Messages not sent: no address known for the switch", registry=r
        )
        self.send_errors = Counter("firepath_master_send_errors_total", "Socket send errors", registry=r)
        self.challenges = Counter(
            "firepath_master_challenges_sent_total",
            "Challenges sent in answer to stale frames (restarted peers, replays), rate-limited per peer",
            registry=r,
        )
        self.duplicate_clients = Counter(
            "firepath_master_duplicate_clients_total",
            "Episodes of two live client processes for one switch (the older refused while the newer is live; "
            "log event duplicate_client)", ["switch"], registry=r,
        )
        self.reports = Counter("firepath_master_reports_accepted_total", "Port reports accepted", registry=r)
        self.persist_failures = Counter(
            "firepath_master_state_persist_failures_total",
            "Durable term/vote saves that failed (this replica then neither votes nor stands)", registry=r,
        )
        self.turn_failures = Counter(
            "firepath_master_turn_failures_total",
            "Turns that raised midway (a bug, logged with its traceback): their unsent actions were dropped",
            registry=r,
        )
        self.persist_ok = Gauge(
            "firepath_master_state_persist_ok", "1 if the last durable term/vote save succeeded", registry=r
        )
        self.persist_ok.set(1)
        self.clients_connected = Gauge(
            "firepath_master_clients_connected", "Clients heard within the switch dead interval", registry=r
        )
        self.switches_silent = Gauge(
            "firepath_master_switches_silent",
            "Switches heard under this mastership but silent for switch_dead (their links keep their state)",
            registry=r,
        )
        self.switch_silences = Counter(
            "firepath_master_switch_silences_total", "Times a switch became silent for switch_dead", registry=r
        )
        self.input_drops = Counter(
            "firepath_master_input_drops_total",
            "Datagrams the kernel dropped on the client socket (receive queue overflow); while it drops, "
            "the master declares no switch silent", registry=r,
        )
        self.peer_input_drops = Counter(
            "firepath_master_peer_input_drops_total",
            "Datagrams the kernel dropped on the peer (FMRP) port's sockets (a flood of junk fills the strangers' "
            "queue; the replicas' own queues are read first)", registry=r,
        )
        self.guard_held = Gauge(
            "firepath_master_guard_held_links",
            "Links the drastic-change guard holds (wanted DOWN on uncorroborated evidence, not published)",
            registry=r,
        )
        self.guard_events = Counter(
            "firepath_master_guard_events_total",
            "Drastic-change guard actions by kind (hold, release, withdraw) and reason class",
            ["kind", "reason"], registry=r,
        )
        self.damping_suppressed = Gauge(
            "firepath_master_damping_suppressed_links",
            "Links held DOWN by master-side damping (flap penalty above suppress, not yet below reuse)",
            registry=r,
        )
        self.damping_events = Counter(
            "firepath_master_damping_events_total",
            "Master-side damping decisions by kind: suppress, reuse (a link), defer (a switch's UPs waited "
            "for its rate limit)", ["kind"], registry=r,
        )
        self.damping_flaps = Counter(
            "firepath_master_damping_flaps_total",
            "Link flaps charged by master-side damping (evidence going from UP to DOWN)", registry=r,
        )
        self.rest_dropped = Counter(
            "firepath_master_rest_connections_dropped_total",
            "REST connections the master closed (controller.restgate): refused (all taken: 503), evicted "
            "(waited for a request while all were taken), slow_reader (did not take its answer)",
            ["reason"], registry=r,
        )
        self.rest_open = Gauge("firepath_master_rest_connections", "REST connections open now", registry=r)
        self.handovers = Counter(
            "firepath_master_handovers_total",
            "Mastership handed over to a replica two-way with clearly more switches (issue #16)", registry=r,
        )
        self.reach = Gauge(
            "firepath_master_reach_switches",
            "Switches this replica saw two-way with each replica (fresh reports with its reach bit)",
            ["replica"], registry=r,
        )
        self.client_lag = Histogram(
            "firepath_master_client_lag_versions", "Versions a client/backup is behind when it tells us its version",
            ["peer_kind"], buckets=LAG_BUCKETS, registry=r,
        )
        self.report_to_lsd = Histogram(
            "firepath_master_report_to_lsd_seconds", "Report datagram received -> new LSD version applied",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.report_to_send = Histogram(
            "firepath_master_report_to_send_seconds",
            "Report datagram received -> first update carrying the resulting version sent (incl. pacing)",
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def bind_clients_connected(self, fn: Callable[[], float]) -> None:
        self.clients_connected.set_function(fn)

    def before_exposition(self, flush: Callable[[], None]) -> None:
        """`flush` runs before every exposition: counts the runtime keeps as plain ints go in first."""
        self._flushes.append(flush)

    def exposition(self) -> bytes:
        for flush in self._flushes:
            flush()
        return generate_latest(self.registry)
