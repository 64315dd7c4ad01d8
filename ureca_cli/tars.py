"""SA-1B tar shards read in place: an index of member headers, JSON members in order, and image references.

SA-1B is distributed as plain (uncompressed) tars of about 10 GB, each holding about 11,000 ``sa_N.jpg`` with
their ``sa_N.json`` mask files. Nothing here extracts or rewrites a tar:

- ``index_tar(path)`` reads the member headers only (one 512-byte read per header, seeking over the data;
  GNU long names, pax headers and ustar prefixes are read by the stdlib's ``tarfile.TarInfo.fromtarfile``);
- ``iter_json_members(path)`` yields the tar's JSON members in archive order with their bytes and a
  reference to the image member of the same stem (``sa_1.json`` -> ``sa_1.jpg``, same folder in the tar);
- ``read_member(ref)`` / ``open_image(ref)`` open a reference later, in any process, with one ``pread`` and
  without scanning the tar again.

Image reference (the form written into records' ``image`` field; ``MemberRef.__str__`` / ``parse_ref``)::

    /abs/path/sa_000000.tar#sa_1.jpg@1024:234567
    <tar, absolute>        #<member> @<offset>:<size>

``offset`` is the byte at which the member's first header block starts (``TarInfo.offset``; for a plain
member its data follows at ``offset + 512``), ``size`` the member's data length in bytes. In the tar path, ``%``
and ``#`` are written ``%25`` and ``%23``; the member name is kept as stored (it runs from the first ``#`` to
the last ``@``). A string of this shape is read as a tar reference by every stage; any other string is a file
path. The reference lives in the one ``image`` string, so every stage that copies ``image`` (region records,
exports, training samples) carries it unchanged.

Opening a reference reads the header block at ``offset`` and then the ``size`` bytes of data, one ``pread``
each; the header chain is parsed again and must name the same member with the same size and a valid
checksum: a tar that moved, was cut short or changed since the record was written is one
``InputError`` naming the tar. Open files are kept in a small per-process cache (``pread`` needs no lock, so
threads share them); a tar replaced on disk is noticed by its ``stat`` and reopened.
"""

from __future__ import annotations

import glob as globmod
import io
import os
import re
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, UrecaError

BLOCK = tarfile.BLOCKSIZE  # 512
TAR_SUFFIXES = (".tar",)
COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst",
                       ".tar.lz4")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
