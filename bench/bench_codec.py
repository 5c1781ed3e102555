"""Cost of the wire codec (issue #11): the msgspec structs of proto.wire against the hand-validated msgpack
codec of REV (proto/messages.py loaded from git, not installed), in the same process, interleaved.

    python -m bench.bench_codec [--rounds N] [--batches N] [--base REV]

REV defaults to 5afd594, the last commit with the hand-validated codec (a merge base with main is this tree
once the codec is on main). Rows, per message: "payload" = the codec layer alone (encode:
message -> msgpack bytes; decode: bytes -> checked message), "build" = constructing the message from its
field values (checked: the old dataclasses in __post_init__, the structs through their decoder; the 48
PortStatus of the report are built beforehand), "datagram" = what a runtime pays per frame
through `Codec.encode` / `Codec.decode` on an established pair (framing, HMAC-SHA256, freshness, payload).
Messages: a 48-port PortReport (switch -> master), an LsdDelta of 10 link changes (master -> switch), an
NdFrame with both endpoints (switch -> switch) and an FMRP Hello with a 3-replica reach view (master ->
master). Variants are interleaved batch by batch and timed in process CPU time, best batch kept, so that
other load on the machine inflates both alike and descheduling is not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import suppress
from pathlib import Path

import msgpack

from bench.bench_freshness import DIGEST, MASTER, PEER, SW, load_old
from proto.auth import KeyRing
from proto.config import Endpoint
from proto.lsd import LinkState, encode_changes

MASTER2 = "master-2"
ROWS = ("report", "lsd delta", "nd frame", "hello")


def setup(mod) -> dict[str, tuple]:
    """Row -> (encode payload, build, decode payload, encode datagram, make datagram, decode datagram,
    payload bytes)."""
    ring = KeyRing.from_secret(bytes(range(32)))
    names = ([SW, PEER], [MASTER, MASTER2])
    sw = mod.Codec(ring.bundle_for_switch(SW), SW, *names)
    master = mod.Codec(ring, MASTER, *names)
    master2 = mod.Codec(ring, MASTER2, *names)
    peer = mod.Codec(ring.bundle_for_switch(PEER), PEER, *names)
    for a, b in ((sw, master), (master, master2)):
        for src, dst in ((a, b), (b, a), (a, b)):
            with suppress(mod.DecodeError):
                dst.decode(src.challenge(dst.local_id))
    nd = mod.NdFrame(SW, 3, Endpoint(PEER, 7), Endpoint(PEER, 7))
    for src, dst, port in ((sw, peer, 7), (peer, sw, 3), (sw, peer, 7)):
        frame = nd if src is sw else mod.NdFrame(PEER, 7, Endpoint(SW, 3))
        with suppress(mod.DecodeError):
            dst.decode(src.encode(frame), port=port)
    ports = tuple(mod.PortStatus(p, True, True, True, True, False) for p in range(1, 49))
    changes = encode_changes({i * 37: LinkState.DOWN if i % 2 else LinkState.UP for i in range(10)})
    msgs = {
        "report": (mod.PortReport(SW, DIGEST, 1, 1, ports, reach=3), sw, master, {"to": MASTER}, {}),
        "lsd delta": (mod.LsdDelta(MASTER, 1, 41, 42, changes), master, sw, {"to": SW}, {}),
        "nd frame": (nd, sw, peer, {}, {"port": 7}),
        "hello": (mod.Hello(MASTER, "master", 1, 42, 100, MASTER, (40, 38, 0)), master, master2,
                  {"to": MASTER2}, {}),
    }
    if hasattr(mod, "encode_payload"):     # this tree: proto.wire
        enc_p, dec_p = mod.encode_payload, mod.decode_payload
    else:                                  # REV: hand-validated msgpack
        def enc_p(m):
            return msgpack.packb(mod._to_wire(m), use_bin_type=True)

        def dec_p(cls, data):
            return mod._from_wire(cls, mod._unpack(data))
    out = {}
    for row, (msg, src, dst, enc_kw, dec_kw) in msgs.items():
        payload, cls = enc_p(msg), type(msg)
        assert dec_p(cls, payload) == msg
        assert dst.decode(src.encode(msg, **enc_kw), **dec_kw)[1] == msg
        names = getattr(cls, "__struct_fields__", None) or [f.name for f in dataclasses.fields(cls)]
        values = tuple(getattr(msg, n) for n in names)
        assert cls(*values) == msg
        out[row] = (
            lambda _d, m=msg: enc_p(m),
            lambda _d, c=cls, v=values: c(*v),
            lambda _d, c=cls, p=payload: dec_p(c, p),
            lambda _d, s=src, m=msg, kw=enc_kw: s.encode(m, **kw),
            lambda s=src, m=msg, kw=enc_kw: s.encode(m, **kw),
            lambda d, t=dst, kw=dec_kw: t.decode(d, **kw),
            len(payload),
        )
    return out


#: The last commit whose proto/messages.py validates by hand (before proto/wire.py).
BEFORE_CODEC = "5afd594"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1000, help="calls per timed batch")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per row and variant (best kept)")
    ap.add_argument("--base", default=None)
    args = ap.parse_args()
    base = args.base or BEFORE_CODEC
    variants = {"before": load_old(base), "msgspec": sys.modules["proto.messages"]}
    fns = {v: setup(mod) for v, mod in variants.items()}
    steps = ("build", "payload encode", "payload decode", "datagram encode", "datagram decode")
    cases = [(row, what) for row in ROWS for what in steps]
    best = {(v, c): float("inf") for v in variants for c in cases}
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    for _ in range(args.batches):
        for row, what in cases:
            for v in variants:
                enc_p, build, dec_p, enc_d, make_d, dec_d, _ = fns[v][row]
                fn = {"build": build, "payload encode": enc_p, "payload decode": dec_p, "datagram encode": enc_d,
                      "datagram decode": dec_d}[what]
                data = [make_d() for _ in range(args.rounds)] if what == "datagram decode" else [None] * args.rounds
                t0 = time.process_time()
                for d in data:
                    fn(d)
                best[(v, (row, what))] = min(best[(v, (row, what))], (time.process_time() - t0) / args.rounds * 1e6)
    print(f"loadavg {load0} -> {Path('/proc/loadavg').read_text().split()[:3]}  base {base[:10]}  "
          f"{args.batches} x {args.rounds} calls, best batch, CPU µs per call")
    print("| message | step | before µs | msgspec µs | ratio |\n|---|---|---|---|---|")
    for row, what in cases:
        o, n = best[("before", (row, what))], best[("msgspec", (row, what))]
        print(f"| {row} | {what} | {o:.2f} | {n:.2f} | {n / o:.2f} |")
    sizes = {v: [fns[v][row][6] for row in ROWS] for v in variants}
    print(f"payload bytes ({', '.join(ROWS)}): before {sizes['before']}, msgspec {sizes['msgspec']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
