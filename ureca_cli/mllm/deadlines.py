"""Whole-request deadlines for the HTTP backend's ``httpx.Client``.

httpx's timeouts bound each network read only, so a server that sends a byte a second never times out.
``Deadlines`` gives every read, write, connect and TLS handshake of a request at most what is left of the
request's own deadline, through an ``httpcore`` network backend put under the client's connection pools.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any


class Deadlines:
    """Whole-request deadlines for an ``httpx.Client``: inside ``with deadlines(seconds):`` every network read,
    write, connect and TLS handshake of this thread is given at most what is left of ``seconds`` (httpx's own
    timeouts bound each read only, so a byte a second would never time out).

    httpx has no public hook for this (encode/httpx#1450 asks for a total timeout); httpcore's network backend
    interface is public, and ``install`` puts it under the client's connection pools (reaching into the
    client's private transport attributes: the trickling-server test fails should they move)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self, seconds: float) -> contextlib.AbstractContextManager:
        @contextlib.contextmanager
        def bound() -> Iterator[None]:
            self._local.at = time.monotonic() + seconds
            try:
                yield
            finally:
                self._local.at = None

        return bound()

    def budget(self, timeout: float | None, exc: type[Exception]) -> float | None:
        """``timeout`` cut to what is left of this thread's deadline; ``exc`` when nothing is left."""
        at = getattr(self._local, "at", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise exc("the request's time is up")
        return left if timeout is None else min(timeout, left)

    def install(self, client: Any) -> None:
        """Put this deadline under every connection pool of ``client`` (its transport and proxy mounts)."""
        transports = [client._transport, *(t for t in client._mounts.values() if t is not None)]
        for transport in transports:
            pool = getattr(transport, "_pool", None)
            inner = getattr(pool, "_network_backend", None)
            if inner is None:
                raise RuntimeError(f"httpx {type(transport).__name__}: no connection pool to bound requests in")
            pool._network_backend = deadline_backend(inner, self)


def deadline_backend(inner: Any, deadlines: Deadlines) -> Any:
    """An ``httpcore.NetworkBackend`` over ``inner`` whose streams take their timeouts from ``deadlines``."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, stream: Any):
            self._stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._stream.read(max_bytes, deadlines.budget(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._stream.write(buffer, deadlines.budget(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                      timeout: float | None = None) -> Any:
            return Stream(self._stream.start_tls(ssl_context, server_hostname,
                                                 deadlines.budget(timeout, httpcore.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._stream.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            return Stream(inner.connect_tcp(host, port, deadlines.budget(timeout, httpcore.ConnectTimeout),
                                            local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return Stream(inner.connect_unix_socket(path, deadlines.budget(timeout, httpcore.ConnectTimeout),
                                                    socket_options))

        def sleep(self, seconds: float) -> None:
            inner.sleep(seconds)

    return Backend()
