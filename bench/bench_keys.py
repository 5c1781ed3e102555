"""Cost of the key id per datagram (issue #21): the wire v3 Codec (key id in the header, key set lookup)
against the wire v2 Codec of REV (one key ring), in the same process, interleaved.

    python -m bench.bench_keys [--rounds N] [--base REV]

REV (default: 1dbc5ab, the v2 codec (one key ring, before key ids)) supplies the v2 proto/messages.py (loaded from git, not
installed; bench.bench_freshness.load_old). Rows, per datagram on an established pair: encode and decode
of a 48-port PortReport (report path) and of an NdFrame (ND path), for v2, v3 with one key (the
single-secret config) and v3 with two accepted keys (a rollover under way, frames under the second).
Variants are interleaved batch by batch and timed in process CPU time, best batch kept, so that other
load on the machine inflates them alike and descheduling is not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import suppress
from pathlib import Path

from bench.bench_freshness import DIGEST, MASTER, PEER, SW, load_old
from proto.auth import KeyRing, KeySet
from proto.config import Endpoint
from proto.messages import DecodeError, NdFrame


def setup(mod, keys: int | None) -> dict[str, tuple]:
    """`keys`: None for the v2 module (one ring), else the number of keys in the v3 set (sending the last).
    Returns row -> (function, pre-encoded datagrams or None)."""
    rings = [KeyRing.from_secret(bytes(range(i, i + 32))) for i in range(max(keys or 1, 1))]

    def keyset(name: str | None):
        own = [r if name is None else r.bundle_for_switch(name) for r in rings]
        if keys is None:
            return own[0]
        return KeySet({i + 1: r for i, r in enumerate(own)}, len(own))

    names = ([SW, PEER], [MASTER])
    sw = mod.Codec(keyset(SW), SW, *names)
    master = mod.Codec(keyset(None), MASTER, *names)
    peer = mod.Codec(keyset(PEER), PEER, *names)
    ports = tuple(mod.PortStatus(p, True, True, True, True, False) for p in range(1, 49))
    report = mod.PortReport(SW, DIGEST, 1, 1, ports)
    nd = mod.NdFrame(SW, 3, Endpoint(PEER, 7), Endpoint(PEER, 7))
    for src, dst in ((sw, master), (master, sw), (sw, master)):
        with suppress(DecodeError, mod.DecodeError):
            dst.decode(src.challenge(dst.local_id))
    for src, dst, port in ((sw, peer, 7), (peer, sw, 3), (sw, peer, 7)):
        frame = nd if src is sw else mod.NdFrame(PEER, 7, Endpoint(SW, 3))
        with suppress(DecodeError, mod.DecodeError):
            dst.decode(src.encode(frame), port=port)
    return {
        "report encode": (lambda _d: sw.encode(report, to=MASTER), None),
        "report decode": (lambda d: master.decode(d), lambda: sw.encode(report, to=MASTER)),
        "nd encode": (lambda _d: sw.encode(nd), None),
        "nd decode": (lambda d: peer.decode(d, port=7), lambda: sw.encode(nd)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1000, help="calls per timed batch")
    ap.add_argument("--batches", type=int, default=20, help="timed batches per row and variant (best kept)")
    ap.add_argument("--base", default=None)
    args = ap.parse_args()
    base = args.base or "1dbc5ab"    # the v2 codec (one key ring, before key ids): a merge base with main is this tree once merged
    old = load_old(base)
    new = sys.modules["proto.messages"]
    assert NdFrame is new.NdFrame
    variants = {"v2": (old, None), "v3 1 key": (new, 1), "v3 2 keys": (new, 2)}
    rows = {name: setup(mod, k) for name, (mod, k) in variants.items()}
    size = {name: (len(r["report decode"][1]()), len(r["nd decode"][1]())) for name, r in rows.items()}
    rows = {name: setup(mod, k) for name, (mod, k) in variants.items()}  # fresh windows
    best = {(v, row): float("inf") for v in variants for row in rows["v2"]}
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    # Interleaved batch by batch, CPU time of this process (descheduling under load is not counted).
    for _ in range(args.batches):
        for row in rows["v2"]:
            for v in variants:
                fn, make = rows[v][row]
                data = [make() for _ in range(args.rounds)] if make else [None] * args.rounds
                t0 = time.process_time()
                for d in data:
                    fn(d)
                best[(v, row)] = min(best[(v, row)], (time.process_time() - t0) / args.rounds * 1e6)
    print(f"loadavg {load0} -> {Path('/proc/loadavg').read_text().split()[:3]}  base {base[:10]}  "
          f"{args.batches} x {args.rounds} calls, best batch, CPU µs per datagram")
    print(f"{'':16}" + "".join(f"{k:>12}" for k in variants) + f"{'ratio 1':>9}{'ratio 2':>9}")
    for row in rows["v2"]:
        vals = [best[(v, row)] for v in variants]
        print(f"{row:16}" + "".join(f"{v:12.2f}" for v in vals) + f"{vals[1] / vals[0]:9.3f}{vals[2] / vals[0]:9.3f}")
    print(f"{'bytes report/nd':16}" + "".join(f"{f'{a}/{b}':>12}" for a, b in size.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
