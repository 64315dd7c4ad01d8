"""Chat backends shared by every stage that talks to a multimodal chat model (annotate, refine, caption).

API (stable; other stages build on it)::

    from ureca_cli.mllm import GenerationSettings, Message, user, system, make_backend, BackendError

    backend = make_backend("openai", base_urls=["http://127.0.0.1:8000/v1"], model="m", concurrency=16)
    backend = make_backend("hf", model="OpenGVLab/InternVL3-1B-hf", device="cuda", dtype="bfloat16")
    answer: str = backend.chat([user(image1, image2, "Describe ...")], GenerationSettings(max_new_tokens=64))
    answers: list[str] = backend.chat_many([conv1, conv2], settings)   # up to backend.concurrency at once
    backend.describe()  # {"backend": "openai", "model": "m"}, for the records
    backend.close()

- ``Message(role, parts)``: ``parts`` is a tuple of ``str``, RGB ``PIL.Image.Image`` and ``EncodedImage``
  (JPEG/PNG bytes, e.g. made in a worker process; HTTP sends them as they are) in order; ``user(*parts)``
  and ``system(text)`` build them.
- ``chat`` is thread-safe and blocking; it returns a stripped, non-empty answer or raises ``BackendError``
  (a one-line ``UrecaError``), after the backend's own retries. An empty answer is an error, never a caption.
- ``backend.concurrency``: how many ``chat`` calls to keep running at once from threads for full throughput
  (``--concurrency`` for HTTP; the batch size for ``hf``, which gathers concurrent calls into one ``generate``).
"""

from __future__ import annotations

from .base import (
    BackendError,
    ChatBackend,
    EncodedImage,
    GenerationSettings,
    Message,
    clean_answer,
    system,
    user,
)
from .registry import BACKENDS, BackendName, make_backend

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendName",
    "ChatBackend",
    "EncodedImage",
    "GenerationSettings",
    "Message",
    "clean_answer",
    "make_backend",
    "system",
    "user",
]
