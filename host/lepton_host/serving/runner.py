"""Run an ASGI app with uvicorn: in the foreground (the CLI) or on a background thread with its own event loop
(the demo, benchmarks and tests run several servers in one process). Loopback unless told otherwise.

Optionally with the Open Inference Protocol's gRPC surface beside it (grpc_server.GrpcFront), on the same host and
event loop: bound before the app starts (a port in use stops the start), serving once the app has started its
service, and stopped before the app stops it, so the service starts and stops once for both surfaces."""

from __future__ import annotations

import errno
import socket
import threading
import time

import uvicorn

from .errors import ServingError
from .http_guard import HttpLimits, guarded_protocol

LOOPBACK = "127.0.0.1"


def _config(app, host: str, port: int, log_level: str, limits: HttpLimits | None) -> uvicorn.Config:
    limits = limits or HttpLimits()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=2, http=guarded_protocol(limits),
                          timeout_keep_alive=limits.keep_alive_s)


class BindError(ServingError):
    """The server's address cannot be listened on (in use, not this machine's, no permission)."""

    status = 500


def bind(host: str = LOOPBACK, port: int = 8000, flag: str = "--port") -> socket.socket:
    """A TCP socket bound to host:port, before anything is announced: a port in use is one clear error here,
    not a log line from inside the server. Port 0 picks a free port (see `getsockname()`). `flag`: the option
    that chose the port, named in the hint."""
    if not 0 <= port <= 65535:
        raise BindError(f"{flag} {port} is not a TCP port (0-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise BindError(f"cannot listen on {host!r}: not an address of this machine ({e.strerror})") from None
    family, _, proto, _, addr = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every response
    # (headers and body are two writes) waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        hint = f" (another server running? choose another {flag})" if e.errno == errno.EADDRINUSE else ""
        raise BindError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    return sock


def require_grpc() -> None:
    """gRPC is an optional extra on the board (grpcio has no wheel for every board's CPU): say how to get it."""
    import importlib.util

    missing = [m for m in ("grpc", "google.protobuf") if _find(importlib.util, m) is None]
    if missing:
        raise ServingError(f"--grpc-port needs grpcio and protobuf (missing: {', '.join(missing)}); install them "
                           "with pip install 'lepton-hls[grpc]'")


def _find(util, module: str):
    try:
        return util.find_spec(module)
    except ModuleNotFoundError:  # the parent package itself is missing
        return None


def reserve_port(host: str, port: int, flag: str, beside: socket.socket | None = None) -> int:
    """A port for a server that binds it itself later (the gRPC surface): checked free on host now, so that a
    port in use is one clear error before anything is announced; 0 picks a free one. `beside`: the HTTP socket,
    bound but not yet listening, whose port the check alone would not see taken. -> the port."""
    if beside is not None and port and port == beside.getsockname()[1]:
        raise BindError(f"{flag} {port} is the HTTP port too; give each protocol its own port")
    sock = bind(host, port, flag)
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()


class _WithGrpc:
    """The app with a gRPC front beside it (see the module docstring), through the app's lifespan messages."""

    def __init__(self, app, front, host: str):
        self.app, self.front, self.host = app, front, host

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        startup = await receive()
        try:
            self.front.bind(self.host)
        except ServingError as e:
            await send({"type": "lifespan.startup.failed", "message": str(e)})  # the app never starts
            return
        pending = [startup]

        async def receive_then_stop_front():
            if pending:
                return pending.pop()
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.front.stop()
            return message

        async def send_after_front(message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.front.start()
            elif message["type"] == "lifespan.startup.failed":
                await self.front.stop()
            await send(message)

        try:
            await self.app(scope, receive_then_stop_front, send_after_front)
        finally:
            await self.front.stop()  # already stopped unless the app's lifespan failed


def _with_grpc(app, grpc, host: str):
    return app if grpc is None else _WithGrpc(app, grpc, host)


def serve_forever(app, sock: socket.socket, log_level: str = "info", limits: HttpLimits | None = None,
                  grpc=None) -> None:
    """Serve on a socket from `bind` until interrupted; with `grpc` (a grpc_server.GrpcFront, its port from
    `reserve_port`), the gRPC surface too, on the socket's host."""
    host, port = sock.getsockname()[:2]
    try:
        uvicorn.Server(_config(_with_grpc(app, grpc, host), host, port, log_level, limits)).run(sockets=[sock])
    finally:
        sock.close()


class ServerThread:
    """A uvicorn server on a daemon thread, bound before start so port 0 picks a free port. With `grpc` (a
    grpc_server.GrpcFront), the gRPC surface too, on the same host: its port is known once started."""

    def __init__(self, app, host: str = LOOPBACK, port: int = 0, log_level: str = "warning",
                 limits: HttpLimits | None = None, grpc=None):
        self._sock = bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.grpc = grpc
        self._server = uvicorn.Server(_config(_with_grpc(app, grpc, host), host, self.port, log_level, limits))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str | None:
        """host:port of the gRPC surface, as a gRPC client names it (None without one)."""
        return None if self.grpc is None else self.grpc.target

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServingError(f"server on {self.url} failed to start (see its log above)")
            if time.monotonic() > deadline:
                raise ServingError(f"server on {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
