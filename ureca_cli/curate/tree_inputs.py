"""The input files of ``ureca tree``: paths, folders, globs and ``-``, each file read once.

Every spec names files: a file; a folder (its ``*.json``, sorted); a glob (its sorted matches; ``**`` reaches
any depth); ``-`` (paths read from stdin, one a line). Files are told apart by their resolved path, so a file
named twice, reached through a symlink, or found again through a symlink loop (``d/loop -> d`` makes
``d/**/*.json`` endless for ``glob``) is read once, at the first place the inputs name it. A ``**`` glob is
walked here rather than by ``glob``: a folder is never entered again inside itself, so a loop ends.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import os
from pathlib import Path

from ..errors import InputError
from ..stream import Item, stdin_binary


def _glob_chars(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern`` as ``glob(recursive=True)`` does:
    ``**`` is any number of folders, ``*`` never crosses a ``/``, and hidden names match only a pattern that
    starts with a dot."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        for k in range(len(parts) + 1):
            if k and _hidden(parts[k - 1]):
                break
            if _match(parts[k:], pattern[1:]):
                return True
        return False
    if not parts or (_hidden(parts[0]) and not _hidden(head)):
        return False
    return fnmatch.fnmatch(parts[0], head) and _match(parts[1:], pattern[1:])


def recursive_glob(spec: str) -> list[str]:
    """The sorted matches of a glob with ``**``, as ``glob(recursive=True)`` gives them (symlinks to folders are
    followed), except that a folder is not entered again inside itself: a symlink loop is not gone round."""
    parts = list(Path(spec).parts)
    cut = next(i for i, part in enumerate(parts) if _glob_chars(part))
    root_parts, pattern = parts[:cut], parts[cut:]
    root = os.path.join(*root_parts) if root_parts else os.curdir
    if not os.path.isdir(root):
        return []
    hidden_ok = any(_hidden(p) for p in pattern)
    inside = {root: (os.path.realpath(root),)}  # folder -> the real folders it lies in, itself included
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        rel = [] if folder == root else list(Path(os.path.relpath(folder, root)).parts)
        chain = inside.pop(folder)
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, name))
            if real not in chain and (hidden_ok or not _hidden(name)):
                inside[os.path.join(folder, name)] = (*chain, real)
                keep.append(name)
        dirs[:] = keep
        for name in [*dirs, *files]:
            if _match([*rel, name], pattern):
                found.append(os.path.join(*root_parts, *rel, name))
    return sorted(found)


def input_items(specs: list[str]) -> list[Item]:
    """Input files for the stage, in order, each file once (see the module docstring). A spec that yields
    nothing becomes an item that fails with a message naming it, so ``--on-error skip`` counts it and ``stop``
    stops there."""
    items: list[Item] = []
    seen: set[str] = set()

    def bad(spec: str, message: str) -> None:
        items.append(Item(None, spec, spec.encode(), InputError(message, source=spec)))

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            items.append(Item(path, path, path.encode()))

    def expand(spec: str, listed: bool = False) -> None:
        path = Path(spec)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.json"))
            if not found:
                bad(spec, "directory holds no .json files")
            for p in found:
                add(p)
        elif listed or path.exists() or path.is_symlink():
            add(spec)
        elif _glob_chars(spec):
            found = recursive_glob(spec) if "**" in spec else sorted(globmod.glob(spec))
            if not found:
                bad(spec, "no file matches this pattern")
            for p in found:
                add(p)
        else:
            bad(spec, "no such file or directory")

    for spec in specs:
        if spec != "-":
            expand(spec)
            continue
        listed = [os.fsdecode(line).strip() for line in stdin_binary().read().splitlines()]
        paths = [p for p in listed if p and not p.startswith("#")]
        if not paths:
            bad("<stdin>", "no paths on stdin (expected one SA-1B JSON path a line)")
        for p in paths:
            expand(p, listed=True)
    return items
