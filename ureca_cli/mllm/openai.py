"""The HTTP backend: any OpenAI-compatible chat-completions server (vLLM, SGLang, LMDeploy, OpenAI,
``transformers serve``), images sent inline as base64 data URLs.

Up to ``concurrency`` requests are in flight at once (callers beyond that wait their turn), spread over the
``base_urls`` round-robin. ``timeout`` bounds each try's whole time (connecting, sending, waiting and reading
the answer), not only the gap between bytes: every network read and write is given what is left of it
(``deadlines.py``), so a server that trickles its answer a byte at a time is given up on in time. Connection
errors, timeouts, 429 and 5xx answers, and empty answers are retried with exponential backoff and full jitter,
honouring a server's ``Retry-After``; after the last try the call raises ``BackendError`` with one line naming
the server and the last reason. Other 4xx answers fail at once. ``check()`` asks every server for its model
list once, so a stage fails before it reads its input when one cannot be reached.

The API key is read from the environment variable named by ``api_key_env`` (default ``OPENAI_API_KEY``, when it
is set, as every OpenAI-compatible client does). Secrets are never handed out: the key and any ``user:password``
in a base URL are replaced by ``***`` (``Secrets.redact``) in every error message, answer and description this
backend gives, even when a server echoes them back.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import itertools
import math
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote

from ..errors import UrecaError
from .base import BackendError, ChatBackend, EncodedImage, GenerationSettings, Message, clean_answer
from .deadlines import Deadlines

RETRY_STATUS = {408, 409, 425, 429}
MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is cut to this
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/?#\s@]*)@")  # scheme://user:password@
MIN_SECRET = 4  # shorter secrets are masked inside URLs only, not wherever the characters occur


class Secrets:
    """What must never be shown: the API key and the credentials of the base URLs, in every form a server may
    echo them (as sent, percent-decoded, as a Basic-auth token). ``redact(text)`` masks them all, and the
    ``user:password@`` part of any URL in the text."""

    def __init__(self, key: str | None, urls: Iterable[str]):
        found: set[str] = set()
        if key:
            found.add(key)
        for url in urls:
            m = _USERINFO.match(url)
            if not m or not m.group(2):
                continue
            raw = m.group(2)
            user, _, password = raw.partition(":")
            found.update({raw, unquote(raw), password, unquote(password)})
            found.add(base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii"))
        self._secrets = sorted((x for x in found if len(x) >= MIN_SECRET), key=len, reverse=True)

    def redact(self, text: Any) -> str:
        """``text`` (made a string) with every secret and every URL's ``user:password@`` masked."""
        out = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@" if ":" not in m.group(2) else
                            f"{m.group(1)}{m.group(2).partition(':')[0]}:{MASK}@", str(text))
        for secret in self._secrets:
            out = out.replace(secret, MASK)
        return out


_ENCODED: dict[int, tuple[Any, str, str]] = {}  # id(image) -> (weakref to it, fmt, data URL)
_ENCODED_LOCK = threading.Lock()


def _forget(key: int) -> Any:
    def drop(_ref: Any) -> None:
        with _ENCODED_LOCK:
            _ENCODED.pop(key, None)

    return drop


def _cached_data_url(image: Any, fmt: str) -> str:
    """A ``data:image/...;base64,...`` URL, made once per live image object: a stage that sends one image twice (a main object's
    context picture is also its paragraph's) encodes it, and base64-encodes it, once. An ``EncodedImage`` is
    sent as its own bytes (base64 of them, also once per object)."""
    key = id(image)
    with _ENCODED_LOCK:
        hit = _ENCODED.get(key)
    if hit is not None and hit[0]() is image and hit[1] == fmt:
        return hit[2]
    enc = image if isinstance(image, EncodedImage) else EncodedImage.from_pil(image, fmt)
    url = f"data:{enc.mime};base64," + base64.b64encode(enc.data).decode("ascii")
    try:
        ref = weakref.ref(image, _forget(key))
    except TypeError:  # not weak-referenceable: no caching
        return url
    with _ENCODED_LOCK:
        _ENCODED[key] = (ref, fmt, url)
    return url


