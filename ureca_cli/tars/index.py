"""A plain tar's members from their headers alone, its JSON members paired with their images, and which file
names read as tars."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .refs import OPEN_FLAGS, Cursor, MemberRef, Reader, compression, norm, pread

TAR_SUFFIXES = (".tar",)
COMPRESSED_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst",
                       ".tar.lz4")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


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
        self.by_name = {norm(m.name): m for m in self.members}
        self.members = [m for m in self.members if self.by_name[norm(m.name)] is m]

    def ref(self, member: Member) -> MemberRef:
        return MemberRef(self.path, member.name, member.offset, member.size)

    def find(self, name: str) -> Member | None:  # ``./`` prefixes ignored
        return self.by_name.get(norm(name))

    def image_for(self, json_name: str, file_name: str | None = None) -> Member | None:
        """The image of a JSON member: ``file_name`` in the JSON's folder where given, else the same stem with
        ``.jpg``, ``.jpeg`` or ``.png`` (either case)."""
        folder, _, base = norm(json_name).rpartition("/")
        prefix = f"{folder}/" if folder else ""
        if file_name:
            return self.find(prefix + file_name)
        stem = base.rsplit(".", 1)[0]
        return next((m for sfx in IMAGE_SUFFIXES if (m := self.find(prefix + stem + sfx)) is not None), None)

    def json_members(self) -> list[TarJson]:
        """Every ``*.json`` member in archive order, each with a reference to its image (or ``None``)."""
        out = []
        for m in self.members:
            if m.name.lower().endswith(".json"):
                image = self.image_for(m.name)
                out.append(TarJson(self.ref(m), self.ref(image) if image is not None else None))
        return out


def index_tar(path: str | Path) -> TarIndex:
    """Index a plain tar by reading its member headers only.

    Raises ``InputError`` naming the file for a compressed tar (with the command that decompresses it), a file
    that is not a tar, a header that does not check out, and a tar cut short (a member's data past the end of
    the file, or no end-of-archive block after the last member).
    """
    where = str(path)
    apath = os.path.abspath(path)
    try:
        fd = os.open(apath, OPEN_FLAGS)
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
        if (found := compression(pread(fd, 8, 0))) is not None:
            name, undo = found
            raise InputError(f"is {name}-compressed: a compressed tar cannot be read in place; decompress it "
                             f"once ({undo} {where}) and give the .tar, or extract it and give the folder",
                             source=where)
        return TarIndex(apath, size, list(_walk_headers(fd, size, where)))
    finally:
        os.close(fd)


def _walk_headers(fd: int, size: int, where: str) -> Iterator[Member]:
    cursor = Cursor(Reader(fd))
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


# ------------------------------------------------------------------------------------------------ inputs
def is_tar_name(path: str | Path) -> bool:
    """Whether a file name reads as a tar, plain (``.tar``) or compressed (``.tar.gz``, ``.tgz``, ...)."""
    name = str(path).lower()
    return name.endswith(TAR_SUFFIXES) or name.endswith(COMPRESSED_SUFFIXES)
