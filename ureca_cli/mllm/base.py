"""The one interface every chat backend implements: messages of text and images in, text out.

A conversation is a list of ``Message``s; a message has a role and a tuple of parts, each a ``str`` (text), a
``PIL.Image.Image`` (RGB) or an ``EncodedImage`` (JPEG/PNG bytes made elsewhere, sent without re-encoding). ``ChatBackend.chat(messages, settings)`` returns the model's answer as a
stripped, non-empty ``str`` or raises ``BackendError``. ``chat`` is thread-safe and blocking: a caller that
wants throughput runs up to ``backend.concurrency`` calls at once from threads (the HTTP backend keeps that
many requests in flight; the in-process backend gathers concurrent calls into batches for ``generate``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import ItemFailed, UrecaError

Role = Literal["system", "user", "assistant"]


class BackendError(ItemFailed):
    """A chat request failed for good (after retries): one line, naming the server or model and why."""


@dataclass(frozen=True)
class GenerationSettings:
    """How an answer is sampled. ``temperature`` 0 means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UrecaError(f"--max-new-tokens {self.max_new_tokens}: needs at least 1")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UrecaError(f"--temperature {self.temperature}: needs a finite value >= 0")
        if not 0 < self.top_p <= 1:
            raise UrecaError(f"--top-p {self.top_p}: needs 0 < top-p <= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Message:
    """One chat message: ``role`` and its parts in order (``str`` text, ``PIL.Image.Image`` images)."""

    role: Role
    parts: tuple[Any, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.role not in ("system", "user", "assistant"):
            raise UrecaError(f"chat message role {self.role!r}: choose system, user or assistant")

    @property
    def text(self) -> str:
        """The text parts joined (images left out)."""
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[Any]:
        return [p for p in self.parts if not isinstance(p, str)]


@dataclass(frozen=True)
class EncodedImage:
    """An image already encoded as JPEG or PNG bytes (made in another process, say); the HTTP backend
    sends the bytes as they are, the in-process backend decodes them. ``size`` is (W, H) pixels."""

    data: bytes
    mime: str = "image/jpeg"
    size: tuple[int, int] = (0, 0)

    @classmethod
    def from_pil(cls, image: Any, fmt: str = "jpeg", quality: int = 92) -> EncodedImage:
        import io

        buf = io.BytesIO()
        if fmt == "png":
            image.save(buf, format="PNG", compress_level=1)
        else:
            (image if image.mode == "RGB" else image.convert("RGB")).save(buf, format="JPEG", quality=quality)
        return cls(buf.getvalue(), f"image/{fmt}", tuple(image.size))

    def to_pil(self) -> Any:
        """The decoded RGB ``PIL.Image``."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as im:
            return im.convert("RGB")

    @property
    def suffix(self) -> str:
        return ".png" if self.mime == "image/png" else ".jpg"


def user(*parts: Any) -> Message:
    """A user message of text and images, in order: ``user(img1, img2, "Describe ...")``."""
    return Message("user", tuple(parts))


def system(text: str) -> Message:
    return Message("system", (text,))


def clean_answer(text: Any, who: str) -> str:
    """The answer stripped; an empty or missing answer raises ``BackendError`` (never a caption)."""
    if not isinstance(text, str) or not text.strip():
        raise BackendError(f"{who}: the model returned an empty answer")
    return text.strip()


class ChatBackend(ABC):
    """A chat model behind ``chat``. Subclasses set ``kind``, ``model`` and ``concurrency``."""

    kind: str = "?"
    model: str = "?"
    concurrency: int = 1  # how many chat() calls may usefully run at once

    @abstractmethod
    def chat(self, messages: Sequence[Message], settings: GenerationSettings) -> str:
        """The answer to one conversation; thread-safe; raises ``BackendError`` after giving up."""

    def chat_many(self, conversations: Sequence[Sequence[Message]], settings: GenerationSettings) -> list[str]:
        """Answers to several conversations, in order, up to ``concurrency`` at once."""
        from concurrent.futures import ThreadPoolExecutor

        if len(conversations) <= 1 or self.concurrency <= 1:
            return [self.chat(c, settings) for c in conversations]
        with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self.chat(c, settings), conversations))

    def describe(self) -> dict[str, Any]:
        """What a record says about the model: ``{"backend": kind, "model": model}``."""
        return {"backend": self.kind, "model": self.model}

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail now, with one ``UrecaError`` line, when the backend cannot answer (a server that cannot be
        reached); a stage calls it before it reads its input. A backend that loads its model when it is built
        has nothing left to check."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, threads or GPU memory."""

    def __enter__(self) -> ChatBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

