"""The input files of ``ureca tree``: paths, folders, globs and ``-``, each file read once.

Every spec names files: a file; a folder (its ``*.json``, or its tar files, sorted; not both); a glob (its sorted
matches; ``**`` reaches any depth); ``-`` (paths read from stdin, one a line). Files are told apart by their
resolved path, so a file named twice, reached through a symlink, or found again through a symlink loop
(``d/loop -> d`` makes ``d/**/*.json`` endless for ``glob``) is read once, at the first place the inputs name
it. A ``**`` glob is walked here rather than by ``glob``: a folder is never entered again inside itself, so a
loop ends.

A tar file (``*.tar``; SA-1B's shards) stands for its JSON members in archive order: ``member_items`` reads its
member headers (``tars.index_tar``) when the run reaches it, and makes one item per JSON member (its value a
picklable ``tars.TarJson``: the member and its image; its key the member's reference, what the record's
``source`` holds). A compressed tar (``.tar.gz``, ...) or a tar cut short is one failed item naming it. A JSON
member's reference given as a spec (what ``--failed`` writes for it) is that one member.
"""

from __future__ import annotations

import fnmatch
import glob as globmod
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..stream import Item, stdin_binary
from ..tars import MemberRef, TarIndex, TarJson, index_tar, is_tar_name, parse_ref


@dataclass(frozen=True)
class TarShard:
    """A tar file among the inputs (absolute path), expanded into its JSON members by ``member_items``."""

    path: str


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


def expand_specs(specs: list[str], *, folder: Callable[[Path], tuple[list[str], str | None]],
                 keep: Callable[[str], bool] = lambda path: True, named: Callable[[str], bool] = lambda spec: False,
                 listed_what: str = "one path a line", no_match: str = "no file matches this pattern",
                 ) -> Iterator[tuple[str, str | None, str | None]]:
    """What the command line's specs name, in order, as ``(spec, path, None)`` for each file or
    ``(spec, None, message)`` for a spec that yields nothing (the caller turns it into a failed item).

    ``folder(path)`` -> (the files a folder stands for, or a message why none); ``keep(path)``: which glob matches
    count (``no_match``: the message for a glob none of whose matches counts); ``named(spec)``: a spec taken as
    it is though no such file exists (a tar member's reference). A file given on its own, or listed on stdin
    (``-``), is taken whatever its name. A ``**`` glob is walked by ``recursive_glob``, so a symlink loop ends. Files are not told apart here: the caller keeps each once."""
    def expand(spec: str, listed: bool = False) -> Iterator[tuple[str, str | None, str | None]]:
        path = Path(spec)
        if path.is_dir():
            found, why = folder(path)
            if not found:
                yield spec, None, why
            for p in found:
                yield spec, p, None
        elif listed or path.exists() or path.is_symlink() or named(spec):
            yield spec, spec, None
        elif _glob_chars(spec):
            found = [p for p in (recursive_glob(spec) if "**" in spec else sorted(globmod.glob(spec))) if keep(p)]
            if not found:
                yield spec, None, no_match
            for p in found:
                yield spec, p, None
        else:
            yield spec, None, "no such file or directory"

    for spec in specs:
        if spec != "-":
            yield from expand(spec)
            continue
        listed = [os.fsdecode(line).strip() for line in stdin_binary().read().splitlines()]
        paths = [p for p in listed if p and not p.startswith("#")]
        if not paths:
            yield "<stdin>", None, f"no paths on stdin (expected {listed_what})"
        for p in paths:
            yield from expand(p, listed=True)


def failed_item(spec: str, message: str) -> Item:
    """An input item that fails with ``message`` naming ``spec`` (``--on-error skip`` counts it)."""
    return Item(None, spec, spec.encode(), InputError(message, source=spec))


def _tree_folder(path: Path) -> tuple[list[str], str | None]:
    found = sorted(str(p) for p in path.glob("*.json"))
    shards = sorted(str(p) for p in path.iterdir() if is_tar_name(p.name) and p.is_file())
    if found and shards:  # a tar extracted beside itself: each image would come twice
        return [], (f"directory holds both .json files and tar files ({Path(shards[0]).name}); name the ones to "
                    f"read: '{path / '*.json'}' or '{path / '*.tar'}'")
    return found or shards, "directory holds no .json files (nor tar shards)"


