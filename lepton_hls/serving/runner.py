"""Run an ASGI app with uvicorn: in the foreground (the CLI) or on a background thread with its own event loop
(the demo, benchmarks and tests run several servers in one process). Loopback unless told otherwise."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from .errors import ServingError

LOOPBACK = "127.0.0.1"


def _config(app, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=2)


def serve_forever(app, host: str = LOOPBACK, port: int = 8000, log_level: str = "info") -> None:
    uvicorn.Server(_config(app, host, port, log_level)).run()


class ServerThread:
    """A uvicorn server on a daemon thread, bound before start so port 0 picks a free port."""

    def __init__(self, app, host: str = LOOPBACK, port: int = 0, log_level: str = "warning"):
        # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it every response
        # (headers and body are two writes) waits ~40 ms for the client's delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as e:
            self._sock.close()
            raise ServingError(f"cannot bind {host}:{port}: {e}") from None
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(_config(app, host, self.port, log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
