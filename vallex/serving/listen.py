"""The listening side of ``vallex serve``: the port is taken before the model loads, and stalled clients are cut off.

    sock = bind_socket("127.0.0.1", 8000)        # ValueError now, not after a minute of loading, if it is busy
    ...load the model...
    serve(app, sock, log_level="info")            # uvicorn on that socket, with the timeouts below

uvicorn closes a keep-alive connection that sends nothing for ``timeout_keep_alive`` seconds, but gives a new
connection, or a request whose headers trickle in a byte at a time, all the time it wants: enough such
clients hold every connection slot and file descriptor. :class:`HeadTimeoutProtocol` gives each request's
head (request line and headers) :data:`HEAD_TIMEOUT_S` seconds from the connection (or from the previous
response) and answers 408 after that; the body has its own limit in :mod:`vallex.serving.http`.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a request's line and headers.
HEAD_TIMEOUT_S = 10.0
#: Seconds an idle keep-alive connection stays open between requests (uvicorn's own timer).
KEEP_ALIVE_S = 5

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening); ValueError, naming the port, when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restarts need not wait
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"Port {port} on {host} is already in use (another server is listening there): "
                             "stop it or choose another --port.") from None
        raise ValueError(f"Cannot listen on {host}:{port}: {error.strerror or error}. Check --host and "
                         "--port.") from None
    return sock


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head (see the module docstring)."""

    head_timeout_s: float = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()  # the next request's head gets its own deadline (after the keep-alive wait)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Start the deadline while a head is awaited; stop it once the request line and headers are in."""
        awaiting_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not awaiting_head:
            self._cancel_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:  # never write into another response
                self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def make_server(app: Any, *, log_level: str = "info", head_timeout_s: float = HEAD_TIMEOUT_S) -> Any:
    """A ``uvicorn.Server`` for ``app`` with the timeouts above (``server.run(sockets=[sock])`` runs it)."""
    import uvicorn

    protocol = type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": head_timeout_s})
    config = uvicorn.Config(app, http=protocol, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S)
    return uvicorn.Server(config)


def serve(app: Any, sock: socket.socket, *, log_level: str = "info") -> None:
    """Run uvicorn with ``app`` on the bound ``sock`` until Ctrl-C or SIGTERM."""
    make_server(app, log_level=log_level).run(sockets=[sock])
