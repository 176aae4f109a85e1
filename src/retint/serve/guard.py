"""Connection-level protection for ``retint serve``, in uvicorn's h11 protocol.

A client that opens connections and then sends nothing, or stops halfway through an upload, must
not hold the server: every connection has a read deadline, and each client address may hold only
so many connections. What uvicorn would answer itself (a malformed request) is JSON here too,
like every other error: ``{"error": message, "status": code}``.

- Headers: a request's headers must arrive whole within ``read_timeout`` of the connection
  opening (or of the previous response); the body may not pause for longer than that. Past the
  deadline the client gets a 408 and the connection is closed; a connection that never sent a
  byte is just closed. Time the server itself is not reading (its buffer full) does not count.
- Caps, checked when a connection's first request arrives: a connection is admitted while its
  address holds fewer than ``max_client_connections`` admitted connections (else a 429) and the
  server fewer than ``max_connections`` in all (else a 503); both refusals close it. Connections
  that never complete a request hold no slot (the header deadline ends them), so a flood of
  silent sockets cannot lock anyone out. ``/healthz`` is never refused and takes no slot.
"""

from __future__ import annotations

import asyncio
import http
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

EXEMPT = frozenset({"/healthz"})  # answered whatever the load: monitors must see the truth


def error_json(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


def raw_response(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` JSON error response, written outside h11's cycle."""
    body = error_json(status, message)
    head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\nx-content-type-options: nosniff\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


@dataclass
class Guard:
    """Deadlines and caps shared by every connection of one server."""

    read_timeout: float = 30.0
    max_client_connections: int = 64
    max_connections: int = 160
    by_client: Counter[str] = field(default_factory=Counter)  # admitted connections per address

    @property
    def open(self) -> int:
        """Admitted connections now open."""
        return sum(self.by_client.values())

    def protocol(self) -> type[GuardedH11]:
        """The uvicorn ``http`` protocol class bound to this guard."""
        return type("GuardedH11", (GuardedH11,), {"guard": self})

    def admit(self, host: str) -> tuple[int, str] | None:
        """Take a slot for a new connection from ``host``, or say why not (status, message)."""
        if self.by_client[host] >= self.max_client_connections:  # first: the client's own doing
            return 429, (f"too many connections from {host} ({self.by_client[host]} open, limit "
                         f"{self.max_client_connections}); close some and try again")
        if self.open >= self.max_connections:
            return 503, (f"server busy: {self.open} connections open (limit "
                         f"{self.max_connections}); try again shortly")
        self.by_client[host] += 1
        return None

    def release(self, host: str) -> None:
        self.by_client[host] -= 1
        if self.by_client[host] <= 0:
            del self.by_client[host]


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with the read deadlines and connection caps of a :class:`Guard`."""

    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inner_app, self.app = self.app, self._admit
        self._host = ""
        self._admitted = False  # holds one of the guard's slots
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "headers", "body" or None (not on the client)
        self._since = 0.0  # when the headers wait began, or the body's last bytes came
        self._partial = False  # some bytes of the awaited headers have arrived

    # -- connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host = self.client[0] if self.client else ""
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._waiting_for = None
        if self._admitted:
            self._admitted = False
            self.guard.release(self._host)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._partial = True
        self._follow(progress=True)

    def on_response_complete(self) -> None:
        self._partial = False
        super().on_response_complete()
        self._follow()

    def send_400_response(self, msg: str) -> None:
        body = error_json(400, f"bad request: {msg}")
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    # -- caps

    async def _admit(self, scope: Any, receive: Any, send: Any) -> None:
        if self._admitted or scope.get("path") in EXEMPT or self.transport.is_closing():
            return await self._inner_app(scope, receive, send)
        refused = self.guard.admit(self._host)
        if refused is None:
            self._admitted = True
            return await self._inner_app(scope, receive, send)
        status, message = refused
        body = error_json(status, message)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    # -- deadlines

    def _follow(self, progress: bool = False) -> None:
        """Point the deadline at what the connection now waits for from the client."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self._waiting_for = None
        elif state is h11.IDLE:
            if self._waiting_for != "headers":  # a total deadline: progress does not extend it
                self._wait("headers")
        elif state is h11.SEND_BODY:
            if progress or self._waiting_for != "body":  # an idle deadline
                self._wait("body")
        else:  # the request is in (or the connection is done): the server's turn
            self._waiting_for = None

    def _wait(self, what: str) -> None:
        self._waiting_for = what
        self._since = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self.guard.read_timeout, self._check)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._waiting_for is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: not the client's delay
            self._since = now
        left = self._since + self.guard.read_timeout - now
        if left > 0:
            self._timer = self.loop.call_later(left, self._check)
        else:
            self._expire()

    def _expire(self) -> None:
        cycle, what = self.cycle, self._waiting_for
        self._waiting_for = None
        answered = cycle is not None and cycle.response_started  # then only close
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now reports a disconnect
            cycle.keep_alive = False
            cycle.message_event.set()
        if what == "body" and not answered:
            self.transport.write(raw_response(
                408, f"request timed out: the upload stalled for {self.guard.read_timeout:g} s"))
        elif what == "headers" and self._partial:
            self.transport.write(raw_response(
                408, f"request timed out: the request headers did not arrive within "
                     f"{self.guard.read_timeout:g} s"))
        self.transport.close()
