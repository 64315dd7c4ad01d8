"""Pickled weights planted in a model folder, to show that ureca neither unpickles nor even opens them.

``plant_pickle(folder, name)`` replaces the folder's safetensors weights with ``name``, a pickle that creates
``folder/UNPICKLED`` when it is unpickled (``pickle.load``, or ``torch.load(weights_only=False)``; torch's
weights-only loader refuses it, after opening and parsing it). ``never_opened(path)`` watches every ``open`` in
this process (a ``sys.addaudithook`` hook, installed once and idle when nothing is watched) and fails when the
file was opened inside the ``with`` block.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

_WATCHED: set[str] = set()
_OPENED: list[str] = []
_INSTALLED = False


def _hook(event: str, args: tuple) -> None:
    if event != "open" or not _WATCHED or not args:
        return
    path = args[0]
    if isinstance(path, str | bytes | os.PathLike):
        name = os.path.abspath(os.fsdecode(path))
        if name in _WATCHED:
            _OPENED.append(name)


@contextlib.contextmanager
def never_opened(*paths: Path) -> Iterator[None]:
    """Fail (``AssertionError``) when any of ``paths`` is opened in this process inside the block."""
    global _INSTALLED
    if not _INSTALLED:
        sys.addaudithook(_hook)
        _INSTALLED = True
    names = {os.path.abspath(p) for p in paths}
    _WATCHED.update(names)
    try:
        yield
    finally:
        _WATCHED.difference_update(names)
    opened = sorted({n for n in _OPENED if n in names})
    _OPENED[:] = [n for n in _OPENED if n not in names]
    assert not opened, f"opened: {opened}"


def plant_pickle(folder: Path, name: str = "pytorch_model.bin") -> Path:
    """Replace ``folder``'s ``*.safetensors`` (and index) with the pickle ``folder/name``; returns its path.
    Unpickling it creates ``folder/UNPICKLED``."""
    for p in list(folder.iterdir()):
        if p.name.endswith((".safetensors", ".safetensors.index.json")):
            p.unlink()
    sentinel = folder / "UNPICKLED"

    class Boom:  # unpickling this creates the sentinel file
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    path = folder / name
    path.write_bytes(pickle.dumps({"weight": Boom()}))
    return path
