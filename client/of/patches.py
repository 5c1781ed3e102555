"""Corrections to os-ken 4.2.2's message parsers, applied once (idempotent) before any message is parsed.

`client.of.translate` calls `apply()` at import, so every user of the driver gets them. Each fix names
the os-ken function it replaces and the bug; when os-ken fixes one, its patch here goes away.
"""

from __future__ import annotations

import struct
from typing import Any

from os_ken.ofproto import ofproto_v1_5


def fix_of15_group_parsers() -> None:
    """Correct two bugs of os-ken 4.2.2's OpenFlow 1.5 group parsing (the reply parser runs inside
    os-ken's receive loop, so an exception there drops the whole connection):

    * `OFPBucket.parser` slices the bucket properties as `buf[offset:offset + len]` after `offset` has
      moved past the bucket header and actions, so with two or more buckets it parses the next bucket
      as properties and raises ValueError;
    * `OFPGroupDescStats.parser` makes the same mistake for group properties and appends to a
      `properties` that is None.

    The fixed versions below differ only in slicing from the start of the structure.
    """
    from os_ken.ofproto import ofproto_v1_5_parser as p15

    o15 = ofproto_v1_5
    if getattr(p15.OFPBucket, "_firepath_fixed", False):
        return

    def bucket_parser(cls: Any, buf: bytes, offset: int) -> Any:
        msg = cls()
        start = offset
        (msg.len, msg.action_array_len, msg.bucket_id) = struct.unpack_from(
            o15.OFP_BUCKET_PACK_STR, buf, offset
        )
        offset += o15.OFP_BUCKET_SIZE
        action_buf = buf[offset : offset + msg.action_array_len]
        msg.actions = []
        while action_buf:
            action = p15.OFPAction.parser(action_buf, 0)
            msg.actions.append(action)
            action_buf = action_buf[action.len :]
        offset += msg.action_array_len
        rest = buf[offset : start + msg.len]
        msg.properties = []
        while rest:
            prop, rest = p15.OFPGroupBucketProp.parse(rest)
            msg.properties.append(prop)
        return msg

    def group_desc_parser(cls: Any, buf: bytes, offset: int) -> Any:
        stats = cls()
        start = offset
        (stats.length, stats.type, stats.group_id, stats.bucket_array_len) = struct.unpack_from(
            o15.OFP_GROUP_DESC_STATS_PACK_STR, buf, offset
        )
        offset += o15.OFP_GROUP_DESC_STATS_SIZE
        bucket_buf = buf[offset : offset + stats.bucket_array_len]
        stats.buckets = []
        while bucket_buf:
            bucket = p15.OFPBucket.parser(bucket_buf, 0)
            stats.buckets.append(bucket)
            bucket_buf = bucket_buf[bucket.len :]
        offset += stats.bucket_array_len
        rest = buf[offset : start + stats.length]
        stats.properties = []
        while rest:
            prop, rest = p15.OFPGroupProp.parse(rest)
            stats.properties.append(prop)
        return stats

    p15.OFPBucket.parser = classmethod(bucket_parser)  # type: ignore[method-assign,assignment]
    p15.OFPGroupDescStats.parser = classmethod(group_desc_parser)  # type: ignore[method-assign,assignment]
    p15.OFPBucket._firepath_fixed = True  # type: ignore[attr-defined]



def apply() -> None:
    """Apply every patch of this module (safe to call more than once)."""
    fix_of15_group_parsers()
