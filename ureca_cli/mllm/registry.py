"""The chat backends by name: one line per backend, behind both ``make_backend`` and the CLI's ``--backend``.

A backend lives in its own module (``hf.py``, ``openai.py``) and is imported only when it is built, so the
registry costs nothing at start-up. ``options`` lists the shared chat options (``commands/chat.py``) the
backend takes, so one set of command-line options builds any of them. To add a backend: write
``mllm/<name>.py`` with a ``ChatBackend`` subclass, and add its line to ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import UrecaError
from .base import ChatBackend


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend's class lives (``module:Class``, relative to this package), the options it takes and a
    line of help."""

    target: str
    options: tuple[str, ...]
    help: str

    def load(self) -> type[ChatBackend]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module, __package__), name)


BACKENDS: dict[str, BackendSpec] = {
    "hf": BackendSpec(".hf:HFBackend", ("model", "device", "dtype", "batch_size"),
                      "a transformers model in this process"),
    "openai": BackendSpec(".openai:OpenAIBackend",
                          ("base_urls", "model", "api_key_env", "concurrency", "timeout", "retries"),
                          "an OpenAI-compatible server (vLLM, SGLang, LMDeploy, OpenAI, transformers serve)"),
}

#: The ``--backend`` choice: the registry's names, so help and shell completion offer exactly these.
BackendName = StrEnum("BackendName", {name: name for name in BACKENDS})


def backend_spec(kind: str) -> BackendSpec:
    spec = BACKENDS.get(str(kind))
    if spec is None:
        raise UrecaError(f"--backend {kind!r}: choose {' or '.join(BACKENDS)}")
    return spec


def make_backend(kind: str, **options: Any) -> ChatBackend:
    """Build a backend by name: ``make_backend("openai", base_urls=[...], model=..., concurrency=...)`` or
    ``make_backend("hf", model=..., device=..., dtype=..., batch_size=...)``; the options are the backend
    class's keyword arguments. Options that are ``None`` are left to the backend's defaults."""
    cls = backend_spec(kind).load()
    return cls(**{k: v for k, v in options.items() if v is not None})
