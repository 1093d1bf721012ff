"""Limits uvicorn leaves open, enforced in the HTTP protocol layer the servers run on.

uvicorn's httptools protocol (the one it picks when httptools is installed, as it is here) has no header size
limit: llhttp hands every header to Python, which concatenates it, so a client can grow the server's memory by
whatever it sends before the blank line (uvicorn's `h11_max_incomplete_event_size` applies to its h11 protocol
only, and h11 answers an oversized head with a plain-text 400). Its keep-alive timer runs only between
requests, so a connection that never sends a byte, or trickles its headers, stays open for good. And it
answers a malformed request with a plain-text 400. This subclass bounds the bytes and the time of the
request head, closes silent connections after the keep-alive timeout, and answers every protocol-level error
with the same `{"error": ...}` JSON as the application.

What stays with uvicorn: the body's bytes reach the application as they come (its read timeout and size limit
are the application's, see `routes_infer.read_body`), and requests it accepts are parsed by llhttp, whose error
strings are passed on as they are.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 64 << 10  # request line plus headers
    header_timeout_s: float = 10.0  # from the first byte of a request to the end of its headers
    keep_alive_s: float = 5.0  # an idle connection (new, or between requests) is closed after this


def json_error_bytes(status: int, message: str, default_headers=()) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for answers given before the app is reached."""
    body = json.dumps({"error": message}).encode()
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
             b"connection: close\r\n", b"\r\n"]
    return b"".join(head) + body


def guarded_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """The uvicorn protocol class (uvicorn.Config(http=...)) enforcing `limits`."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.timeout_keep_alive = limits.keep_alive_s
            self._in_head = False  # between a request's first byte and the end of its headers
            self._head_next = True  # the next byte starts a request (a new connection, or after a whole one)
            self._head_bytes = 0
            self._tail = b""  # the last bytes of the head so far: its blank line may span two reads
            self._head_timer: asyncio.TimerHandle | None = None
            self._refused = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            # uvicorn arms its keep-alive timer only after a response: a connection that never speaks would
            # otherwise be held for good.
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            self._unset_keepalive_if_required()
            starts_in_head = self._in_head or self._head_next
            if starts_in_head:
                # Refuse before parsing: llhttp would hand the whole head to Python, however large.
                end = (self._tail + data).find(b"\r\n\r\n")
                head_part = len(data) if end < 0 else max(0, end + 4 - len(self._tail))
                if self._head_bytes + head_part > limits.max_header_bytes:
                    self._refuse(431, f"request line and headers exceed {limits.max_header_bytes} bytes")
                    return
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                # No WebSocket routes here; uvicorn's own handling (a warning, then the request as usual).
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            except httptools.HttpParserError as e:
                self._refuse(400, f"malformed HTTP request: {e}")
                return
            if self._in_head and not self._refused:
                self._head_bytes += len(data)
                self._tail = (self._tail + data)[-3:]
                # A head that began inside this read (pipelined after a body) is counted from the read's start.
                if not starts_in_head and self._head_bytes > limits.max_header_bytes:
                    self._refuse(431, f"request line and headers exceed {limits.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._head_next:  # began inside a read that did not start with it: count from here
                self._head_bytes, self._tail = 0, b""
            self._in_head, self._head_next = True, False
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timed_out)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head_next, self._head_bytes, self._tail = True, 0, b""

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_timer()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, msg)

        def _refuse(self, status: int, message: str) -> None:
            self._refused = True
            self._cancel_head_timer()
            self._unset_keepalive_if_required()
            if self.transport.is_closing():
                return
            self.transport.write(json_error_bytes(status, message, self.server_state.default_headers))
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            # Closing with unread bytes from a client still sending would reset the connection and lose the
            # answer: end our side, discard what still comes, close when the client does (or after a timeout).
            self.transport.write_eof()
            self.loop.call_later(limits.header_timeout_s, self.transport.close)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(408, f"request headers did not arrive within {limits.header_timeout_s:.3g} s")

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    return GuardedHttpToolsProtocol
