"""The in-process backend: a transformers image-text-to-text model (``AutoModelForImageTextToText``) with its
processor and chat template; by default a small InternVL ``-hf`` checkpoint, or any local folder.

``chat`` is thread-safe: calls from many threads are queued and a single worker thread gathers up to
``batch_size`` of them (same generation settings) into one left-padded ``generate`` call. ``concurrency``
equals ``batch_size``, so a caller that keeps that many calls in flight fills every batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import UrecaError, check_model_name, first_line
from ..loading import check_safetensors
from .base import BackendError, ChatBackend, EncodedImage, GenerationSettings, Message, clean_answer

DEFAULT_MODEL = "OpenGVLab/InternVL3-1B-hf"
DTYPES = ("auto", "bfloat16", "float16", "float32")


def pick_device(device: str | None) -> str:
    """``device`` as given, or ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    """A torch dtype: ``auto`` is bfloat16 on a GPU and float32 on the CPU."""
    import torch

    if dtype not in DTYPES:
        raise UrecaError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def to_hf_conversation(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages in the chat-template form (``{"type": "image", "image": PIL}`` and text parts)."""
    out = []
    for m in messages:
        parts = [
            {"type": "text", "text": p}
            if isinstance(p, str)
            else {"type": "image", "image": p.to_pil() if isinstance(p, EncodedImage) else p}
            for p in m.parts
        ]
        out.append({"role": m.role, "content": parts})
    return out


class HFBackend(ChatBackend):
    """A local transformers chat model; ``model`` is a hub id or a folder."""

    kind = "hf"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        model_obj: Any = None,
        processor: Any = None,
    ):
        if batch_size < 1:
            raise UrecaError(f"--batch-size {batch_size}: needs at least 1")
        self.model = str(model)
        self.concurrency = batch_size
        self.batch_size = batch_size
        self.device = pick_device(device)
        if model_obj is None or processor is None:
            model_obj, processor = self._load(self.model, self.device, pick_dtype(dtype, self.device))
        self._model = model_obj
        self._processor = processor
        tok = getattr(processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="ureca-hf-batcher", daemon=True)
        self._worker.start()

    @staticmethod
    def _load(name: str, device: str, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        check_model_name("--model", name)
        check_safetensors(name)
        try:
            processor = AutoProcessor.from_pretrained(name)
            model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype, use_safetensors=True)
        except UrecaError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, ValueError (no model here), SafetensorError (damaged)
            first = first_line(e)
            how = "" if Path(name).expanduser().is_dir() else (
                "; pass --model DIR, a local copy, or use a server: --backend openai --base-url URL")
            raise UrecaError(f"--model {name}: cannot load it ({first}){how}") from None
        return model.to(device).eval(), processor

    # --------------------------------------------------------------------------------------- batching
    def chat(self, messages: Sequence[Message], settings: GenerationSettings) -> str:
        if self._closed:
            raise BackendError(f"{self.model}: the backend is closed")
        fut: Future = Future()
        self._queue.put((list(messages), settings, fut))
        return fut.result()

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get(timeout=0.005)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            groups: dict[GenerationSettings, list] = {}
            for b in batch:
                groups.setdefault(b[1], []).append(b)
            for settings, jobs in groups.items():
                try:
                    answers = self.generate([j[0] for j in jobs], settings)
                except BaseException as e:  # noqa: BLE001 - handed to every waiting caller
                    for j in jobs:
                        j[2].set_exception(e if isinstance(e, UrecaError) else BackendError(
                            f"{self.model}: generation failed ({type(e).__name__}: {e})"))
                    continue
                for j, a in zip(jobs, answers, strict=True):
                    try:
                        j[2].set_result(clean_answer(a, self.model))
                    except BackendError as e:
                        j[2].set_exception(e)

    def generate(self, conversations: list[list[Message]], settings: GenerationSettings) -> list[str]:
        """One batched ``generate`` over ``conversations``; raw decoded answers (possibly empty)."""
        import inspect

        import torch

        template = self._processor.apply_chat_template
        # newer transformers take processor options in `processor_kwargs`; older ones as keywords
        if "processor_kwargs" in inspect.signature(template).parameters:
            extra: dict[str, Any] = {"processor_kwargs": {"padding": True}}
        else:
            extra = {"padding": True}
        inputs = template(
            [to_hf_conversation(c) for c in conversations],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **extra,
        )
        inputs = inputs.to(self._model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens}
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(do_sample=False)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self._model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        return list(self._processor.batch_decode(new, skip_special_tokens=True))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=60)