def input_items(specs: list[str]) -> list[Item]:
    """Input files for the stage, in order, each file once (see the module docstring). A spec that yields
    nothing becomes an item that fails with a message naming it, so ``--on-error skip`` counts it and ``stop``
    stops there."""
    items: list[Item] = []
    seen: set[str] = set()
    for spec, path, why in expand_specs(specs, folder=_tree_folder, named=lambda s: parse_ref(s) is not None,
                                        listed_what="one SA-1B JSON path a line"):
        if path is None:
            items.append(failed_item(spec, why or "nothing to read"))
            continue
        ref = parse_ref(path) if not os.path.lexists(path) else None  # a tar's JSON member, by its reference
        real = str(ref) if ref is not None else os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        if ref is not None:
            items.append(Item(ref, path, path.encode()))
        elif is_tar_name(path) and not os.path.isdir(path):
            items.append(Item(TarShard(os.path.abspath(path)), path, path.encode()))
        else:
            items.append(Item(path, path, path.encode()))
    return items


def tar_count(items: list[Item]) -> int:
    """How many of ``input_items``' items are tars or tar members (whose JSON members are only counted when
    the run reaches them)."""
    return sum(isinstance(item.value, TarShard | MemberRef) for item in items)


def member_items(items: Iterable[Item]) -> Iterator[Item]:
    """``input_items``' items with every tar replaced by one item per JSON member (archive order, headers read
    when it is reached) and every member reference by its member's item; a tar that cannot be read in place
    (compressed, cut short, not a tar) or holds no JSON member is one failed item naming it."""
    last: TarIndex | None = None  # the index of the tar of the last member reference: refs come grouped by tar

    for item in items:
        value = item.value
        if isinstance(value, TarShard):
            try:
                members = index_tar(item.where).json_members()
                if not members:
                    raise InputError("the tar holds no .json member (an SA-1B shard holds sa_N.json beside each "
                                     "sa_N.jpg)", source=item.where)
            except InputError as e:
                yield Item(None, item.where, item.raw, e)
                continue
            for member in members:
                ref = str(member.json)
                yield Item(member, ref, ref.encode())
        elif isinstance(value, MemberRef):
            try:
                if last is None or last.path != os.path.abspath(value.tar):
                    last = index_tar(value.tar)
                found = last.find(value.member)
                if found is None or (found.offset, found.size) != (value.offset, value.size):
                    raise InputError(f"tar {value.tar} holds no member {value.member!r} of {value.size:,} bytes at "
                                     f"byte {value.offset:,} (changed since the reference was written?)",
                                     source=item.where)
                image = last.image_for(found.name)
                yield Item(TarJson(value, last.ref(image) if image is not None else None), item.where, item.raw)
            except InputError as e:
                yield Item(None, item.where, item.raw, e)
        else:
            yield item


def unchanged_members(items: Iterable[Item], written: dict[tuple[str, str], str], output: Any) -> Iterator[Item]:
    """``items``, with a tar JSON member that ``--resume`` found in ``output`` under another offset or size (the
    tar changed since those records were written: their image references no longer hold) failing, naming the
    tar. ``written``: ``(tar, member) -> reference`` of the records read back, filled before the first item."""
    for item in items:
        value = item.value
        if isinstance(value, TarJson):
            old = written.get((value.json.tar, value.json.member))
            if old is not None and old != str(value.json):
                was = parse_ref(old)
                why = (f"tar {value.json.tar} changed since {output} was written: its member {value.json.member!r} "
                       f"is now {value.json.size:,} bytes at byte {value.json.offset:,}, the record there says "
                       f"{was.size:,} bytes at byte {was.offset:,}; build this tar's trees again into a new -o "
                       "file (the records written from it refer to the tar as it was)")
                item = Item(None, item.where, item.raw, InputError(why, source=item.where))
        yield item
