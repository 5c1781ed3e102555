"""Cost of a stale first frame at the master (issue #18, cold start): every switch's first report to a
master is of an unverified incarnation, rejected as ``stale`` and answered with a Challenge.

    python -m bench.bench_stale [--switches N] [--base REV]

Per frame, best of 5, on a fresh master Codec each round (as in a cold start: every sender is new, so its
HMAC template is built on this path): ``Codec.decode`` of a 48-port PortReport that raises ``stale``, then
``Codec.answer`` (the Challenge). REV (default 91a4358) supplies the old proto/messages.py, loaded from git;
both run alternately in the same process. Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import proto.messages  # noqa: F401  (the new codec, read from sys.modules)
from bench.gitrev import load_at
from proto.auth import KeyRing

MASTER = "master-1"
DIGEST = "ab" * 32


def load_old(rev: str):
    return load_at(rev, "proto/messages.py", "messages_old")


def frames(mod, ring: KeyRing, names: list[str]) -> list[bytes]:
    out = []
    for name in names:
        sw = mod.Codec(ring.bundle_for_switch(name), name, names, [MASTER])
        ports = tuple(mod.PortStatus(p, True, True, True, True, False) for p in range(1, 49))
        out.append(sw.encode(mod.PortReport(name, DIGEST, 1, 1, ports), to=MASTER))
    return out


def measure(mod, ring: KeyRing, names: list[str], data: list[bytes]) -> dict[str, float]:
    """µs per frame: decode (stale), answer, both; best of 5 fresh masters."""
    res = {"decode (stale)": float("inf"), "answer (Challenge)": float("inf"), "both": float("inf")}
    n = len(data)
    for _ in range(5):
        master = mod.Codec(ring, MASTER, names, [MASTER])
        peers = []
        t0 = time.perf_counter()
        for d in data:
            try:
                master.decode(d)
            except mod.DecodeError as e:
                peers.append(e.sender)
        t1 = time.perf_counter()
        for i, p in enumerate(peers):
            master.answer(p, float(i))
        t2 = time.perf_counter()
        assert len(peers) == n and master.rejected["stale"] == n, master.rejected
        res["decode (stale)"] = min(res["decode (stale)"], (t1 - t0) / n * 1e6)
        res["answer (Challenge)"] = min(res["answer (Challenge)"], (t2 - t1) / n * 1e6)
        res["both"] = min(res["both"], (t2 - t0) / n * 1e6)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--switches", type=int, default=3000)
    ap.add_argument("--base", default="91a4358")
    args = ap.parse_args()
    old = load_old(args.base)
    new = sys.modules["proto.messages"]
    ring = KeyRing.from_secret(bytes(range(32)))
    names = [f"tor-{i // 100:03d}-{i % 100:03d}" for i in range(args.switches)]
    data = frames(new, ring, names)
    runs = [(measure(old, ring, names, data), measure(new, ring, names, data)) for _ in range(2)]
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}  base {args.base}  "
          f"switches {args.switches}  {time.strftime('%H:%M:%S', time.gmtime())} UTC")
    print(f"{'per stale frame':20}{'old (µs)':>10}{'new (µs)':>10}{'ratio':>8}")
    for k in runs[0][0]:
        o, w = min(r[0][k] for r in runs), min(r[1][k] for r in runs)
        print(f"{k:20}{o:10.2f}{w:10.2f}{w / o:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