def to_openai_messages(messages: Sequence[Message], fmt: str = "jpeg") -> list[dict[str, Any]]:
    """Our messages in the chat-completions form (text parts and ``image_url`` parts, in order)."""
    out = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            if isinstance(p, str):
                parts.append({"type": "text", "text": p})
            else:
                parts.append({"type": "image_url", "image_url": {"url": _cached_data_url(p, fmt)}})
        out.append({"role": m.role, "content": parts})
    return out


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(ChatBackend):
    """Chat completions over HTTP. ``base_urls`` end in ``/v1`` (``http://host:8000/v1``)."""

    kind = "openai"

    def __init__(
        self,
        base_urls: Sequence[str] | str = ("http://127.0.0.1:8000/v1",),
        model: str | None = None,
        *,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        image_format: str = "jpeg",
    ):
        import httpx

        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        key_env = api_key_env or DEFAULT_KEY_ENV
        key = os.environ.get(key_env)
        if api_key_env and not key:
            raise UrecaError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
        self.secrets = Secrets(key, urls)
        if not urls:
            raise UrecaError("--base-url: give at least one server, such as http://127.0.0.1:8000/v1")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise UrecaError(f"--base-url {self.secrets.redact(u)!r}: expected an http:// or https:// URL "
                                 "ending in /v1")
            try:
                httpx.URL(u)
            except (httpx.InvalidURL, ValueError, TypeError) as e:
                raise UrecaError(f"--base-url {self.secrets.redact(u)!r}: not a valid URL "
                                 f"({self.secrets.redact(e)})") from None
        if concurrency < 1:
            raise UrecaError(f"--concurrency {concurrency}: needs at least 1")
        if retries < 0:
            raise UrecaError(f"--retries {retries}: needs 0 or more")
        if not math.isfinite(timeout):
            raise UrecaError(f"--timeout {timeout}: needs a finite number of seconds above 0")
        if timeout <= 0:
            raise UrecaError(f"--timeout {timeout}: needs a number of seconds above 0")
        if backoff < 0:
            raise UrecaError(f"backoff {backoff}: needs 0 or more seconds")
        if image_format not in ("jpeg", "png"):
            raise UrecaError(f"image format {image_format!r}: choose jpeg or png")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.concurrency = concurrency
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.image_format = image_format
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout), limits=limits)
        self._deadline = Deadlines()
        self._deadline.install(self._client)
        self._gate = threading.BoundedSemaphore(concurrency)
        self._rr = itertools.cycle(range(len(self.base_urls)))
        self._lock = threading.Lock()
        self._model = model
        self._stop = threading.Event()
        self.requests_sent = 0  # every HTTP attempt, for tests and summaries

    # ------------------------------------------------------------------------------------- redaction
    @contextlib.contextmanager
    def _redacted(self) -> Iterator[None]:
        """The one redaction point: every ``UrecaError`` (``BackendError`` included) leaving the block has its
        message passed through ``secrets.redact``."""
        try:
            yield
        except UrecaError as e:
            raise type(e)(self.secrets.redact(e)) from None

    def describe(self) -> dict[str, Any]:
        with self._redacted():
            return {"backend": self.kind, "model": self.secrets.redact(self.model)}

    # ------------------------------------------------------------------------------------------ model
    @property
    def model(self) -> str:  # type: ignore[override]
        if self._model is None:
            with self._lock:
                if self._model is None:
                    with self._redacted():
                        self._model = self._served_models(self.base_urls[0])[0]
        return self._model

    def _served_models(self, base: str) -> list[str]:
        """The model ids ``GET base/models`` lists (at least one); ``UrecaError`` naming the URL otherwise."""
        import httpx

        shown = self.secrets.redact(base) + "/models"
        try:
            with self._deadline(self.timeout):
                r = self._client.get(base + "/models")
        except httpx.TimeoutException:
            raise UrecaError(f"{shown}: no answer within {self.timeout:g} s; is the server up?") from None
        except httpx.HTTPError as e:
            raise UrecaError(f"{shown}: cannot reach the chat server ({type(e).__name__}); start it, or pass "
                             "--base-url with its address") from None
        if r.status_code != 200:
            raise UrecaError(f"{shown}: HTTP {r.status_code}: {_error_text(r)}")
        try:
            data = r.json().get("data") or []
            ids = [str(m["id"]) for m in data]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UrecaError(f"{shown}: not an OpenAI model list ({type(e).__name__}); pass --model") from None
        if not ids:
            raise UrecaError(f"{shown}: the server lists no models; pass --model")
        return ids

    def check(self) -> None:
        """Fail now, with one line naming the server, when a server cannot be reached or refuses us (one
        ``GET /models`` each); the served model is taken from the first when ``--model`` was not given."""
        with self._redacted():
            for base in self.base_urls:
                first = self._served_models(base)[0]
                with self._lock:
                    if self._model is None:
                        self._model = first

    def _next_url(self) -> str:
        with self._lock:
            return self.base_urls[next(self._rr)]

    # ------------------------------------------------------------------------------------------- chat
    def _payload(self, messages: Sequence[Message], settings: GenerationSettings) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages, self.image_format),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stream": False,
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        return body

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2**attempt))
        delay = random.uniform(0, delay)  # full jitter
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))  # the server knows best, within reason
        if self._stop.wait(delay):
            raise BackendError("the chat backend was closed while waiting to retry")

    def chat(self, messages: Sequence[Message], settings: GenerationSettings) -> str:
        """The answer, with any secret a server echoed in it masked; errors are masked alike."""
        with self._redacted():
            return self.secrets.redact(self._chat(messages, settings))

    def _chat(self, messages: Sequence[Message], settings: GenerationSettings) -> str:
        import httpx
        import orjson

        body = orjson.dumps(self._payload(messages, settings))
        last = "no attempt made"
        url = self.base_urls[0]
        with self._gate:
            for attempt in range(self.retries + 1):
                url = self._next_url()
                retry_after = None
                with self._lock:
                    self.requests_sent += 1
                try:
                    with self._deadline(self.timeout):
                        r = self._client.post(url + "/chat/completions", content=body)
                except httpx.TimeoutException:
                    last = f"no answer within {self.timeout:g} s"
                except httpx.HTTPError as e:
                    last = f"connection failed ({type(e).__name__})"
                else:
                    if r.status_code == 200:
                        try:
                            return clean_answer(_answer_text(r.json()), url)
                        except (BackendError, ValueError) as e:
                            last = "empty answer" if isinstance(e, BackendError) else "answer is not JSON"
                    elif r.status_code in RETRY_STATUS or r.status_code >= 500:
                        last = f"HTTP {r.status_code}"
                        retry_after = retry_after_seconds(r.headers.get("retry-after"))
                    else:
                        raise BackendError(f"{url}: HTTP {r.status_code}: {_error_text(r)}")
                if attempt < self.retries:
                    self._wait(attempt, retry_after)
        raise BackendError(f"{url}: chat request failed after {self.retries + 1} tries; last: {last}")

    def close(self) -> None:
        self._stop.set()
        self._client.close()


def _answer_text(data: Any) -> Any:
    """``choices[0].message.content`` of a chat-completions answer (text parts joined if it is a list)."""
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _error_text(r: Any) -> str:
    """A short, one-line reason from an error answer (the server's message, never our headers)."""
    try:
        data = r.json()
        msg = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        text = str(msg)
    except ValueError:
        text = r.text
    return " ".join(text.split())[:200] or "(no message)"
