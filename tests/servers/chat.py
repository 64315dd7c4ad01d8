"""A scripted OpenAI-compatible chat server on loopback that records every request, and a fault proxy.

``ScriptedServer(answer)`` answers ``POST /v1/chat/completions`` with ``answer(body)`` (the parsed JSON
request) after ``delay`` seconds, at most ``capacity`` requests at a time (the rest queue), and keeps every
request body in ``requests``. ``GET /v1/models`` lists one model. ``echo_auth`` makes it a server that hands the
credentials it was sent back: ``"answer"`` appends the ``Authorization`` header to every answer and to the listed
model's name, ``"401"`` refuses every chat request with 401 and quotes the header in the message, ``"401-all"``
refuses the model list that way too.

``FaultProxy(upstream, faults)`` forwards requests to ``upstream`` and, for the n-th chat request, first
applies ``faults(n)``: ``None`` (forward), ``"429"`` / ``"500"`` (answer that status; 429 with
``Retry-After: 0``), ``"drop"`` (close the connection without answering), ``"stall"`` (hold the request
``stall`` seconds, then close), ``"empty"`` (answer 200 with empty content), ``"down"`` (refuse: close at once).

``TrickleServer(text, interval)`` answers every request with a chat completion of ``text`` sent one byte every
``interval`` seconds (from the status line on, or, with ``headers_first``, after headers sent at once): a server
that never lets a per-read timeout fire.

All run in a background thread (``with ScriptedServer(...) as s: s.url``) and are also used by ``bench/``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def request_text(body: dict) -> str:
    """All text parts of a chat request, joined."""
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return "\n".join(out)


def request_images(body: dict) -> list[str]:
    """The image URLs (data URLs) of a chat request, in order."""
    return [
        p["image_url"]["url"]
        for m in body.get("messages", [])
        if not isinstance(m.get("content"), str)
        for p in m.get("content") or []
        if p.get("type") == "image_url"
    ]


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` before its host."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}"


def leaks(secrets: list[str], *places: Any) -> list[str]:
    """Where any of ``secrets`` shows in ``places``: texts, or files and folders (the name and the bytes of
    every file under a folder). An empty list when none does."""
    found = []
    for place in places:
        if isinstance(place, Path):
            files = [place] if place.is_file() else sorted(p for p in place.rglob("*") if p.is_file())
            for f in files:
                data = f.read_bytes()
                for s in secrets:
                    if s in str(f) or s.encode() in data:
                        found.append(f"{s!r} in {f}")
        else:
            found += [f"{s!r} in {str(place)[:200]!r}" for s in secrets if s in str(place)]
    return found


def completion(text: str, model: str = "scripted") -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class _QuietHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, and no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass


class _Base:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) run in a daemon thread."""

    def __init__(self) -> None:
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _reply(h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict | None = None) -> None:
    data = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


class ScriptedServer(_Base):
    def __init__(self, answer: Callable[[dict], str], *, delay: float = 0.0, capacity: int | None = None,
                 model: str = "scripted", record: bool = True, echo_auth: str | None = None):
        if echo_auth not in (None, "answer", "401", "401-all"):
            raise ValueError(f"echo_auth {echo_auth!r}: None, 'answer', '401' or '401-all'")
        self.echo_auth = echo_auth
        self.answer = answer
        self.record = record  # False: do not parse or keep bodies (benchmarks); answer(None) is called
        self.delay = delay
        self.model = model
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.max_in_flight = 0
        self.count = 0
        self._in_flight = 0
        self._gate = threading.BoundedSemaphore(capacity) if capacity else None
        self._lock = threading.Lock()
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(_QuietHandler):
            def _refuse(self) -> None:
                _reply(self, 401, {"error": {"message": f"invalid credentials: {self.headers.get('Authorization')}"
                                             f" for {self.headers.get('Host')}"}})

            def do_GET(self) -> None:
                if server.echo_auth == "401-all":
                    self._refuse()
                elif self.path.rstrip("/").endswith("/models"):
                    model = server.model
                    if server.echo_auth == "answer":
                        model += f" ({self.headers.get('Authorization')})"
                    _reply(self, 200, {"object": "list", "data": [{"id": model, "object": "model"}]})
                else:
                    _reply(self, 404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                body = json.loads(raw) if server.record else None
                if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                    _reply(self, 404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server.count += 1
                    if server.record:
                        server.requests.append(body)
                        server.headers.append(dict(self.headers))
                if server.echo_auth in ("401", "401-all"):
                    self._refuse()
                    return
                if server._gate:
                    server._gate.acquire()
                try:
                    with server._lock:
                        server._in_flight += 1
                        server.max_in_flight = max(server.max_in_flight, server._in_flight)
                    if server.delay:
                        time.sleep(server.delay)
                    text = server.answer(body)
                    if server.echo_auth == "answer":
                        text += f" (sent with {self.headers.get('Authorization')})"
                finally:
                    with server._lock:
                        server._in_flight -= 1
                    if server._gate:
                        server._gate.release()
                _reply(self, 200, completion(text, server.model))

        return Handler


class FaultProxy(_Base):
    def __init__(self, upstream: str, faults: Callable[[int], str | None], *, stall: float = 3.0,
                 retry_after: str = "0"):
        self.retry_after = retry_after
        u = urlparse(upstream)
        self.up_host, self.up_port = u.hostname, u.port
        self.faults = faults
        self.stall = stall
        self.count = 0
        self.applied: list[str | None] = []
        self._lock = threading.Lock()
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_QuietHandler):
            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _forward(self, method: str, body: bytes | None) -> None:
                conn = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=60)
                try:
                    conn.request(method, self.path, body=body, headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                finally:
                    conn.close()
                self.send_response(r.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward("GET", None)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with proxy._lock:
                    k = proxy.count
                    proxy.count += 1
                fault = proxy.faults(k)
                with proxy._lock:
                    proxy.applied.append(fault)
                if fault == "429":
                    _reply(self, 429, {"error": {"message": "slow down"}}, {"Retry-After": proxy.retry_after})
                elif fault == "500":
                    _reply(self, 500, {"error": {"message": "boom"}})
                elif fault in ("drop", "down"):
                    self._drop()
                elif fault == "stall":
                    time.sleep(proxy.stall)
                    self._drop()
                elif fault == "empty":
                    _reply(self, 200, completion(""))
                else:
                    self._forward("POST", body)

        return Handler


class TrickleServer(_Base):
    def __init__(self, text: str = "a slow answer", *, interval: float = 0.05, headers_first: bool = False):
        self.text, self.interval, self.headers_first = text, interval, headers_first
        self.count = 0
        self._lock = threading.Lock()
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(_QuietHandler):
            def _trickle(self) -> None:
                with server._lock:
                    server.count += 1
                body = json.dumps(completion(server.text)).encode()
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        "\r\n").encode()
                if server.headers_first:
                    self.wfile.write(head)
                    self.wfile.flush()
                    head = b""
                try:
                    for i in range(len(head + body)):
                        self.wfile.write((head + body)[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.interval)
                except OSError:  # the client gave up
                    pass
                self.close_connection = True

            def do_GET(self) -> None:
                self._trickle()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._trickle()

        return Handler
