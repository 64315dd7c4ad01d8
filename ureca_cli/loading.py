"""Helpers for loading transformers models quietly and safely, shared by the model, SAM, chat backends and stages.

ureca loads weights from safetensors only and never unpickles a file: every ``from_pretrained`` passes
``use_safetensors=True`` (on the hub, a repository with pickles only is then refused by transformers), and a
local folder is looked at first (``check_safetensors``), so one holding only pickled weights
(``pytorch_model.bin``, ``adapter_model.bin``, ...) is one clear error that says how to convert it, and the
pickle is never even opened. ``quiet_progress`` turns progress bars off and ``quiet_peft`` the deprecation
warning peft's wrapping triggers.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UrecaError


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PICKLE_INDEX_SUFFIX = ".bin.index.json"  # the index of sharded pytorch_model-*.bin files
#: how to turn a pickled model into one ureca loads (run once, where the file's source is trusted)
CONVERT_HOW = ("load it once where you trust its source and save it with save_pretrained, which writes "
               "safetensors (transformers: Auto*.from_pretrained(DIR).save_pretrained(NEW); a LoRA adapter: "
               "PeftModel.from_pretrained(base, DIR).save_pretrained(NEW))")


class quiet_progress:  # noqa: N801 - used as a context manager, like contextlib's lower-case names
    """transformers' progress bars (loading or writing weights) off inside a ``with``; restored after."""

    def __enter__(self):
        from transformers.utils import logging

        self._was = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        if self._was:
            logging.enable_progress_bar()


def pickle_files(folder: str | Path) -> list[str]:
    """Names of the pickled weight files (and pickle shard indexes) directly in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES + (PICKLE_INDEX_SUFFIX,)))


def refuse_pickle(path: str | Path) -> UrecaError:
    """The error for a pickled checkpoint at ``path``: what it is, that it is never loaded, how to convert it."""
    return UrecaError(f"{path}: a pickle checkpoint; ureca loads safetensors only and never unpickles a file "
                      f"({CONVERT_HOW})")


def check_safetensors(folder: str | Path, *, stem: str = "model") -> None:
    """Refuse a local model folder whose weights are pickles only, before anything in it is opened.

    A folder passes when it holds a ``*.safetensors`` file or a safetensors index, or no pickled weights (the
    loader then says what is missing; other pickles such as a Trainer's ``optimizer.pt`` are not weights); a name
    that is not a local folder (a hub id) is left to ``from_pretrained(use_safetensors=True)``. Pickled weights
    are the pickle files whose name holds ``stem`` (``model``: ``pytorch_model.bin`` and its shards;
    ``adapter_model``)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return
    names = [p.name for p in folder.iterdir()]
    if any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
        return
    weights = [n for n in pickle_files(folder) if stem in n]  # pytorch_model.bin, adapter_model.bin, shards
    if weights:
        raise refuse_pickle(folder / weights[0])


class quiet_peft:  # noqa: N801 - a context manager, like quiet_progress
    """peft's ``PeftModel`` reads the base's ``is_gradient_checkpointing`` when it wraps it (``get_peft_model``,
    ``PeftModel.from_pretrained``), which transformers 5 deprecates with a FutureWarning on every read: that one
    warning off inside a ``with`` (every other warning still shows)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
