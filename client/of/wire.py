"""OpenFlow messages serialized once per value: the bytes of a `client.ofmsg` value, cached, with the xid
patched in per send.

Building an os-ken message object and serializing it costs ~0.4 ms of CPU for a typical routing update (two
SELECT group-mods of four buckets and a barrier), on every switch that takes the update, at the moment the
whole fabric is reprogramming (BENCHMARKS "Where a remote switch's reprogramming time goes"). The same
values recur (a link goes down and comes back: the groups are rewritten to what they were), and the bytes of
a message depend only on its value and the connection (OpenFlow version, the SELECT method): so they are
built once through `client.of.translate` and os-ken's own serializer, then reused.

Only FlowMod, GroupMod, MeterMod and Barrier are cached (PacketOut carries a fresh frame each time, PortMod
depends on the port's hardware address); a value that cannot be hashed is never cached. The xid lives in the
header at bytes 4..8 (OpenFlow 1.3 section 7.1, 1.5 section 7.1: version, type, length, xid) and is the only
part that differs between two sends of one value.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Any

from client import ofmsg
from client.of import translate

__all__ = ["WireCache"]

_XID = struct.Struct("!I")
_CACHED = (ofmsg.FlowMod, ofmsg.GroupMod, ofmsg.MeterMod, ofmsg.Barrier)


class WireCache:
    """Serialized messages of one connection, by value (least recently used beyond `maxsize`)."""

    def __init__(self, datapath: Any, select_method: str | None, maxsize: int = 4096) -> None:
        self.dp = datapath
        self.select_method = select_method
        self.maxsize = maxsize
        self._bytes: OrderedDict[Any, bytes] = OrderedDict()
        self.hits = self.misses = 0

    def encode(self, msg: ofmsg.OfMessage, hw_addrs: Any = None) -> tuple[bytes | Any, int]:
        """(what to hand to the datapath, xid): cached bytes with a fresh xid for a cacheable value, else an
        os-ken message with its xid set (to be sent with `send_msg`)."""
        if isinstance(msg, _CACHED):
            try:
                data = self._bytes.get(msg)
            except TypeError:           # an unhashable field (e.g. a list in a match): not cached
                pass
            else:
                if data is None:        # first send of this value: os-ken builds and serializes it
                    built = self._build(msg, hw_addrs)
                    built.serialize()
                    data = self._bytes[msg] = bytes(built.buf)
                    self.misses += 1
                    if len(self._bytes) > self.maxsize:
                        self._bytes.popitem(last=False)
                    return data, built.xid
                self._bytes.move_to_end(msg)
                self.hits += 1
                xid = self._next_xid()
                buf = bytearray(data)
                _XID.pack_into(buf, 4, xid)
                return bytes(buf), xid
        built = self._build(msg, hw_addrs)
        return built, built.xid

    def _build(self, msg: ofmsg.OfMessage, hw_addrs: Any) -> Any:
        """The os-ken message for `msg`, its xid taken from the datapath's counter."""
        built = translate.to_osken(msg, self.dp, select_method=self.select_method, hw_addrs=hw_addrs)
        self.dp.set_xid(built)
        return built

    def _next_xid(self) -> int:
        # os-ken's Datapath.set_xid without a message object
        dp = self.dp
        dp.xid = (dp.xid + 1) & dp.ofproto.MAX_XID
        return dp.xid
