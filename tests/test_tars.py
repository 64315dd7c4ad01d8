"""SA-1B tar shards read in place: the header index, JSON members in order, image references and their checks."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA
from tests.tree_fixtures import blob_file
from ureca_cli import tars
from ureca_cli.errors import InputError, UrecaError

LONG = "sa_000000/" + "d" * 70 + "/" + "e" * 60  # a folder past the 100-byte ustar name field


def sa1b_pairs(folder_factory, shared_count: int, generated_count: int) -> list[tuple[Path, Path]]:
    """(json, jpg) pairs in SA-1B naming: the first ``shared_count`` shared conformance files where present,
    else ``generated_count`` generated ones (nested blobs, JPEG) in a folder from ``folder_factory()``."""
    shared = SHARED_DATA / "trees"
    if shared.is_dir():
        return [(shared / f"sa_90000{k}.json", shared / f"sa_90000{k}.jpg") for k in range(shared_count)]
    folder = folder_factory()
    pairs = []
    for k in range(generated_count):
        path = blob_file(folder, f"sa_{k + 1}", h=90, w=120, objects=2, seed=k, image_id=k + 1)
        Image.open(path.with_suffix(".png")).convert("RGB").save(path.with_suffix(".jpg"), quality=90)
        doc = orjson.loads(path.read_bytes())
        doc["image"]["file_name"] = f"sa_{k + 1}.jpg"
        path.write_bytes(orjson.dumps(doc))
        pairs.append((path, path.with_suffix(".jpg")))
    return pairs


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Five shared conformance files where present, else three generated ones."""
    return sa1b_pairs(lambda: tmp_path_factory.mktemp("sa1b"), 5, 3)


def make_tar(path: Path, members: list[tuple[str, Path | bytes]], fmt: int = tarfile.GNU_FORMAT) -> Path:
    """A plain tar of ``(name, file or bytes)`` members, in that order; a name ending in ``/`` is a folder."""
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, src in members:
            data = src.read_bytes() if isinstance(src, Path) else src
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            if name.endswith("/"):
                info.type, info.size = tarfile.DIRTYPE, 0
            tf.addfile(info, io.BytesIO(data))
    return path


def sa1b_members(pairs, folder: str = "") -> list[tuple[str, Path]]:
    """SA-1B's member order: each image, then its JSON."""
    out = []
    for js, jpg in pairs:
        out += [(folder + jpg.name, jpg), (folder + js.name, js)]
    return out


def stdlib_view(path: Path) -> list[tuple]:
    with tarfile.open(path) as tf:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tf.getmembers() if m.isreg()]


def pixels(im) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------------------------- index
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["gnu", "pax", "ustar"])
def test_index_reads_headers_as_tarfile_does_long_names_included(tmp_path, sa1b, fmt):
    members = sa1b_members(sa1b[:2]) + sa1b_members(sa1b[2:3], folder=LONG + "/")
    if fmt == tarfile.PAX_FORMAT:  # a non-ASCII name needs a pax header
        members += [("ünï/" + sa1b[0][1].name, sa1b[0][1]), ("ünï/" + sa1b[0][0].name, sa1b[0][0])]
    path = make_tar(tmp_path / "shard.tar", members, fmt)
    index = tars.index_tar(path)
    assert index.path == os.path.abspath(path)
    assert [(m.name, m.offset, m.offset_data, m.size) for m in index.members] == stdlib_view(path)
    assert [m.name for m in index.members] == [name for name, _ in members]
    for item in index.json_members():  # every member, long names included, reads back its own bytes
        src = dict(members)[item.json.member]
        assert tars.read_member(item.json) == src.read_bytes()
        assert tars.read_member(str(item.image)) == src.with_suffix(".jpg").read_bytes()


def test_a_tar_written_by_gnu_tar_with_dot_prefixes(tmp_path, sa1b):
    if shutil.which("tar") is None:
        pytest.skip("no tar command")
    src = tmp_path / "src"
    (src / ("f" * 90) / ("g" * 40)).mkdir(parents=True)  # a long folder name (GNU long-name header)
    for js, jpg in sa1b[:2]:
        shutil.copy(js, src)
        shutil.copy(jpg, src)
    deep = src / ("f" * 90) / ("g" * 40)
    shutil.copy(sa1b[2][0], deep)
    shutil.copy(sa1b[2][1], deep)
    path = tmp_path / "cli.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(path), "-C", str(src), "."], check=True)
    index = tars.index_tar(path)
    assert [(m.name, m.offset, m.offset_data, m.size) for m in index.members] == stdlib_view(path)
    items = index.json_members()
    assert len(items) == 3 and all(item.json.member.startswith("./") for item in items)
    for item in items:
        rel = item.image.member[2:]
        assert np.array_equal(pixels(tars.open_image(item.image)), pixels(Image.open(src / rel)))


