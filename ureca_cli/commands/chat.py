"""The chat-backend options: one group, shared by every command that talks to a chat model (annotate, refine,
and caption's Table 2 baselines).

``@chat_options()`` puts the options into a command's signature, where its ``chat: ChatOptions`` parameter
stands (Typer reads the signature, so ``--help`` and the completion scripts show them), and hands the command
one ``ChatOptions``. ``only=`` picks a subset (caption has its own ``--model``, ``--device``, ...)::

    @cli_errors("annotate")
    @chat_options()
    def annotate(input: ..., chat: ChatOptions, ...) -> None:
        with chat.build() as backend:
            ...

``--backend`` is a choice built from the backend registry (``mllm.registry.BACKENDS``): adding a backend there
adds it here, with the options it takes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Annotated, Any

import typer

from ..mllm.registry import BackendName, backend_spec
from .common import option_group


@dataclass(frozen=True)
class ChatOptions:
    """The chat options of one command run: which backend, how to reach it, and how it answers."""

    backend: str = "hf"
    model: str | None = None  # hf: hub id or folder (default OpenGVLab/InternVL3-1B-hf); openai: the served name
    base_url: tuple[str, ...] = ()  # openai; empty: http://127.0.0.1:8000/v1
    api_key_env: str | None = None
    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 6
    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 8
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    max_side: int | None = None

    def __post_init__(self):
        """Numbers no backend can use are refused when the command line is parsed, whichever backend is chosen
        (the ranges are the backends' and ``GenerationSettings``' to check)."""
        from ..errors import UrecaError

        for name in ("timeout", "temperature", "top_p"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise UrecaError(f"{OPTIONS[name][0]} {value}: needs a finite number"
                                 + (" of seconds above 0" if name == "timeout" else ""))

    def build(self, **changes: Any) -> Any:
        """The ``ChatBackend`` these options name (``mllm.make_backend``); ``changes`` replace fields first (the
        judge of ``refine --verify`` is the same backend with another model or server). Whether a server can be
        reached is checked later, once the stage is set up and before it reads its input (``ChatBackend.check``:
        ``InFlight.run`` for annotate and refine)."""
        from ..mllm import make_backend

        opts = replace(self, **changes) if changes else self
        spec = backend_spec(opts.backend)
        values = {"base_urls": list(opts.base_url) or None, **{f.name: getattr(opts, f.name) for f in fields(opts)}}
        return make_backend(opts.backend, **{name: values[name] for name in spec.options})

    def generation(self) -> Any:
        """The ``GenerationSettings`` of these options."""
        from ..mllm import GenerationSettings

        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                  top_p=self.top_p, seed=self.seed)

    def given(self, names: Iterable[str]) -> list[str]:
        """The flags among ``names`` (field names) whose values differ from the defaults, in field order."""
        default = ChatOptions()
        wanted = set(names)
        return [OPTIONS[f.name][0] for f in fields(self)
                if f.name in wanted and getattr(self, f.name) != getattr(default, f.name)]


# field -> (flag, type, help); every default is ChatOptions'
OPTIONS: dict[str, tuple[str, Any, str]] = {
    "backend": ("--backend", BackendName, "hf: a transformers model in this process. openai: an OpenAI-compatible "
                                          "server."),
    "model": ("--model", str | None, "hf: a hub id or local folder (default OpenGVLab/InternVL3-1B-hf). openai: the "
                                     "served model name (default: the first one the server lists)."),
    "base_url": ("--base-url", list[str] | None, "openai: server URL ending in /v1; repeat it to spread requests "
                                                 "round-robin."),
    "api_key_env": ("--api-key-env", str | None, "openai: name of the environment variable holding the API key "
                                                  "(default: OPENAI_API_KEY, when it is set). The key and any "
                                                  "password in --base-url are never printed."),
    "concurrency": ("--concurrency", int, "openai: requests in flight at once."),
    "timeout": ("--timeout", float, "openai: seconds one try of a request may take, all of it (connecting, "
                                    "waiting, reading the answer)."),
    "retries": ("--retries", int, "openai: retries of a failed request (backoff + jitter)."),
    "device": ("--device", str | None, "hf: cuda, cuda:1, cpu (default: cuda if present)."),
    "dtype": ("--dtype", str, "hf: auto, bfloat16, float16 or float32."),
    "batch_size": ("--batch-size", int, "hf: conversations per generate call."),
    "max_new_tokens": ("--max-new-tokens", int, "Longest answer, in tokens."),
    "temperature": ("--temperature", float, "0 for greedy decoding."),
    "top_p": ("--top-p", float, "Nucleus sampling mass (with --temperature > 0)."),
    "seed": ("--seed", int | None, "Sampling seed, where the backend supports one."),
    "max_side": ("--max-side", int | None, "Downscale every image sent so its longer side is at most this many "
                                           "pixels; 0: full size. Default: annotate draws each picture at the size "
                                           "InternVL's grid of up to 12 tiles of 448 pixels keeps of it (a 1500x2250 "
                                           "photo: 896x1344); refine and caption send full size."),
}


def _parameter(name: str) -> inspect.Parameter:
    flag, kind, help_text = OPTIONS[name]
    default = getattr(ChatOptions(), name)
    if name == "backend":
        default = BackendName(default)
    elif name == "base_url":
        default = None
    show = default is not None
    option = typer.Option(flag, help=help_text, show_default=show)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, option])


def chat_options(only: Iterable[str] | None = None, param: str = "chat") -> Callable[[Callable], Callable]:
    """Decorate a command: its ``param`` (a ``ChatOptions``) becomes the chat options (``only`` those named, in
    ``OPTIONS`` order; the others keep their defaults)."""
    names = [n for n in OPTIONS if only is None or n in set(only)]

    def build(values: dict[str, Any]) -> ChatOptions:
        if "backend" in values:
            values["backend"] = BackendName(values["backend"]).value
        if "base_url" in values:
            values["base_url"] = tuple(values["base_url"] or ())
        return ChatOptions(**values)

    return option_group(names, param, _parameter, build)
