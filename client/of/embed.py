"""os-ken's runtime embedded in our process (native threads, no eventlet, no monkey-patching).

* `OSKEN_HUB_TYPE` stays `native`: os-ken's "green threads" are ordinary threads. The driver creates
  them from a daemon thread of its own, so they are all daemons and never keep the process alive.
* The handshake app (hello, features, echo) is a subclass of os-ken's `OFPHandler` whose `start()` does
  not run `OpenFlowController`: that would open a listening socket (0.0.0.0:6653 and :6633 unless
  configured) and block forever in `accept()` on a non-daemon thread. The driver opens the TCP
  connection itself and `serve_connection` serves it like
  `os_ken.controller.controller.datapath_connection_factory`, with a `Datapath` that fixes a native-hub
  hang. Nothing listens. `os_ken.cfg.CONF` is still set to loopback/ephemeral listen values so that
  nothing would listen on a fixed port even if someone started the stock controller.
* Several drivers may live in one process: each has its own `FirepathOFApp` (unique name) that keeps
  only the events of the connections its driver opened (`Datapath.owner`). One handshake app is shared
  (reference-counted by `acquire_shared` / `release_shared`).
* Replies and asynchronous messages of a connection in MAIN state (port status, packet-in, barrier and
  error replies, multipart replies) go from os-ken's receive thread straight to the owner's `_on_*` methods
  (`_ClientOnlyOFPHandler._direct`: an os-ken *handler* of the `ofp_event` brick, called in the receive
  loop, not an *observer* whose events wait in an app's queue for the app's thread): one thread hand-off
  less per message (issue #20), and every message is handled in the order the switch sent it (an error
  before its batch's barrier reply). Those methods translate and hand over; they never block. Only state
  changes (MAIN, DEAD) still go through `FirepathOFApp`'s queue (128 events) and thread.
* `_Datapath.send` writes to the socket on the caller's thread, under a lock, instead of queueing for
  os-ken's send thread (a second hand-off per message); only the close marker still goes through that queue.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from os_ken import cfg
from oslo_config import cfg as oslo_cfg

# app_manager must be imported before os_ken.controller.controller (circular import inside os-ken).
from os_ken.base import app_manager  # isort: skip
from os_ken.controller import controller as osken_controller
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls, set_ev_handler
from os_ken.controller.ofp_handler import OFPHandler
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

_CONF_LOCK = threading.Lock()
_CONFIGURED = False
_SHARED_LOCK = threading.Lock()
_shared_users = 0
_handler_app: Any = None


def configure() -> None:
    """Make os_ken.cfg.CONF safe: loopback only, no fixed listening ports, fast socket timeout."""
    global _CONFIGURED
    with _CONF_LOCK:
        if _CONFIGURED:
            return
        conf = cfg.CONF
        # Parse an empty command line (never sys.argv: pytest's or our CLI's options are not os-ken's).
        with contextlib.suppress(oslo_cfg.Error):
            conf(args=[], project="os_ken", default_config_files=[])
        conf.set_override("ofp_listen_host", "127.0.0.1")
        # Non-zero values (0 would make OpenFlowController fall back to 6653 + 6633); we never start
        # os-ken's listener, but if anything did, these are "pick any free port" on loopback only.
        conf.set_override("ofp_tcp_listen_port", 0)
        conf.set_override("ofp_ssl_listen_port", 1)
        conf.set_override("ofp_switch_address_list", [])
        _CONFIGURED = True


#: Messages handed from os-ken's receive thread straight to the owning driver (method names of OfDriver).
_DIRECT = {
    ofp_event.EventOFPPortDescStatsReply: "_on_port_desc",
    ofp_event.EventOFPPortStatus: "_on_port_status",
    ofp_event.EventOFPPacketIn: "_on_packet_in",
    ofp_event.EventOFPBarrierReply: "_on_barrier_reply",
    ofp_event.EventOFPFlowStatsReply: "_on_multipart",
    ofp_event.EventOFPFlowDescStatsReply: "_on_multipart",
    ofp_event.EventOFPGroupDescStatsReply: "_on_multipart",
    ofp_event.EventOFPMeterConfigStatsReply: "_on_multipart",
    ofp_event.EventOFPMeterDescStatsReply: "_on_multipart",
    ofp_event.EventOFPErrorMsg: "_on_error",
    ofp_event.EventOFPRoleReply: "_on_role",
    ofp_event.EventOFPRoleStatus: "_on_role",
}


class _ClientOnlyOFPHandler(OFPHandler):
    """os-ken's handshake app (hello, features, port-desc, echo) without OpenFlowController's listener."""

    def start(self) -> None:  # type: ignore[override]
        app_manager.OSKenApp.start(self)  # only the event loop; returns None: no main thread
        return None

    @set_ev_handler(list(_DIRECT), MAIN_DISPATCHER)
    def _direct(self, ev: Any) -> None:
        """Called by os-ken's receive loop itself (a handler of this brick, not a queued observer)."""
        msg = ev.msg
        owner = getattr(msg.datapath, "owner", None)
        if owner is None:
            return
        try:
            getattr(owner, _DIRECT[type(ev)])(msg)
        except Exception:       # never let one message end the connection's receive loop
            self.logger.exception("firepath: handling %s failed", type(ev).__name__)


