"""Cost of the key id per datagram (issue #21): the wire v3 Codec (key id in the header, key set lookup)
against the wire v2 Codec of REV (one key ring), in the same process, interleaved.

    python -m bench.bench_keys [--rounds N] [--base REV]

REV (default: `git merge-base HEAD main`) supplies the v2 proto/messages.py (loaded from git, not
installed; bench.bench_freshness.load_old). Rows, best of 5 per datagram on an established pair: encode
and decode of a 48-port PortReport (report path) and of an NdFrame (ND path), for v2, v3 with one key
(the single-secret config) and v3 with two accepted keys (a rollover under way, frames under the second).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

from bench.bench_freshness import DIGEST, MASTER, PEER, ROOT, SW, best, load_old
from proto.auth import KeyRing, KeySet
from proto.config import Endpoint
from proto.messages import DecodeError, NdFrame


def measure(mod, n: int, keys: int | None) -> dict[str, float]:
    """`keys`: None for the v2 module (one ring), else the number of keys in the v3 set (sending the last)."""
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
    enc_r = lambda: sw.encode(report, to=MASTER)  # noqa: E731
    reports = [enc_r() for _ in range(n * 5 + 5)]
    nds = [sw.encode(nd) for _ in range(n * 5 + 5)]
    it_r, it_n = iter(reports), iter(nds)
    return {
        "report encode": best(enc_r, n),
        "report decode": best(lambda: master.decode(next(it_r)), n),
        "nd encode": best(lambda: sw.encode(nd), n),
        "nd decode": best(lambda: peer.decode(next(it_n), port=7), n),
        "report bytes": len(reports[0]),
        "nd bytes": len(nds[0]),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--base", default=None)
    args = ap.parse_args()
    base = args.base or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True,
                                       capture_output=True, text=True).stdout.strip()
    old = load_old(base)
    new = sys.modules["proto.messages"]
    assert NdFrame is new.NdFrame
    runs: dict[str, list[dict[str, float]]] = {"v2": [], "v3 1 key": [], "v3 2 keys": []}
    for _ in range(3):  # interleaved, so that load changes hit all alike
        runs["v2"].append(measure(old, args.rounds, None))
        runs["v3 1 key"].append(measure(new, args.rounds, 1))
        runs["v3 2 keys"].append(measure(new, args.rounds, 2))
    print(f"loadavg {Path('/proc/loadavg').read_text().split()[:3]}  base {base[:10]}  rounds {args.rounds}")
    print(f"{'':16}" + "".join(f"{k:>12}" for k in runs) + f"{'ratio 1':>9}{'ratio 2':>9}")
    for row in runs["v2"][0]:
        vals = [min(r[row] for r in rs) for rs in runs.values()]
        print(f"{row:16}" + "".join(f"{v:12.2f}" for v in vals) + f"{vals[1] / vals[0]:9.2f}{vals[2] / vals[0]:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
