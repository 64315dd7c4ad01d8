"""Tar member references (``TAR#MEMBER@OFFSET:SIZE``) and reading them in place: two ``pread`` calls, the
header checked, open files cached per process. See ``ureca_cli.tars`` for the record form."""

from __future__ import annotations

import io
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

BLOCK = tarfile.BLOCKSIZE  # 512
# magic bytes of the compressors tars come in, and the command that undoes each one, keeping the original
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip --keep"),
    (b"BZh", "bzip2", "bunzip2 --keep"),
    (b"\xfd7zXZ\x00", "xz", "unxz --keep"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
)
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_REF = re.compile(r"(?P<tar>[^#]+)#(?P<member>.+)@(?P<offset>\d+):(?P<size>\d+)", re.DOTALL)


# ------------------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class MemberRef:
    """Where one member's bytes lie: ``tar`` (absolute path), ``member`` (its name in the tar), ``offset``
    (first byte of its header chain) and ``size`` (bytes of data). ``str(ref)`` is the record form."""

    tar: str
    member: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.tar.replace('%', '%25').replace('#', '%23')}#{self.member}@{self.offset}:{self.size}"


def parse_ref(text: Any) -> MemberRef | None:
    """The ``MemberRef`` a record's ``image`` (or ``source``) string holds, or ``None`` for a plain path."""
    m = _REF.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    tar = m["tar"].replace("%23", "#").replace("%25", "%")
    return MemberRef(tar, m["member"], int(m["offset"]), int(m["size"]))


def is_tar_ref(text: Any) -> bool:
    """Whether a record's ``image`` string is a tar reference rather than a file path."""
    return parse_ref(text) is not None


def _as_ref(ref: MemberRef | str, where: str | None) -> MemberRef:
    if isinstance(ref, MemberRef):
        return ref
    parsed = parse_ref(ref)
    if parsed is None:
        raise InputError(f"{ref!r} is not a tar member reference (TAR#MEMBER@OFFSET:SIZE)", source=where)
    return parsed


# ------------------------------------------------------------------------------------------ raw reading
_SEEK_LOCK = threading.Lock()


def _seek_read(fd: int, n: int, offset: int) -> bytes:
    with _SEEK_LOCK:  # no pread (Windows): seek and read under one lock, so threads need not share a position
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


_pread_once = getattr(os, "pread", _seek_read)


def pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file); no file position is used."""
    data = _pread_once(fd, n, offset)
    if len(data) == n or not data:
        return data
    chunks, got = [data], len(data)
    while got < n:  # a read cut short (a signal, a huge size): go on from there
        chunk = _pread_once(fd, n - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Reader:
    """What ``tarfile`` reads headers through: a file over ``fd`` at its own position (no shared file offset),
    serving from ``buf`` (the bytes at ``base``) where it can."""

    def __init__(self, fd: int, pos: int = 0, buf: bytes = b"", base: int = 0):
        self.fd, self.pos, self.buf, self.base = fd, pos, buf, base

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int) -> bytes:
        lo = self.pos - self.base
        if 0 <= lo and lo + n <= len(self.buf):
            out = self.buf[lo : lo + n]
        else:
            out = pread(self.fd, n, self.pos)
        self.pos += len(out)
        return out


class Cursor:
    """The state ``tarfile.TarInfo.fromtarfile`` reads a header chain through (what a ``TarFile`` holds)."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, reader: Reader):
        self.fileobj = reader
        self.offset = 0  # where the next header starts, set by fromtarfile
        self.pax_headers: dict[str, str] = {}  # global pax headers seen so far


def compression(head: bytes) -> tuple[str, str] | None:
    """(compressor, the command that undoes it) of a file starting with ``head``; ``None`` for a plain file."""
    return next(((name, undo) for magic, name, undo in _COMPRESSED if head.startswith(magic)), None)


def norm(name: str) -> str:
    """A member name without leading ``./``."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _plain_header(head: bytes) -> tuple[str, int] | None:
    """``(name, size)`` of a regular file's header block that stands alone (no long-name or pax header before
    it) and whose checksum holds, read as ``tarfile`` reads it; ``None`` for anything else (``tarfile`` then
    decides). Ten times faster than ``TarInfo.frombuf``, which sums the block twice through ``struct``."""
    if len(head) != BLOCK or head[156] not in (0x30, 0) or head[124] & 0x80:  # not '0'/NUL, or a base-256 size
        return None
    try:
        checksum = int(head[148:156].split(b"\0", 1)[0].strip(), 8)
        size = int(head[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    if checksum != sum(head) - sum(head[148:156]) + 8 * 0x20:  # the checksum field counts as eight spaces
        return None
    name = head[:100].split(b"\0", 1)[0]
    prefix = head[345:500].split(b"\0", 1)[0]
    if prefix:  # a ustar name split in two
        name = prefix + b"/" + name
    if head[156] == 0 and name.endswith(b"/"):  # an old-style folder
        return None
    return name.decode("utf-8", "surrogateescape"), size


# ----------------------------------------------------------------------------------- open files, per process
class _Handle:
    __slots__ = ("fd", "key", "users", "retired")

    def __init__(self, fd: int, key: tuple):
        self.fd, self.key, self.users, self.retired = fd, key, 0, False


def _stat_key(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Handles:
    """Open tars by path, least recently used closed past ``capacity``; a handle in use is closed only when
    its last user lets go. Safe across threads; after a fork the child opens its own."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Handle] = OrderedDict()
        self._pid = os.getpid()

    def _retire(self, h: _Handle) -> None:
        h.retired = True
        if h.users == 0:
            os.close(h.fd)

    @contextmanager
    def use(self, path: str, key: tuple) -> Iterator[_Handle]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its copies of the parent's handles are its own to close
                for h in self._open.values():
                    with suppress(OSError):
                        os.close(h.fd)
                self._open.clear()
                self._pid = os.getpid()
            h = self._open.get(path)
            if h is not None and h.key != key:  # replaced or rewritten since it was opened
                del self._open[path]
                self._retire(h)
                h = None
            if h is None:
                fd = os.open(path, OPEN_FLAGS)
                h = _Handle(fd, _stat_key(os.fstat(fd)))
                self._open[path] = h
                while len(self._open) > self.capacity:
                    self._retire(self._open.popitem(last=False)[1])
            else:
                self._open.move_to_end(path)
            h.users += 1
        try:
            yield h
        finally:
            with self._lock:
                h.users -= 1
                if h.retired and h.users == 0:
                    os.close(h.fd)


