"""The OpenFlow driver, one job per module (only `translate`, `patches` and `embed` import os-ken):

- `events`    the driver's interface in firepath's own types: events, `NotConnected`, the `Driver` protocol;
- `patches`   corrections to os-ken's parsers, applied once at import of `translate`;
- `translate` client.ofmsg values <-> os-ken messages: the only place that builds os-ken objects;
- `embed`     os-ken's runtime inside our process: configuration, handshake app, per-connection datapath;
- `sockets`   TCP targets and sockets opened inside a network namespace;
- `driver`    `OfDriver`: threads, connect loop, batches and their barrier/error bookkeeping.

Importing this package (or `events`) does not import os-ken: the programmer, the client core and their
tests depend only on `events`.
"""
