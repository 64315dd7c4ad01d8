"""SA-1B tar shards read in place: an index of member headers, JSON members in order, and image references.

``index.py`` reads the headers and pairs JSON members with their images; ``refs.py`` reads references.

SA-1B is distributed as plain (uncompressed) tars of about 10 GB, each holding about 11,000 ``sa_N.jpg`` with
their ``sa_N.json`` mask files. Nothing here extracts or rewrites a tar:

- ``index_tar(path)`` reads the member headers only (one 512-byte read per header, seeking over the data;
  GNU long names, pax headers and ustar prefixes are read by the stdlib's ``tarfile.TarInfo.fromtarfile``);
- ``index_tar(path).json_members()`` gives the tar's JSON members in archive order, each with a reference to
  the image member of the same stem (``sa_1.json`` -> ``sa_1.jpg``, same folder in the tar);
- ``read_member(ref)`` / ``open_image(ref)`` / ``image_size(ref)`` open a reference later, in any process,
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

Opening a reference reads the header block at ``offset``, then the ``size`` bytes of data (one ``pread``
each); the header must hold a valid checksum and name the same member with the same size, so a tar that
moved, was cut short or changed since the record was written is one ``InputError`` naming the tar. Open
files are kept in a small per-process cache (``pread`` needs no lock, so threads share them); a tar replaced
on disk is noticed by its ``stat`` and reopened.
"""

from .index import (
    COMPRESSED_SUFFIXES,
    IMAGE_SUFFIXES,
    TAR_SUFFIXES,
    Member,
    TarIndex,
    TarJson,
    index_tar,
    is_tar_name,
)
from .refs import (
    MemberRef,
    image_size,
    is_tar_ref,
    load_image,
    open_image,
    parse_ref,
    read_member,
)

__all__ = [
    "COMPRESSED_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TAR_SUFFIXES",
    "Member",
    "MemberRef",
    "TarIndex",
    "TarJson",
    "image_size",
    "index_tar",
    "is_tar_name",
    "is_tar_ref",
    "load_image",
    "open_image",
    "parse_ref",
    "read_member",
]
