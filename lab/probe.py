"""UDP probe: measures what a failure costs the traffic that crosses it.

A sender (in a host namespace) emits ``rate`` packets/s on each of ``flows`` flows; every flow has its
own UDP source port so ECMP can spread them. Each packet carries the flow id, a per-flow sequence number
and the sender's monotonic send time. A receiver (in the destination host namespace) keeps, per flow,
the longest gap between two consecutive arrivals (its own monotonic clock), the packets lost (sequence
holes) and the packets that arrived out of order. Clocks of different processes are never compared.

Run as subprocesses::

    ip netns exec NS python -m lab.probe recv --port 7000 [--duration S]
    ip netns exec NS python -m lab.probe send --dst 10.1.1.10 --port 7000 --flows 8 --rate 1000

Both print one JSON object on stdout when they stop (after ``--duration`` or on SIGTERM/SIGINT); the
receiver first prints ``READY`` on stderr once its socket is bound. :class:`Probe` drives the pair and
merges the results (sender's counts tell tail loss, which sequence holes alone cannot).
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"FPPR"
# magic, flow id, sequence, sender monotonic ns, sender's nominal interval (us)
HEADER = struct.Struct("!4sHQQI")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)     # Linux; SCM_TIMESTAMPNS has the same value
_TIMESPEC = struct.Struct("@qq")
PACKET_SIZE = 64
REPO_ROOT = Path(__file__).resolve().parent.parent


class ProbeError(RuntimeError):
    """A probe process failed to start or to report."""


@dataclass(slots=True)
class FlowStats:
    """Per-flow receive accounting; pure (``now`` is passed in: seconds on the receiver's clock).

    ``max_gap`` is the raw longest silence between two arrivals. ``max_net_gap`` discounts what the
    *sender* fell behind its own schedule between those two packets (from its timestamps: a difference on
    its clock, compared with a difference on ours, never one clock against the other), so a descheduled
    sender does not look like a network outage; lost packets (sequence holes) still count in full.
    """

    flow: str
    received: int = 0          # every packet, duplicates included
    duplicates: int = 0
    reordered: int = 0         # arrived after a higher sequence number
    first_seq: int = -1
    highest_seq: int = -1
    first_rx: float | None = None
    last_rx: float | None = None
    max_gap: float = 0.0       # seconds between two consecutive arrivals
    max_gap_end: float | None = None   # receive time of the packet that ended the longest gap
    max_net_gap: float = 0.0   # max_gap less the sender's own lateness
    _last_seq: int = -1
    _last_sent: float | None = None
    _seen: bytearray = field(default_factory=bytearray, repr=False)

    def on_packet(self, seq: int, now: float, sent: float | None = None, interval: float | None = None) -> None:
        """One arrival: `sent` is the sender's timestamp (its clock), `interval` its nominal spacing."""
        if seq < 0:
            raise ValueError(f"negative sequence number {seq}")
        self.received += 1
        if self.last_rx is not None:
            gap = now - self.last_rx
            if gap > self.max_gap:
                self.max_gap = gap
                self.max_gap_end = now
            net = gap
            if sent is not None and interval is not None and self._last_sent is not None and seq > self._last_seq:
                late = (sent - self._last_sent) - (seq - self._last_seq) * interval
                net = gap - max(0.0, late)
            self.max_net_gap = max(self.max_net_gap, net)
        else:
            self.first_rx = now
        self.last_rx = now
        self._last_seq, self._last_sent = seq, sent
        if self._test_and_set(seq):
            self.duplicates += 1
            return
        if self.first_seq < 0 or seq < self.first_seq:
            self.first_seq = seq
        if seq < self.highest_seq:
            self.reordered += 1
        else:
            self.highest_seq = seq

    def _test_and_set(self, seq: int) -> bool:
        byte, bit = divmod(seq, 8)
        if byte >= len(self._seen):
            self._seen.extend(bytes(byte + 1 - len(self._seen) + 1024))
        was = bool(self._seen[byte] & (1 << bit))
        self._seen[byte] |= 1 << bit
        return was

    @property
    def unique(self) -> int:
        return self.received - self.duplicates

    @property
    def lost(self) -> int:
        """Packets missing between the first and the highest sequence number received."""
        if self.highest_seq < 0:
            return 0
        return (self.highest_seq - self.first_seq + 1) - self.unique

    def holes(self, limit: int = 32) -> list[list[int]]:
        """Runs of missing sequence numbers between the first and the highest received: [[first, count]];
        the `limit` longest, in sequence order (a loss timeline: seq / rate = when it was sent)."""
        runs: list[list[int]] = []
        start = -1
        for seq in range(max(self.first_seq, 0), self.highest_seq + 1):
            byte, bit = divmod(seq, 8)
            missing = not (self._seen[byte] >> bit) & 1
            if missing and start < 0:
                start = seq
            elif not missing and start >= 0:
                runs.append([start, seq - start])
                start = -1
        if len(runs) > limit:
            keep = sorted(sorted(runs, key=lambda r: -r[1])[:limit])
            runs = keep
        return runs

    def to_json(self, start: float | None = None) -> dict[str, object]:
        base = start if start is not None else (self.first_rx or 0.0)
        return {
            "flow": self.flow,
            "received": self.unique,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "lost": self.lost,
            "first_seq": self.first_seq,
            "highest_seq": self.highest_seq,
            "max_gap_ms": round(self.max_gap * 1000.0, 3),
            "max_net_gap_ms": round(self.max_net_gap * 1000.0, 3),
            "max_gap_end_s": None if self.max_gap_end is None else round(self.max_gap_end - base, 6),
            "holes": self.holes(),
            "hole_runs": self._count_runs(),
        }

    def _count_runs(self) -> int:
        return len(self.holes(limit=1 << 30))


class Receiver:
    """Accounting for all flows seen on one receive socket; flows keyed by "srcip/flow id"."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.flows: dict[str, FlowStats] = {}
        self.malformed = 0

    def on_datagram(self, data: bytes, src_ip: str, now: float) -> None:
        if len(data) < HEADER.size:
            self.malformed += 1
            return
        magic, flow, seq, sent_ns, interval_us = HEADER.unpack_from(data)
        if magic != MAGIC:
            self.malformed += 1
            return
        key = f"{src_ip}/{flow}"
        stats = self.flows.get(key)
        if stats is None:
            stats = self.flows[key] = FlowStats(key)
        stats.on_packet(seq, now, sent_ns / 1e9, interval_us / 1e6 if interval_us else None)

    def to_json(self) -> dict[str, object]:
        return {
            "role": "recv",
            "malformed": self.malformed,
            "flows": {key: stats.to_json(self.start) for key, stats in sorted(self.flows.items())},
        }


# ---------------------------------------------------------------------------------------------- processes

class _Stop:
    def __init__(self) -> None:
        self.stop = False
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.stop = True


def run_receiver(port: int, duration: float | None, bind: str = "0.0.0.0") -> dict[str, object]:
    stopper = _Stop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((bind, port))
    sock.settimeout(0.05)
    # Kernel receive timestamps: a descheduled receiver process does not turn queued packets into a gap.
    # They are CLOCK_REALTIME; only differences between them are used (and the start offset below).
    kernel_ts = True
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        kernel_ts = False
    t0 = time.monotonic()
    start = time.time()
    receiver = Receiver(start)
    print("READY", file=sys.stderr, flush=True)
    deadline = None if duration is None else t0 + duration
    cmsg_space = socket.CMSG_SPACE(_TIMESPEC.size)
    while not stopper.stop and (deadline is None or time.monotonic() < deadline):
        try:
            data, ancdata, _flags, (src_ip, _src_port) = sock.recvmsg(2048, cmsg_space)
        except (TimeoutError, InterruptedError):
            continue
        now = None
        for level, ctype, cdata in ancdata:
            if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                now = sec + nsec / 1e9
        receiver.on_datagram(data, src_ip, now if now is not None else time.time())
    sock.close()
    result = receiver.to_json()
    result["duration_s"] = round(time.monotonic() - t0, 3)
    result["kernel_timestamps"] = kernel_ts
    return result


def run_sender(dst: str, port: int, flows: int, rate: float, duration: float | None,
               src_port_base: int = 0) -> dict[str, object]:
    """Send one packet per flow every 1/rate s; catch up after short stalls, report long ones."""
    if flows < 1 or rate <= 0:
        raise ValueError("flows must be >= 1 and rate > 0")
    stopper = _Stop()
    socks = []
    for i in range(flows):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", src_port_base + i if src_port_base else 0))
        s.connect((dst, port))
        socks.append(s)
    interval = 1.0 / rate
    sent = [0] * flows
    errors = 0
    pad = bytes(PACKET_SIZE - HEADER.size)
    interval_us = max(1, round(1e6 / rate))
    print("READY", file=sys.stderr, flush=True)
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    next_tick = start
    max_send_gap = 0.0
    last_tick_sent = start
    while not stopper.stop:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if now < next_tick:
            time.sleep(min(next_tick - now, 0.05))
            continue
        if now - next_tick > 0.05:      # the sender itself stalled: do not burst, note it
            next_tick = now
        ns = time.monotonic_ns()
        for i, s in enumerate(socks):
            try:
                s.send(HEADER.pack(MAGIC, i, sent[i], ns, interval_us) + pad)
                sent[i] += 1
            except OSError:             # e.g. ENETUNREACH while routes are missing: counts as lost
                errors += 1
                sent[i] += 1
        max_send_gap = max(max_send_gap, now - last_tick_sent)
        last_tick_sent = now
        next_tick += interval
    for s in socks:
        s.close()
    return {
        "role": "send",
        "dst": dst,
        "port": port,
        "rate": rate,
        "sent": {str(i): n for i, n in enumerate(sent)},
        "send_errors": errors,
        "max_send_gap_ms": round(max_send_gap * 1000.0, 3),
        "duration_s": round(time.monotonic() - start, 3),
    }


def netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def probe_env() -> dict[str, str]:
    from lab.pyenv import python_env

    return python_env(REPO_ROOT)


def merge_results(recv: dict, send: dict, src_ip: str) -> dict[str, object]:
    """Combine both sides: loss counts the sender's packets that never arrived (tail loss included)."""
    interval_ms = 1000.0 / float(send["rate"])
    flows = []
    for flow_id, n_sent in sorted(send["sent"].items(), key=lambda kv: int(kv[0])):
        r = recv["flows"].get(f"{src_ip}/{flow_id}")
        received = int(r["received"]) if r else 0
        lost = max(0, int(n_sent) - received)
        flows.append({
            "flow": int(flow_id),
            "sent": int(n_sent),
            "received": received,
            "lost": lost,
            "reordered": int(r["reordered"]) if r else 0,
            "lost_in_holes": int(r["lost"]) if r else 0,
            "first_seq": int(r["first_seq"]) if r else None,
            "highest_seq": int(r["highest_seq"]) if r else None,
            "max_gap_ms": float(r["max_gap_ms"]) if r else None,
            "max_net_gap_ms": float(r["max_net_gap_ms"]) if r else None,
            "max_gap_end_s": r["max_gap_end_s"] if r else None,
            "holes": r.get("holes", []) if r else [],
            "hole_runs": r.get("hole_runs", 0) if r else 0,
            "loss_ms": round(lost * interval_ms, 3),
        })
    gaps = [f["max_gap_ms"] for f in flows if f["max_gap_ms"] is not None]
    return {
        "flows": flows,
        "sent": sum(f["sent"] for f in flows),
        "received": sum(f["received"] for f in flows),
        "lost": sum(f["lost"] for f in flows),
        "reordered": sum(f["reordered"] for f in flows),
        "max_gap_ms": max(gaps) if gaps else None,
        "max_net_gap_ms": max((f["max_net_gap_ms"] for f in flows if f["max_net_gap_ms"] is not None), default=None),
        "max_loss_ms": max((f["loss_ms"] for f in flows), default=0.0),
        "interval_ms": interval_ms,
        "sender_max_send_gap_ms": send.get("max_send_gap_ms"),
        "send_errors": send.get("send_errors", 0),
    }


class Probe:
    """One sender/receiver pair run as subprocesses (in host namespaces when ``*_netns`` are given)."""

    def __init__(self, *, dst_ip: str, src_ip: str, src_netns: str | None = None,
                 dst_netns: str | None = None, port: int = 7000, flows: int = 8, rate: float = 1000.0,
                 python: str = sys.executable) -> None:
        self.dst_ip, self.src_ip, self.port, self.flows, self.rate = dst_ip, src_ip, port, flows, rate
        self.src_netns, self.dst_netns, self.python = src_netns, dst_netns, python
        self._recv: subprocess.Popen[str] | None = None
        self._send: subprocess.Popen[str] | None = None

    def start(self, ready_timeout: float = 10.0, prime: bool = True) -> None:
        """Start receiver then sender (each waits for READY). `prime`: first one ping from the source to
        the destination so both hosts have resolved their gateway's ARP; otherwise the first ~100 ms of
        every flow wait in the kernel's ARP queue (3 packets) and are counted as lost."""
        if prime and self.src_netns:
            subprocess.run(netns_argv(self.src_netns, ["ping", "-n", "-q", "-c", "1", "-W", "2", self.dst_ip]),
                           capture_output=True, timeout=10, check=False)
        recv_argv = [self.python, "-m", "lab.probe", "recv", "--port", str(self.port)]
        self._recv = subprocess.Popen(netns_argv(self.dst_netns, recv_argv), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=probe_env(), cwd=REPO_ROOT)
        self._wait_ready(self._recv, "receiver", self.dst_netns, ready_timeout)
        send_argv = [self.python, "-m", "lab.probe", "send", "--dst", self.dst_ip, "--port", str(self.port),
                     "--flows", str(self.flows), "--rate", str(self.rate)]
        self._send = subprocess.Popen(netns_argv(self.src_netns, send_argv), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=probe_env(), cwd=REPO_ROOT)
        self._wait_ready(self._send, "sender", self.src_netns, ready_timeout)

    def _wait_ready(self, proc: subprocess.Popen[str], role: str, netns: str | None, timeout: float) -> None:
        """Bounded wait for the READY line a probe process prints on stderr once its sockets exist."""
        assert proc.stderr is not None
        deadline = time.monotonic() + timeout
        line = ""
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([proc.stderr], [], [], left)
            if not readable:
                break
            line = proc.stderr.readline()
            if not line or line.strip() == "READY":
                break
        if line.strip() != "READY":
            self._kill()
            raise ProbeError(f"probe {role} in {netns or 'the root namespace'} did not start: {line!r}")

    def stop(self, drain: float = 0.2, timeout: float = 10.0) -> dict[str, object]:
        """Stop the sender, let in-flight packets arrive, stop the receiver; return merged results."""
        if self._send is None or self._recv is None:
            raise ProbeError("probe not started")
        self._send.send_signal(signal.SIGTERM)
        send_out, send_err = self._send.communicate(timeout=timeout)
        time.sleep(drain)               # in-flight packets: not an assertion, a drain window
        self._recv.send_signal(signal.SIGTERM)
        recv_out, recv_err = self._recv.communicate(timeout=timeout)
        try:
            send = json.loads(send_out)
            recv = json.loads(recv_out)
        except json.JSONDecodeError as e:
            raise ProbeError(f"probe output unreadable: send={send_err[-500:]!r} recv={recv_err[-500:]!r}") from e
        self._send = self._recv = None
        return merge_results(recv, send, self.src_ip)

    def _kill(self) -> None:
        for p in (self._send, self._recv):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def close(self) -> None:
        self._kill()

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.probe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--bind", default="0.0.0.0")
    r.add_argument("--duration", type=float)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--flows", type=int, default=8)
    s.add_argument("--rate", type=float, default=1000.0, help="packets/s per flow")
    s.add_argument("--duration", type=float)
    s.add_argument("--src-port-base", type=int, default=0, help="0 = ephemeral source ports")
    args = parser.parse_args(argv)
    if args.role == "recv":
        result = run_receiver(args.port, args.duration, args.bind)
    else:
        result = run_sender(args.dst, args.port, args.flows, args.rate, args.duration, args.src_port_base)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