# magic bytes of the compressors tars come in, and the command that undoes each one, keeping the original
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip --keep"),
    (b"BZh", "bzip2", "bunzip2 --keep"),
    (b"\xfd7zXZ\x00", "xz", "unxz --keep"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
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


def parse_ref(text: str) -> MemberRef | None:
    """The ``MemberRef`` a record's ``image`` (or ``source``) string holds, or ``None`` for a plain path."""
    m = _REF.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    tar = m["tar"].replace("%23", "#").replace("%25", "%")
    return MemberRef(tar, m["member"], int(m["offset"]), int(m["size"]))


def is_tar_ref(text: Any) -> bool:
    """Whether a record's ``image`` string is a tar reference rather than a file path."""
    return parse_ref(text) is not None


# ------------------------------------------------------------------------------------------ raw reading
_SEEK_LOCK = threading.Lock()


def _pread_once(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    with _SEEK_LOCK:  # no pread (Windows): seek and read under one lock, so threads need not share a position
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, n)


def _pread(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file); no file position is used."""
    chunks, got = [], 0
    while got < n:
        chunk = _pread_once(fd, n - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Reader:
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
            out = _pread(self.fd, n, self.pos)
        self.pos += len(out)
        return out


class _Cursor:
    """The state ``tarfile.TarInfo.fromtarfile`` reads a header chain through (what a ``TarFile`` holds)."""

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, reader: _Reader):
        self.fileobj = reader
        self.offset = 0  # where the next header starts, set by fromtarfile
        self.pax_headers: dict[str, str] = {}  # global pax headers seen so far


def _compression(head: bytes) -> tuple[str, str] | None:
    for magic, name, undo in _COMPRESSED:
        if head.startswith(magic):
            return name, undo
    return None


def _refuse_compressed(path: str, head: bytes) -> None:
    found = _compression(head)
    if found is not None:
        name, undo = found
        raise InputError(f"is {name}-compressed: a compressed tar cannot be read in place; decompress it once "
                         f"({undo} {path}) and give the .tar, or extract it and give the folder", source=path)


# ---------------------------------------------------------------------------------------------- the index
@dataclass(frozen=True)
class Member:
    """One regular file in a tar: its name, the first byte of its header chain, of its data, and its size."""

    name: str
    offset: int
    offset_data: int
    size: int


@dataclass(frozen=True)
class TarJson:
    """A JSON member and the image member of the same stem (``None`` where the tar has none)."""

    json: MemberRef
    image: MemberRef | None


@dataclass
class TarIndex:
    """The regular files of one tar, in archive order (a name stored twice: its last copy, as extraction)."""

    path: str  # absolute
    size: int  # bytes of the file when indexed
    members: list[Member]

    def __post_init__(self):
        self.by_name = {_norm(m.name): m for m in self.members}
        self.members = [m for m in self.members if self.by_name[_norm(m.name)] is m]

    def ref(self, member: Member) -> MemberRef:
        return MemberRef(self.path, member.name, member.offset, member.size)

    def find(self, name: str) -> Member | None:
        """The member stored under ``name`` (``./`` prefixes ignored)."""
        return self.by_name.get(_norm(name))

    def image_for(self, json_name: str, file_name: str | None = None) -> Member | None:
        """The image of a JSON member: ``file_name`` in the JSON's folder where given, else the same stem with
        ``.jpg``, ``.jpeg`` or ``.png`` (either case)."""
        folder, _, base = _norm(json_name).rpartition("/")
        prefix = f"{folder}/" if folder else ""
        if file_name:
            return self.find(prefix + file_name)
        stem = base.rsplit(".", 1)[0]
        for suffix in IMAGE_SUFFIXES:
            found = self.find(prefix + stem + suffix)
            if found is not None:
                return found
        return None

    def json_members(self) -> list[TarJson]:
        """Every ``*.json`` member in archive order, each with a reference to its image (or ``None``)."""
        out = []
        for m in self.members:
            if m.name.lower().endswith(".json"):
                image = self.image_for(m.name)
                out.append(TarJson(self.ref(m), self.ref(image) if image is not None else None))
        return out


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def index_tar(path: str | Path) -> TarIndex:
    """Index a plain tar by reading its member headers only.

    Raises ``InputError`` naming the file for a compressed tar (with the command that decompresses it), a file
    that is not a tar, a header that does not check out, and a tar cut short (a member's data past the end of
    the file, or no end-of-archive block after the last member).
    """
    where = str(path)
    apath = os.path.abspath(path)
    try:
        fd = os.open(apath, _OPEN_FLAGS)
    except FileNotFoundError:
        raise InputError("no such file", source=where) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a tar file", source=where) from None
    except OSError as e:
        raise InputError(f"cannot open ({e.strerror})", source=where) from None
    try:
        size = os.fstat(fd).st_size
        if os.path.isdir(apath):
            raise InputError("is a directory, expected a tar file", source=where)
        _refuse_compressed(where, _pread(fd, 8, 0))
        return TarIndex(apath, size, list(_walk_headers(fd, size, where)))
    finally:
        os.close(fd)


def _walk_headers(fd: int, size: int, where: str) -> Iterator[Member]:
    cursor = _Cursor(_Reader(fd))
    pos, last = 0, None
    while True:
        cursor.fileobj.seek(pos)
        try:
            info = tarfile.TarInfo.fromtarfile(cursor)
        except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
            return
        except tarfile.EmptyHeaderError:
            if pos == 0:
                raise InputError("is empty, not a tar file", source=where) from None
            raise InputError(f"is truncated: it ends at byte {size} after member {last!r}, without the "
                             "end-of-archive block (an interrupted copy?)", source=where) from None
        except tarfile.TruncatedHeaderError:
            if pos == 0:
                raise InputError("is not a tar file (shorter than one tar header)", source=where) from None
            raise InputError(f"is truncated: the file ends inside the header at byte {pos}", source=where) from None
        except tarfile.HeaderError as e:
            if pos == 0:
                raise InputError("is not a tar file (no tar header at its start)", source=where) from None
            raise InputError(f"has a corrupt header at byte {pos} after member {last!r} ({e})", source=where) from None
        end = info.offset_data + (info.size if info.isreg() else 0)
        if end > size:
            raise InputError(f"is truncated: member {info.name!r} needs bytes up to {end:,} but the file has "
                             f"{size:,} (an interrupted copy?)", source=where)
        if info.isreg() and not info.issparse():
            yield Member(info.name, info.offset, info.offset_data, info.size)
        last, pos = info.name, cursor.offset


def iter_json_members(path: str | Path) -> Iterator[tuple[TarJson, bytes]]:
    """The JSON members of one tar in archive order: each with its image reference and its bytes (read in
    order through one open file; nothing is extracted)."""
    index = index_tar(path)
    for item in index.json_members():
        yield item, read_member(item.json)


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
                    os.close(h.fd)
                self._open.clear()
                self._pid = os.getpid()
            h = self._open.get(path)
            if h is not None and h.key != key:  # replaced or rewritten since it was opened
                del self._open[path]
                self._retire(h)
                h = None
            if h is None:
                fd = os.open(path, _OPEN_FLAGS)
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

    def close_all(self) -> None:
        with self._lock:
            for h in self._open.values():
                self._retire(h)
            self._open.clear()


_HANDLES = _Handles()


def close_tars() -> None:
    """Close the tars this process holds open (they reopen on the next read)."""
    _HANDLES.close_all()


# ------------------------------------------------------------------------------------------ reading refs
def read_member(ref: MemberRef | str, where: str | None = None, *, length: int | None = None) -> bytes:
    """The ``size`` bytes of a referenced member (its first ``length`` bytes, where given), after checking that
    the tar still holds that member there.

    ``ref`` is a ``MemberRef`` or its string form; ``where`` names the record that holds it, for messages. Two
    ``pread`` calls: the header block at ``offset`` (checked: checksum, name, size, a regular file), then the
    data. Raises ``InputError`` naming the tar when it is missing, shorter than the reference needs, or no
    longer holds that member at that offset with that size.
    """
    if isinstance(ref, str):
        parsed = parse_ref(ref)
        if parsed is None:
            raise InputError(f"{ref!r} is not a tar member reference (TAR#MEMBER@OFFSET:SIZE)", source=where)
        ref = parsed
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
            head = _pread(h.fd, BLOCK, ref.offset)
            if _plain_header(head) == (ref.member, ref.size):  # the common case, checked without tarfile
                offset_data = ref.offset + BLOCK
            else:  # long names and pax headers: tarfile reads the chain on through the file
                try:
                    info = tarfile.TarInfo.fromtarfile(_Cursor(_Reader(h.fd, ref.offset, head, ref.offset)))
                except tarfile.HeaderError:
                    raise _changed(h.fd, ref, where, "no tar header starts at that byte") from None
                if _norm(info.name) != _norm(ref.member) or info.size != ref.size or not info.isreg():
                    raise _changed(h.fd, ref, where, f"that byte now starts {info.name!r} of {info.size:,} bytes")
                offset_data = info.offset_data
            data = _pread(h.fd, n, offset_data)
            if len(data) != n:
                raise _changed(h.fd, ref, where, "the file ends inside the member (truncated?)")
            return data
    except OSError as e:
        raise InputError(f"tar {tar}: cannot read ({e.strerror or e})", source=where) from None


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


def _changed(fd: int, ref: MemberRef, where: str | None, what: str) -> InputError:
    found = _compression(_pread(fd, 8, 0))
    if found is not None:
        what = f"it is {found[0]}-compressed now, and a compressed tar cannot be read in place"
    return InputError(f"tar {ref.tar} changed since the record was written (member {ref.member!r}, {ref.size:,} "
                      f"bytes at byte {ref.offset:,}): {what}; build the records again from this tar (ureca tree)",
                      source=where)


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
    the member's first 64 KiB, or all of it where the header lies further in."""
    from PIL import Image

    for length in (65536, None):
        data = read_member(ref, where, length=length)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a bad file
            if length is None or len(data) < length:
                raise InputError(f"{ref}: the member is not an image ({type(e).__name__}: {e})",
                                 source=where) from None
    raise AssertionError("unreachable")


def load_image(ref: MemberRef | str, where: str | None = None) -> Any:
    """The referenced image as an RGB ``PIL.Image`` (W x H)."""
    im = open_image(ref, where)
    return im if im.mode == "RGB" else im.convert("RGB")


# ------------------------------------------------------------------------------------------------ inputs
def is_tar_name(path: str | Path) -> bool:
    """Whether a file name reads as a tar, plain (``.tar``) or compressed (``.tar.gz``, ``.tgz``, ...)."""
    name = str(path).lower()
    return name.endswith(TAR_SUFFIXES) or name.endswith(COMPRESSED_SUFFIXES)


def expand_tars(specs: Iterable[str | Path]) -> list[str]:
    """Tar files from the command line, each once, in a fixed order: a file as given; a folder, its tar files
    (``*.tar`` and compressed ones, which ``index_tar`` then refuses with a clear line) sorted by name; a glob,
    its matches sorted. A tar reached twice (also through a symlink) is kept at its first place. Returns
    absolute paths (symlinks kept as given). A spec that finds nothing raises ``UrecaError`` naming it."""
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(os.path.abspath(p))

    def folder(spec: str, p: Path) -> None:
        found = sorted(str(c) for c in p.iterdir() if is_tar_name(c.name) and c.is_file())
        if not found:
            raise UrecaError(f"{spec}: the folder holds no .tar files")
        for f in found:
            add(f)

    for spec in map(str, specs):
        p = Path(spec)
        if p.is_dir():
            folder(spec, p)
        elif p.is_file():
            add(spec)
        elif any(ch in spec for ch in "*?["):
            found = sorted(globmod.glob(spec, recursive=True))
            files = [f for f in found if os.path.isfile(f)]
            if not files:
                raise UrecaError(f"{spec}: no file matches this pattern")
            for f in files:
                add(f)
        else:
            raise UrecaError(f"{spec}: no such file or folder")
    return out