_HANDLES = _Handles()


# ------------------------------------------------------------------------------------------ reading refs
def read_member(ref: MemberRef | str, where: str | None = None, *, length: int | None = None) -> bytes:
    """The ``size`` bytes of a referenced member (its first ``length`` bytes, where given), after checking that
    the tar still holds that member there.

    ``ref`` is a ``MemberRef`` or its string form; ``where`` names the record that holds it, for messages. Two
    ``pread`` calls: the header block at ``offset`` (checked: checksum, name, size, a regular file), then the
    data. Raises ``InputError`` naming the tar when it is missing, shorter than the reference needs, or no
    longer holds that member at that offset with that size.
    """
    ref = _as_ref(ref, where)
    tar = ref.tar
    try:
        st = os.stat(tar)
    except FileNotFoundError:
        raise InputError(f"tar {tar}: no such file (the record refers to its member {ref.member}; was the tar "
                         "moved or renamed since?)", source=where) from None
    except OSError as e:
        raise InputError(f"tar {tar}: cannot open ({e.strerror})", source=where) from None
    want = ref.offset + BLOCK + ref.size
    n = ref.size if length is None else max(0, min(length, ref.size))
    try:
        with _HANDLES.use(tar, _stat_key(st)) as h:
            if h.key[2] < want:
                raise _changed(h.fd, ref, where, f"the file has {h.key[2]:,} bytes, the member needs {want:,} "
                               "(truncated?)")
            head = pread(h.fd, BLOCK, ref.offset)
            if _plain_header(head) == (ref.member, ref.size):  # the common case, checked without tarfile
                offset_data = ref.offset + BLOCK
            else:  # long names and pax headers: tarfile reads the chain on through the file
                try:
                    info = tarfile.TarInfo.fromtarfile(Cursor(Reader(h.fd, ref.offset, head, ref.offset)))
                except tarfile.HeaderError:
                    raise _changed(h.fd, ref, where, "no tar header starts at that byte") from None
                if norm(info.name) != norm(ref.member) or info.size != ref.size or not info.isreg():
                    raise _changed(h.fd, ref, where, f"that byte now starts {info.name!r} of {info.size:,} bytes")
                offset_data = info.offset_data
            data = pread(h.fd, n, offset_data)
            if len(data) != n:
                raise _changed(h.fd, ref, where, "the file ends inside the member (truncated?)")
            return data
    except OSError as e:
        raise InputError(f"tar {tar}: cannot read ({e.strerror or e})", source=where) from None


def _changed(fd: int, ref: MemberRef, where: str | None, what: str) -> InputError:
    found = compression(pread(fd, 8, 0))
    if found is not None:
        what = f"it is {found[0]}-compressed now, and a compressed tar cannot be read in place"
    return InputError(f"tar {ref.tar} changed since the record was written (member {ref.member!r}, {ref.size:,} "
                      f"bytes at byte {ref.offset:,}): {what}; build the records again from this tar (ureca tree)",
                      source=where)


# ------------------------------------------------------------------------------------------------ images
def open_image(ref: MemberRef | str, where: str | None = None) -> Any:
    """The referenced image member, decoded by Pillow (a loaded ``PIL.Image`` in the file's own mode)."""
    from PIL import Image

    data = read_member(ref, where)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise InputError(f"{ref}: the member does not decode as an image ({type(e).__name__}: {e})",
                         source=where) from None
    return im


def image_size(ref: MemberRef | str, where: str | None = None) -> tuple[int, int]:
    """``(W, H)`` of the referenced image from its header, without decoding the pixels (tree's size check):
    from the member's first 64 KiB, or from all of it where the header lies further in."""
    from PIL import Image

    ref = _as_ref(ref, where)
    data = read_member(ref, where, length=1 << 16)
    while True:
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            if len(data) == ref.size:
                raise InputError(f"{ref}: the member is not an image ({type(e).__name__}: {e})",
                                 source=where) from None
        data = read_member(ref, where)


def load_image(ref: MemberRef | str, where: str | None = None) -> Any:
    """The referenced image as an RGB ``PIL.Image`` (W x H)."""
    im = open_image(ref, where)
    return im if im.mode == "RGB" else im.convert("RGB")
