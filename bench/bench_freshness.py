"""Cost of the freshness checks per datagram: wire v2 (incarnation/challenge, per-stream windows) against
the wire v1 Codec (one counter per process, one window per sender) it replaced, in the same run.

    python -m bench.bench_freshness [--rounds N] [--base REV]

REV (default: 43230e9, the v1 codec (before the freshness design)) supplies the v1 proto/messages.py (loaded from git, not
installed). Measures, best of 5, per datagram: encode and decode of a 48-port PortReport (the report path)
and of an NdFrame (the ND path), each on an established sender/receiver pair. Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import suppress
from pathlib import Path

from bench.gitrev import load_at
from proto.auth import KeyRing
from proto.config import Endpoint
from proto.messages import DecodeError, NdFrame

SW, PEER, MASTER = "tor-000-001", "agg-000-001", "master-1"
DIGEST = "ab" * 32


def load_old(rev: str):
    return load_at(rev, "proto/messages.py", "messages_v1")


def best(fn, n: int) -> float:
    """Best of 5 runs of n calls, in microseconds per call."""
    out = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out = min(out, (time.perf_counter() - t0) / n)
    return out * 1e6


def measure(mod, n: int, new: bool) -> dict[str, float]:
    ring = KeyRing.from_secret(bytes(range(32)))
    names = ([SW, PEER], [MASTER])
    sw = mod.Codec(ring.bundle_for_switch(SW), SW, *names)
    master = mod.Codec(ring, MASTER, *names)
    peer = mod.Codec(ring.bundle_for_switch(PEER), PEER, *names)
    ports = tuple(mod.PortStatus(p, True, True, True, True, False) for p in range(1, 49))
    report = mod.PortReport(SW, DIGEST, 1, 1, ports)
    nd = mod.NdFrame(SW, 3, Endpoint(PEER, 7), Endpoint(PEER, 7))
    if new:
        for src, dst in ((sw, master), (master, sw), (sw, master)):
            with suppress(DecodeError):
                dst.decode(src.challenge(dst.local_id))
        for src, dst, port in ((sw, peer, 7), (peer, sw, 3), (sw, peer, 7)):
            frame = nd if src is sw else NdFrame(PEER, 7, Endpoint(SW, 3))
            with suppress(DecodeError):
                dst.decode(src.encode(frame), port=port)
        enc_r = lambda: sw.encode(report, to=MASTER)  # noqa: E731
        dec_kw: dict = {}
        nd_kw = {"port": 7}
    else:
        enc_r = lambda: sw.encode(report)  # noqa: E731
        dec_kw, nd_kw = {}, {}
    reports = [enc_r() for _ in range(n * 5 + 5)]
    nds = [sw.encode(nd) for _ in range(n * 5 + 5)]
    it_r, it_n = iter(reports), iter(nds)
    res = {
        "report encode": best(enc_r, n),
        "report decode": best(lambda: master.decode(next(it_r), **dec_kw), n),
        "nd encode": best(lambda: sw.encode(nd), n),
        "nd decode": best(lambda: peer.decode(next(it_n), **nd_kw), n),
        "report bytes": len(reports[0]),
        "nd bytes": len(nds[0]),
    }
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--base", default=None)
    args = ap.parse_args()
    base = args.base or "43230e9"    # the v1 codec (before the freshness design): a merge base with main is this tree once merged
    old = load_old(base)
    new_mod = sys.modules["proto.messages"]
    # interleave so that load changes hit both alike
    a1, b1 = measure(old, args.rounds, False), measure(new_mod, args.rounds, True)
    a2, b2 = measure(old, args.rounds, False), measure(new_mod, args.rounds, True)
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}  base {base[:10]}  rounds {args.rounds}")
    print(f"{'':16}{'v1 (µs)':>10}{'v2 (µs)':>10}{'ratio':>8}")
    for k in a1:
        o, w = min(a1[k], a2[k]), min(b1[k], b2[k])
        print(f"{k:16}{o:10.2f}{w:10.2f}{w / o:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