# ---------------------------------------------------------------------------------------- JSON members
def test_json_members_come_in_archive_order_with_their_images(tmp_path, sa1b):
    shuffled = list(reversed(sa1b))  # archive order, not name order
    members = sa1b_members(shuffled, folder="sa_000007/") + [("sa_000007/readme.txt", b"not a json")]
    members.insert(0, ("sa_000007/", b""))  # the folder's own entry
    members.append(("sa_000007/orphan.json", b"{}"))  # a JSON with no image beside it
    path = make_tar(tmp_path / "sa_000007.tar", members)
    got = [(item, tars.read_member(item.json)) for item in tars.index_tar(path).json_members()]
    assert [item.json.member for item, _ in got] == [f"sa_000007/{js.name}" for js, _ in shuffled] + [
        "sa_000007/orphan.json"]
    for (item, data), (js, jpg) in zip(got, shuffled, strict=False):
        assert data == js.read_bytes()
        assert item.image.member == f"sa_000007/{jpg.name}" and item.image.size == jpg.stat().st_size
        assert item.json.tar == item.image.tar == os.path.abspath(path)
    assert got[-1][0].image is None and got[-1][1] == b"{}"


def test_a_name_stored_twice_counts_once_as_its_last_copy(tmp_path, sa1b):
    (js, jpg), (js2, _) = sa1b[0], sa1b[1]
    path = make_tar(tmp_path / "t.tar", [(jpg.name, jpg), (js.name, js), (js.name, js2)])  # `tar -r` appended
    got = [(item, tars.read_member(item.json)) for item in tars.index_tar(path).json_members()]
    assert len(got) == 1 and got[0][1] == js2.read_bytes()  # what extraction leaves on disk


# ---------------------------------------------------------------------------------------- references
def test_reference_string_round_trips_odd_names():
    ref = tars.MemberRef("/data/100%#1/sa_000000.tar", "a#b/sa_1@x.jpg", 1024, 77)
    text = str(ref)
    assert text == "/data/100%25%231/sa_000000.tar#a#b/sa_1@x.jpg@1024:77"
    assert tars.parse_ref(text) == ref and tars.is_tar_ref(text)
    for plain in ("/data/sa_1.jpg", "sa_1.jpg", "/data/a#b.jpg", "/x.tar#sa_1.jpg", None, 7):
        assert tars.parse_ref(plain) is None and not tars.is_tar_ref(plain)


def test_opening_references_gives_the_extracted_files_pixels(tmp_path, sa1b):
    path = make_tar(tmp_path / "sa_000000.tar", sa1b_members(sa1b))
    out = tmp_path / "extracted"
    with tarfile.open(path) as tf:
        tf.extractall(out, filter="data")
    refs = [item.image for item in tars.index_tar(path).json_members()]
    for ref in refs:
        im = tars.open_image(str(ref))
        assert im.format == "JPEG"
        assert np.array_equal(pixels(im), pixels(Image.open(out / ref.member)))
        assert tars.load_image(ref).mode == "RGB"
        assert tars.image_size(ref) == im.size
    # threads share the cached handle (pread: no shared file position); a forked pool opens its own
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(tars.read_member, refs * 8))
    assert got == [(out / r.member).read_bytes() for r in refs] * 8
    with ProcessPoolExecutor(2) as pool:
        assert list(pool.map(tars.read_member, refs)) == [(out / r.member).read_bytes() for r in refs]
    fds = Path("/proc/self/fd")
    if fds.is_dir():  # many references into one tar, one open file
        held = [f for f in fds.iterdir() if os.path.realpath(f) == os.path.realpath(path)]
        assert len(held) == 1


def test_a_member_that_is_not_an_image_is_one_clear_error(tmp_path, sa1b):
    path = make_tar(tmp_path / "t.tar", [("sa_1.jpg", b"not a jpeg at all"), ("sa_1.json", sa1b[0][0])])
    ref = tars.index_tar(path).json_members()[0].image
    with pytest.raises(InputError, match=r"trees.jsonl:3: .*t\.tar#sa_1\.jpg@0:17: the member does not decode"):
        tars.open_image(ref, where="trees.jsonl:3")
    with pytest.raises(InputError, match=r"t\.tar#sa_1\.jpg@0:17: the member is not an image"):
        tars.image_size(ref)


