"""The traffic budget (issue #18): timers derived from the fabric's size so periodic traffic stays bounded.

A master replica's periodic traffic (what it receives and sends when nothing changes) grows with the
number of switches `n`:

    reports in      n / report_refresh        every switch refreshes its report (to every replica)
    acks out        n / report_refresh        each report is acknowledged
    keepalives out  n / keepalive             unicast distribution (multicast: 1 / keepalive, to the group)
    requests in     n / request_interval      only while clients are behind (a cold start, a lost group
                                              datagram): each asks at most once per `request_interval`

With the defaults (keepalive 100 ms, refresh 500 ms) a 30,088-switch fabric is ~720,000 datagrams/s at
every replica, more than one Python process can read, so a cold start never converges (issue #18). The
budget caps that sum at `PERIODIC_BUDGET` datagrams/s per replica: `derive(timers, ...)` returns timers
at least as long as the configured ones, raised just enough to fit. A fabric that fits (every lab and
test fabric: a hundred switches or fewer) runs its timers unchanged. The model applies `derive` to every
Fabric (`Fabric.timers`, what every node runs); the config digest covers the configured timers
(`Fabric.config_timers`), not the derived ones: this rule is the software's, and changing it (a new
firepath version) does not change the digest of an unchanged file. Nodes of two versions of the rule may
then run different derived timers for a while (a rolling upgrade): see ARCHITECTURE.md ("Cold start: the
traffic budget ...") for why that is safe.

Shares: with unicast distribution half the budget goes to keepalives and half to reports + acks; with multicast, keepalives cost 1 datagram per interval and the whole budget goes to reports +
acks. Unacked reports: during a cold start every switch retries until the master has read its first
report, so the first retry waits `report_retry_min` >= n / INTAKE_RATE (the time a replica needs to read one
frame of every switch: the copy a freshness Challenge brings waits behind every switch's stale first frame)
and retries back off to `report_retry_max` >= 2n / budget. The copy a Challenge brings is the report's second
attempt: its retry waits the doubled back-off, since that copy queues behind every switch's first frame, the
very drain `report_retry_min` is sized to (client.reporter.retransmit_now). On a big fabric every retry wait
is stretched by up to REFRESH_JITTER, like the refresh, so that retries of one cold start do not arrive as one
burst.

Dependent timers follow:

* ``switch_dead`` >= 3 report refreshes, and >= 2 x the cold-start drain time (`n / INTAKE_RATE`: every
  switch's first report must be read before anyone's silence means anything);
* ``master_dead`` (FMRP) >= n x `FMRP_DEAD_PER_SWITCH` (at Jupiter size ~3 s): a replica of a
  big fabric has bounded but longer turns (a batch of reports, a chunk of a fan-out) and must not be
  declared dead for one; when it is raised, ``hello_interval`` is raised to master_dead / 5 (five hellos
  per dead time are enough);
* the *settle* window of LSD fan-out (`settle_window`, not a config key: a function of `n`): during churn
  (a cold start) a client gets an update when the LSD has been quiet for `quiet`, or at the latest
  `max_wait` (= n / budget) after the first unsent version — so a unicast fan-out of n snapshots happens
  at most once per `max_wait`, within the same budget; while client input stays queued (the runtime's
  `note_backlog`) it waits longer, up to 4 x `max_wait`. Fabrics below `SETTLE_MIN_SWITCHES` do not
  settle (updates go out after `pacing`, as before).

The numbers and the measurements behind them: ARCHITECTURE.md ("Cold start: the traffic budget ...") and
BENCHMARKS.md ("Cold start of a whole fabric").
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass
from typing import Any

#: periodic datagrams/s (in + out) one master replica is budgeted for: a Python replica handles ~10-15 k
#: datagrams/s on one idle core (a report costs ~100 us in the core alone at Jupiter size; BENCHMARKS.md,
#: issue #18); a third of that leaves the rest for a cold start, a failover, a shared host
PERIODIC_BUDGET = 5_000.0
#: first reports/s a replica is assumed to read during a cold start (a Jupiter master on the shared 2-core
#: test host read ~2,700/s while sharing it with the fleet: BENCHMARKS.md, issue #18)
INTAKE_RATE = 5_000.0
#: FMRP dead time per switch (s): a replica's bounded turns still grow with the fabric (a new master's
#: announcement to every switch, a tick of the distribution, a batch of reports) and on a starved host a
#: turn of 100 ms of CPU takes ~1 s; at Jupiter size ~3 s (measured: BENCHMARKS.md "Cold start")
FMRP_DEAD_PER_SWITCH = 100e-6
#: fabrics with fewer switches do not settle their fan-out (see settle_window) and their clients do not
#: jitter their report refresh (`refresh_jitter`)
SETTLE_MIN_SWITCHES = 1000
#: big fabrics: a client refreshes after report_refresh x (1 - REFRESH_JITTER x f), f in [0, 1) fixed by its
#: name and refresh count, so switches that started together (a cold start) do not refresh in lockstep
REFRESH_JITTER = 0.25
#: big fabrics: clients the master's distribution handles per tick at most (the rest of a fan-out follows in
#: the next ticks, with FMRP input read in between: controller.distribution.Distributor.max_per_tick)
TICK_PEERS = 500


#: kernel memory one queued report takes in a socket's receive queue: the skb's truesize (a 300-byte UDP
#: datagram on loopback measured 1,280 bytes: payload rounded up plus sk_buff and shared info), with room
#: for a report of many ports
DATAGRAM_TRUESIZE = 2048
#: reports of every switch the master's client socket can hold unread: the first report and one retry
BURST_ROUNDS = 2
#: SO_RCVBUF a master asks for at least (bytes; Linux doubles it for its bookkeeping)
MIN_RECEIVE_BUFFER = 8 * 1024 * 1024


def receive_buffer(n_switches: int) -> int:
    """SO_RCVBUF (bytes) for a master's client socket: a cold start's burst — every switch's first report
    and one retry — waits in the kernel queue, read at the master's pace, instead of being dropped (a dropped
    report costs its switch a retry back-off, `report_retry_min` and more). Linux doubles the value set and
    counts each datagram's truesize against it (socket(7)); the memory is only used while queued."""
    return max(MIN_RECEIVE_BUFFER, n_switches * BURST_ROUNDS * DATAGRAM_TRUESIZE // 2)


@dataclass(frozen=True, slots=True)
class Load:
    """Periodic datagrams/s at one master replica for given timers."""

    reports_in: float
    acks_out: float
    keepalives_out: float
    requests_in: float        # 0 in steady state; <= budget while every client is behind (request_interval)

    @property
    def total(self) -> float:
        return self.reports_in + self.acks_out + self.keepalives_out + self.requests_in


def periodic_load(timers: Any, n_switches: int, multicast: bool) -> Load:
    reports = n_switches / timers.report_refresh
    keepalives = (1 if multicast else n_switches) / timers.keepalive
    return Load(reports, reports, keepalives, 0.0)


def _ms_ceil(seconds: float) -> float:
    """Round up to whole milliseconds (the config file's unit), so derived timers print exactly."""
    return math.ceil(seconds * 1000 - 1e-6) / 1000


def derive(timers: Any, n_switches: int, multicast: bool, budget: float = PERIODIC_BUDGET) -> Any:
    """`timers` (a proto.config.Timers), each raised as needed so `periodic_load` <= `budget` (see the module
    docstring). Never lowers a timer; returns `timers` itself when nothing changes. Called by the model
    (`Fabric.timers`); its result is not part of the config digest."""
    if n_switches <= 0 or budget <= 0:
        return timers
    report_share = budget if multicast else budget / 2
    keepalive = timers.keepalive if multicast else max(timers.keepalive, _ms_ceil(n_switches / (budget / 2)))
    refresh = max(timers.report_refresh, _ms_ceil(2 * n_switches / report_share))
    switch_dead = max(timers.switch_dead, 3 * refresh, _ms_ceil(2 * n_switches / INTAKE_RATE))
    master_dead = max(timers.master_dead, _ms_ceil(n_switches * FMRP_DEAD_PER_SWITCH))
    hello = timers.hello_interval
    if master_dead != timers.master_dead:
        hello = max(hello, _ms_ceil(master_dead / 5))
    # the client notices a dead master after 3 keepalives; retries need not be faster than a keepalive. A
    # cold start's first report costs the master two datagrams (the stale first frame of the freshness
    # handshake, then the copy the Challenge brings, queued behind every other first frame): a retry before
    # n / INTAKE_RATE only queues a duplicate behind its own copy (issue #18, stop 27)
    retry_min = max(timers.report_retry_min, _ms_ceil(n_switches / INTAKE_RATE))
    retry_max = max(timers.report_retry_max, _ms_ceil(2 * n_switches / budget), retry_min)
    new = dataclasses.replace(timers, keepalive=keepalive, report_refresh=refresh, switch_dead=switch_dead,
                              master_dead=master_dead, hello_interval=hello, report_retry_min=retry_min,
                              report_retry_max=retry_max)
    return timers if new == timers else new


def refresh_jitter(n_switches: int) -> float:
    return REFRESH_JITTER if n_switches >= SETTLE_MIN_SWITCHES else 0.0


def jitter_fraction(name: str, count: int) -> float:
    """A deterministic fraction in [0, 1) for switch `name`'s `count`-th refresh (no RNG in pure cores)."""
    return ((zlib.crc32(name.encode()) + count * 2654435761) % 1000) / 1000


def retry_wait(backoff: float, retry_max: float, jitter: float, fraction: float) -> float:
    """A report's retry wait in seconds: `backoff` stretched by up to `jitter` (`fraction` in [0, 1), from
    `jitter_fraction`), never past `retry_max` (the configured, or derived, `report_retry_max`). Near the cap
    the stretch is taken from below, so waits at the cap still spread over [retry_max / (1 + jitter),
    retry_max] instead of all landing on `retry_max` together (issue #18: retries of one cold start must not
    arrive as one burst). Used by client.reporter and mirrored by the fleet harness."""
    if not jitter:
        return min(backoff, retry_max)
    return min(backoff, retry_max / (1 + jitter)) * (1 + jitter * fraction)


def request_interval(timers: Any, n_switches: int, budget: float = PERIODIC_BUDGET) -> float:
    """How often a client that is behind asks for the LSD at most (client.replica; the fleet harness):
    the keepalive, but on a big fabric no faster than n requests per n / budget seconds — so even every
    client behind at once (a cold start) asks within the budget."""
    if n_switches < SETTLE_MIN_SWITCHES:
        return timers.keepalive
    return max(timers.keepalive, _ms_ceil(n_switches / budget))


def master_silence(timers: Any, n_switches: int, budget: float = PERIODIC_BUDGET) -> float:
    """How long a client hears nothing from its master before it goes fail-static (client.replica,
    client.reporter; the fleet harness): 3 keepalives, but on a big fabric no less than n / budget. A
    master late by that much (a stalled process) makes *every* switch fail-static at once, and each then
    probes every replica once per silence: n probes at each replica must fit the budget. With multicast
    keepalives (100 ms) a 300 ms stall of a Jupiter master set off 30,088 x 3 probes (issue #18)."""
    if n_switches < SETTLE_MIN_SWITCHES:
        return 3 * timers.keepalive
    return max(3 * timers.keepalive, _ms_ceil(n_switches / budget))


@dataclass(frozen=True, slots=True)
class Settle:
    """LSD fan-out settling: send when quiet for `quiet`, at the latest `max_wait` after the first unsent
    version (0: no settling)."""

    quiet: float
    max_wait: float


def settle_window(n_switches: int, pacing: float, budget: float = PERIODIC_BUDGET) -> Settle:
    if n_switches < SETTLE_MIN_SWITCHES:
        return Settle(0.0, 0.0)
    return Settle(max(pacing, 0.05), max(0.25, n_switches / budget))