def acquire_shared() -> None:
    global _shared_users, _handler_app
    with _SHARED_LOCK:
        if _shared_users == 0:
            mgr = app_manager.AppManager.get_instance()
            _handler_app = mgr.instantiate(_ClientOnlyOFPHandler)
            _handler_app.start()
        _shared_users += 1


def release_shared() -> None:
    global _shared_users, _handler_app
    with _SHARED_LOCK:
        _shared_users -= 1
        if _shared_users == 0 and _handler_app is not None:
            mgr = app_manager.AppManager.get_instance()
            with contextlib.suppress(KeyError):
                mgr.uninstantiate(_handler_app.name)
            _handler_app = None


class _Datapath(osken_controller.Datapath):
    """os-ken's Datapath with one fix for the native hub.

    When the switch closes the connection, `serve()` kills its send thread with `hub.kill`, a no-op
    under the native hub, then joins it; that thread sits in `send_q.get()` forever, so `serve()` never
    returns, the datapath never reaches DEAD_DISPATCHER and no one learns the connection is gone. After
    the receive loop ends we queue a close marker, which makes the send loop exit.

    `owner` is the OfDriver that opened the connection: every app sees every datapath's events, and
    each driver's app keeps only those of its own connections.
    """

    def __init__(self, sock: socket.socket, address: tuple[str, int], owner: Any) -> None:
        self.owner = owner  # before super().__init__, which already emits a state-change event
        self._tx_lock = threading.Lock()
        self.direct_sends = 0
        super().__init__(sock, address)

    def send(self, buf: Any, close_socket: bool = False) -> bool:
        """Write `buf` to the switch now, on this thread (os-ken queues it for its send thread: one more
        hand-off per message). The close marker still goes through os-ken's queue: it ends the send loop."""
        if close_socket:
            return bool(super().send(buf, close_socket=True))
        with self._tx_lock:
            if not self.send_q or self.state == DEAD_DISPATCHER:
                return False
            try:
                self.socket.sendall(buf)
            except OSError:
                with contextlib.suppress(OSError):
                    self.socket.shutdown(socket.SHUT_RDWR)   # the receive loop ends the connection
                return False
            self.direct_sends += 1
        return True

    def _recv_loop(self) -> None:
        try:
            super()._recv_loop()
        finally:
            with contextlib.suppress(Exception):
                self.send(b"", close_socket=True)


def serve_connection(sock: socket.socket, address: tuple[str, int], owner: Any) -> None:
    """What os_ken.controller.controller.datapath_connection_factory does, with our _Datapath."""
    with contextlib.closing(_Datapath(sock, address, owner)) as datapath:
        datapath.serve()


class FirepathOFApp(app_manager.OSKenApp):
    """Receives one driver's connection state changes (MAIN, DEAD) on its own thread; messages go to the
    driver from the receive thread (`_ClientOnlyOFPHandler._direct`)."""

    # Global in os-ken (intersected over all apps): both versions, the bridge's `protocols` decides.
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args: Any, driver: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"firepath_of_{id(driver):x}"  # unique per driver: several may share a process
        self.driver = driver

    def _mine(self, datapath: Any) -> bool:
        return getattr(datapath, "owner", None) is self.driver

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        if not self._mine(ev.datapath):
            return
        if ev.state == MAIN_DISPATCHER:
            self.driver._on_main(ev.datapath)
        elif ev.state == DEAD_DISPATCHER:
            self.driver._on_dead(ev.datapath)


def instantiate_app(driver: Any) -> FirepathOFApp:
    """Start the shared handshake app (first user) and this driver's own app; returns the app."""
    acquire_shared()
    app = app_manager.AppManager.get_instance().instantiate(FirepathOFApp, driver=driver)
    app.start()
    return app


def uninstantiate_app(app: FirepathOFApp) -> None:
    """Stop a driver's app (and the shared handshake app with its last user)."""
    with contextlib.suppress(KeyError):
        app_manager.AppManager.get_instance().uninstantiate(app.name)
    release_shared()