# ------------------------------------------------------------------------------ moved, truncated, changed
def one_line(err: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text
    return text


def test_truncated_tar_is_one_clear_error_when_indexing(tmp_path, sa1b):
    whole = make_tar(tmp_path / "whole.tar", sa1b_members(sa1b)).read_bytes()
    members = stdlib_view(tmp_path / "whole.tar")
    last = members[-1]
    cuts = {  # where the file ends -> what the message says beside "truncated"
        members[1][2] + 100: f"member {members[1][0]!r} needs bytes up to",  # inside a member's data
        last[2] + -(-last[3] // 512) * 512: "without the end-of-archive block",  # after the last member
        members[2][1] + 200: f"ends inside the header at byte {members[2][1]}",
    }
    for cut, what in cuts.items():
        path = tmp_path / f"cut-{cut}.tar"
        path.write_bytes(whole[:cut])
        with pytest.raises(InputError) as err:
            tars.index_tar(path)
        one_line(err, str(path), "is truncated", what)


def test_truncated_tar_is_one_clear_error_when_opening_a_reference(tmp_path, sa1b):
    path = make_tar(tmp_path / "sa_000000.tar", sa1b_members(sa1b))
    ref = tars.index_tar(path).json_members()[-1].image
    tars.read_member(ref)  # cached open handle: the check must not trust it
    with open(path, "r+b") as fh:
        fh.truncate(ref.offset + 600)
    with pytest.raises(InputError) as err:
        tars.read_member(ref, where="trees.jsonl:5")
    one_line(err, "trees.jsonl:5", f"tar {os.path.abspath(path)}", "truncated")


def test_changed_tar_is_one_clear_error(tmp_path, sa1b):
    path = tmp_path / "sa_000000.tar"
    members = sa1b_members(sa1b)
    make_tar(path, members)
    refs = [item.image for item in tars.index_tar(path).json_members()]
    assert tars.read_member(refs[-1])  # opened and cached before the change
    # a member rewritten with more bytes: every later member's offset shifts, and the tar is replaced on disk
    members[0] = (members[0][0], members[0][1].read_bytes() + b"\0" * 3000)
    make_tar(tmp_path / "new.tar", members)
    os.replace(tmp_path / "new.tar", path)
    for ref in refs:
        with pytest.raises(InputError) as err:
            tars.read_member(ref, where="trees.jsonl:2")
        one_line(err, "trees.jsonl:2", f"tar {os.path.abspath(path)} changed since the record was written", ref.member)
    # the same offset now holding another member of another size
    make_tar(path, [(f"x{m[0]}", m[1]) for m in sa1b_members(sa1b)])
    with pytest.raises(InputError) as err:
        tars.read_member(refs[0])
    one_line(err, "changed since the record was written", f"x{refs[0].member}")


def test_a_corrupt_header_is_one_clear_error(tmp_path, sa1b):
    path = make_tar(tmp_path / "sa_000000.tar", sa1b_members(sa1b))
    ref = tars.index_tar(path).json_members()[0].image
    with open(path, "r+b") as fh:  # one byte of the header's mtime field: name and size still agree
        fh.seek(ref.offset + 140)
        byte = fh.read(1)
        fh.seek(ref.offset + 140)
        fh.write(b"7" if byte != b"7" else b"6")
    with pytest.raises(InputError) as err:
        tars.read_member(ref)
    one_line(err, "changed since the record was written", "no tar header starts at that byte")
    with pytest.raises(InputError) as err:
        tars.index_tar(path)
    one_line(err, str(path), "is not a tar file" if ref.offset == 0 else "corrupt header")


def test_moved_tar_is_one_clear_error(tmp_path, sa1b):
    path = make_tar(tmp_path / "sa_000000.tar", sa1b_members(sa1b))
    ref = str(tars.index_tar(path).json_members()[0].image)
    path.rename(tmp_path / "elsewhere.tar")
    with pytest.raises(InputError) as err:
        tars.open_image(ref, where="trees.jsonl:1")
    one_line(err, "trees.jsonl:1", f"tar {os.path.abspath(path)}: no such file", "moved")


# ----------------------------------------------------------------------------------- compressed, not a tar
def test_compressed_tar_is_refused_with_what_to_do(tmp_path, sa1b):
    plain = make_tar(tmp_path / "sa_000000.tar", sa1b_members(sa1b[:1]))
    gz = tmp_path / "sa_000000.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(UrecaError) as err:
        tars.index_tar(gz)
    text = one_line(err, str(gz), "gzip-compressed", "cannot be read in place", f"gunzip --keep {gz}")
    assert err.value.exit_code == 2, text
    # a tar compressed in place after its records were written
    ref = tars.index_tar(plain).json_members()[0].image
    plain.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(InputError) as err:
        tars.read_member(ref)
    one_line(err, "gzip-compressed now")


def test_not_a_tar(tmp_path, sa1b):
    for path, what in ((sa1b[0][0], "is not a tar file"), (tmp_path / "empty.tar", "is empty"),
                       (tmp_path / "none.tar", "no such file"), (tmp_path, "is a directory")):
        if path.name == "empty.tar":
            path.write_bytes(b"")
        with pytest.raises(InputError) as err:
            tars.index_tar(path)
        one_line(err, str(path), what)


# ------------------------------------------------------------------------------------------------ inputs
def test_tar_names_plain_and_compressed():
    assert tars.is_tar_name("X.TAR") and tars.is_tar_name("a.tgz") and not tars.is_tar_name("a.json")
