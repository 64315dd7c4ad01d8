"""SA-1B tar shards through every stage (issue 17): tree, annotate, refine, caption and train's data loading read
the images from the tar in place, and give the records the extracted folder gives, apart from the image
reference (and tree's ``source``); ``--shard``, ``--resume`` and ``--jobs`` hold over tars; a tar that moved,
was cut short or changed since its records were written is one clear line at every stage."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.checks import one_error_line
from tests.conftest import ROOT
from tests.servers.chat import ScriptedServer, request_images, request_text
from tests.test_tars import make_tar, sa1b_members, sa1b_pairs
from ureca_cli import tars

TINY_FEATURES = "random:dinov2-tiny"


def run_cli(*args, input: str | None = None):
    """``ureca ARGS`` in process (the ``cli`` fixture, usable from module-scoped fixtures)."""
    from typer.testing import CliRunner

    from ureca_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)


def ok(*args, input: str | None = None):
    r = run_cli(*args, input=input)
    assert r.exit_code == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def without(rec: dict, *keys: str) -> dict:
    return {k: v for k, v in rec.items() if k not in keys}


def _pixels(url: str) -> bytes:
    """A data URL's decoded picture: its size and RGB pixels (the JPEG's bytes differ with the way it was
    written, restart markers or not, while the model sees the same pixels)."""
    import base64

    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return repr(im.size).encode() + np.asarray(im.convert("RGB")).tobytes()


def answer(body: dict) -> str:
    """The scripted chat model: its answer depends on the prompt's text and on every image's pixels, so the
    same answers mean the model was shown the same pixels."""
    text = request_text(body)
    if "True if the description fits" in text:
        return "True"
    h = hashlib.sha1(text.encode())
    for url in request_images(body):
        h.update(_pixels(url))
    seen = h.hexdigest()[:12]
    return f"{'para' if 'one paragraph' in text else 'phrase'} {seen}"


# ---------------------------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def sa1b(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Six of the shared conformance files where present (four with main objects), else four generated ones."""
    return sa1b_pairs(lambda: tmp_path_factory.mktemp("sa1b-src"), 6, 4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, sa1b) -> SimpleNamespace:
    """Two shards as SA-1B ships them (each image, then its JSON; the first half of the images in the first)
    in ``shards/``, and both extracted into ``extracted/``."""
    root = tmp_path_factory.mktemp("sa1b")
    (root / "shards").mkdir()
    half = (len(sa1b) + 1) // 2
    paths = [make_tar(root / "shards" / "sa_000000.tar", sa1b_members(sa1b[:half])),
             make_tar(root / "shards" / "sa_000001.tar", sa1b_members(sa1b[half:]))]
    for path in paths:
        with tarfile.open(path) as tf:
            tf.extractall(root / "extracted", filter="data")
    return SimpleNamespace(root=root, folder=root / "shards", tars=paths, extracted=root / "extracted")


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict[str, SimpleNamespace]:
    """The curation stages over the tars and over the extracted folder: tree (with its pictures), annotate
    (scripted server; prompt images drawn in a worker process for the tars, in threads for the folder), refine
    (random DINOv2 features, every captioned region a look-alike, scripted server, --verify), and both exports."""
    out = {}
    with ScriptedServer(answer) as server:
        for kind, inputs, workers in (("tar", [shards.folder], "1"), ("folder", [shards.extracted], "0")):
            d = tmp_path_factory.mktemp(kind)
            chat = ["--backend", "openai", "--base-url", server.url]
            ok("tree", *inputs, "-o", d / "trees.jsonl", "--render", d / "png")
            ok("annotate", d / "trees.jsonl", *chat, "--prepare-workers", workers, "-o", d / "captioned.jsonl")
            ok("refine", d / "captioned.jsonl", *chat, "--features-model", TINY_FEATURES, "--features-device", "cpu",
               "--threshold", "-1", "--max-similar", "2", "--verify", "-o", d / "refined.jsonl")
            ok("refine", d / "refined.jsonl", "--no-refine", "--flat", "-o", d / "flat.jsonl")
            ok("refine", d / "refined.jsonl", "--no-refine", "--format", "internvl", "-o", d / "internvl.jsonl")
            out[kind] = SimpleNamespace(dir=d, **{n: d / f"{n}.jsonl" for n in (
                "trees", "captioned", "refined", "flat", "internvl")})
        out["requests"] = server.count
    return out


def member_of(image: str) -> tars.MemberRef:
    ref = tars.parse_ref(image)
    assert ref is not None, image
    return ref


# ------------------------------------------------------------------------------------------------- tree
def test_tree_over_tars_equals_the_extracted_folder(shards, runs, sa1b):
    got, want = lines(runs["tar"].trees), lines(runs["folder"].trees)
    assert len(got) == len(want) == len(sa1b)
    for rec, folder_rec, (js, jpg) in zip(got, want, sa1b, strict=True):
        assert without(rec, "image", "source") == without(folder_rec, "image", "source")
        image, source = member_of(rec["image"]), member_of(rec["source"])
        tar = str(shards.tars[0] if image.tar.endswith("sa_000000.tar") else shards.tars[1])
        assert (image.tar, image.member, source.tar, source.member) == (tar, jpg.name, tar, js.name)
        assert tars.read_member(image) == jpg.read_bytes() and tars.read_member(source) == js.read_bytes()
        assert folder_rec["image"] == str(shards.extracted / jpg.name)
        assert folder_rec["source"] == str(shards.extracted / js.name)
        # the tree picture drew the photo read from the tar: the same picture as from the extracted file
        name = f"{rec['image_id']}.png"
        assert np.array_equal(np.asarray(Image.open(runs["tar"].dir / "png" / name)),
                              np.asarray(Image.open(runs["folder"].dir / "png" / name)))


def test_tree_inputs_a_glob_a_member_reference_and_images_elsewhere(shards, runs, tmp_path):
    whole = runs["tar"].trees.read_bytes()
    r = ok("tree", shards.folder / "sa_*.tar")  # a glob of tars, to stdout
    assert r.stdout.encode() == whole
    r = ok("tree", *shards.tars)  # the tars named one by one
    assert r.stdout.encode() == whole
    # a JSON member by its reference (what --failed writes for it), one a line on stdin
    recs = lines(runs["tar"].trees)
    r = ok("tree", "-", input=f"{recs[-1]['source']}\n{recs[0]['source']}\n")
    assert [orjson.loads(x) for x in r.stdout.splitlines()] == [recs[-1], recs[0]]
    # --images: the images come from a folder, the masks from the tar
    r = ok("tree", shards.folder, "--images", shards.extracted)
    for rec, folder_rec in zip([orjson.loads(x) for x in r.stdout.splitlines()], lines(runs["folder"].trees),
                               strict=True):
        assert without(rec, "source") == without(folder_rec, "source") and tars.is_tar_ref(rec["source"])


def test_tree_image_named_by_file_name_inside_the_tar(sa1b, tmp_path):
    js, jpg = sa1b[1]
    doc = orjson.loads(js.read_bytes())
    doc["image"]["file_name"] = "photo.jpg"
    path = make_tar(tmp_path / "t.tar", [("d/photo.jpg", jpg), ("d/sa_7.json", orjson.dumps(doc))])
    (rec,) = [orjson.loads(x) for x in ok("tree", path).stdout.splitlines()]
    assert member_of(rec["image"]).member == "d/photo.jpg" and tars.read_member(rec["image"]) == jpg.read_bytes()
    doc["image"]["file_name"] = "gone.jpg"
    path = make_tar(tmp_path / "u.tar", [("d/photo.jpg", jpg), ("d/sa_7.json", orjson.dumps(doc))])
    one_line(run_cli("tree", path), f"{path}#d/sa_7.json@", "image member 'gone.jpg' not found in u.tar")


def test_tree_shard_resume_and_jobs_hold_over_tars(shards, runs, tmp_path):
    whole = runs["tar"].trees.read_bytes()
    recs = whole.splitlines(keepends=True)
    assert ok("tree", shards.folder, "--jobs", "2").stdout.encode() == whole
    parts = [ok("tree", shards.folder, "--shard", f"{i}/2").stdout.encode().splitlines(keepends=True)
             for i in range(2)]
    assert parts == [recs[0::2], recs[1::2]]  # round robin over the members of both tars, in order
    # a run stopped inside the first tar, with half a line written: --resume writes the rest, once each
    out = tmp_path / "trees.jsonl"
    out.write_bytes(recs[0] + recs[1][:50])
    r = ok("tree", shards.folder, "-o", out, "--resume", "--jobs", "2")
    assert f"{len(recs) - 1} images written, 1 already done (--resume)" in r.stderr
    assert out.read_bytes() == whole
    # shards written to one file in turn, --resume each time
    out.unlink()
    for i in range(3):
        ok("tree", shards.folder, "-o", out, "--resume", "--shard", f"{i}/3")
    assert sorted(out.read_bytes().splitlines()) == sorted(whole.splitlines())


# --------------------------------------------------------------------------------------- annotate, refine
def test_annotate_and_refine_read_the_tar_and_write_the_folders_records(runs):
    assert runs["requests"] > 0
    for step in ("captioned", "refined", "flat"):
        got, want = lines(getattr(runs["tar"], step)), lines(getattr(runs["folder"], step))
        assert len(got) == len(want) > 0, step
        for rec, folder_rec in zip(got, want, strict=True):
            assert tars.is_tar_ref(rec["image"]) and not tars.is_tar_ref(folder_rec["image"])
            assert without(rec, "image", "source") == without(folder_rec, "image", "source"), step
    captioned = [n for rec in lines(runs["tar"].refined) for n in rec["nodes"] if "caption" in n]
    assert captioned and all(n["unique_caption"].startswith("para ") for n in captioned)
    # the released form names the image by its SA-1B stem, tar or not: the same file
    assert runs["tar"].internvl.read_bytes() == runs["folder"].internvl.read_bytes()
    assert {x["image"] for x in lines(runs["tar"].internvl)} <= {Path(r["image"]).stem
                                                                 for r in lines(runs["folder"].trees)}


# ------------------------------------------------------------------------------------------------ caption
def test_caption_reads_the_tar(runs, ckpt, tmp_path):
    preds = {}
    for kind in ("tar", "folder"):
        out = tmp_path / f"{kind}.jsonl"
        ok("caption", "--input", runs[kind].flat, "--model", ckpt, "--max-new-tokens", "4", "-o", out)
        preds[kind] = lines(out)
    assert len(preds["tar"]) == len(lines(runs["tar"].flat)) > 0
    assert all(tars.is_tar_ref(p["image"]) for p in preds["tar"])
    assert [without(p, "image") for p in preds["tar"]] == [without(p, "image") for p in preds["folder"]]
    assert len({p["caption"] for p in preds["tar"]}) > 1  # the captions differ by region: the mask was read


# ------------------------------------------------------------------------------------------ train's data
def test_train_data_loading_reads_the_tar_in_data_loader_workers(runs, ckpt, tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from ureca_cli.model import load_checkpoint
    from ureca_cli.train.data import RegionDataset, load_samples

    got, want = load_samples([runs["tar"].flat]), load_samples([runs["folder"].flat])
    assert len(got) == len(want) > 0
    assert all(tars.is_tar_ref(s.image) for s in got)  # references pass through the readers untouched
    assert [(s.id, s.image_id, s.rle, s.caption) for s in got] == [(s.id, s.image_id, s.rle, s.caption) for s in want]
    processor = load_checkpoint(ckpt).processor

    def batches(samples) -> list[dict]:
        loader = DataLoader(RegionDataset(samples, processor), batch_size=None, num_workers=2)
        return list(loader)

    for a, b in zip(batches(got), batches(want), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # and a training step through the Trainer's own data-loader workers (a process of its own: the Trainer's
    # logging outlives an in-process run's captured stderr)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "ureca_cli", "train", str(runs["tar"].flat), "--out", str(out),
                        "--stage", "1", "--max-steps", "1", "--no-validate", "--workers", "2", "--base", "tiny",
                        "--global-batch", "2", "--batch-size", "2", "--cpu"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (out / "ureca.json").is_file(), r.stderr


def test_released_format_lines_naming_tar_members(runs, shards, tmp_path):
    """The released reader takes a line whose image is a tar reference: kept as it is, its mask found in --masks
    by the member's stem (sa_N.json)."""
    from ureca_cli.train.data import DataConfig, load_samples

    refs = {Path(member_of(r["image"]).member).stem: r["image"] for r in lines(runs["tar"].trees)}
    rows = lines(runs["tar"].internvl)
    path = tmp_path / "released.jsonl"
    path.write_bytes(b"".join(orjson.dumps(dict(row, image=refs[row["image"]])) + b"\n" for row in rows))
    got = load_samples([path], DataConfig(masks_dir=shards.extracted))
    want = load_samples([runs["tar"].internvl], DataConfig(masks_dir=shards.extracted, images_dir=shards.extracted))
    assert len(got) == len(rows) > 0 and all(tars.is_tar_ref(s.image) for s in got)
    assert [(s.id, s.rle, s.caption) for s in got] == [(s.id, s.rle, s.caption) for s in want]


# -------------------------------------------------------------------------------- moved, cut, changed tars
one_line = one_error_line


def _break(how: str, src: Path, dst: Path) -> None:
    if how == "moved":
        return  # never put there
    data = src.read_bytes()
    if how == "truncated":  # an interrupted copy: it stops inside the first member
        dst.write_bytes(data[:1024])
        return
    with tarfile.open(src) as tf:  # changed: the same members written again in another order
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tf:
        for m, body in reversed(members):
            tf.addfile(m, io.BytesIO(body))


@pytest.mark.parametrize("how, words", [
    ("moved", "no such file (the record refers to its member"),
    ("truncated", "(truncated?)"),
    ("changed", "changed since the record was written"),
])
def test_a_tar_that_moved_or_changed_is_one_line_at_every_stage(shards, runs, ckpt, tmp_path, how, words):
    here = tmp_path / "shards"
    here.mkdir()
    files = {}
    for path in shards.tars:  # the records, their references pointing at copies of the tars
        _break(how, path, here / path.name)
    for step in ("trees", "captioned", "flat"):
        text = getattr(runs["tar"], step).read_text()
        files[step] = tmp_path / f"{step}.jsonl"
        files[step].write_text(text.replace(str(shards.folder), str(here)))
    with ScriptedServer(answer) as server:
        chat = ["--backend", "openai", "--base-url", server.url]
        runs_ = {
            "annotate": run_cli("annotate", files["trees"], *chat, "--prepare-workers", "0"),
            "refine": run_cli("refine", files["captioned"], *chat, "--features-model", TINY_FEATURES,
                              "--features-device", "cpu", "--threshold", "-1"),
            "caption": run_cli("caption", "--input", files["flat"], "--model", ckpt, "--max-new-tokens", "2"),
            "train": run_cli("train", files["flat"], "--out", tmp_path / "run", "--base", "tiny", "--cpu"),
        }
        assert server.count == 0  # each stage stopped at the image, before asking anything about it
    for stage, result in runs_.items():
        line = one_line(result, f"ureca {stage}: error: ", f"tar {here}/sa_00000", words)
        assert ".jsonl:" in line, line  # names the record too
    assert not (tmp_path / "run").exists()
    # tree itself reads the tar again: a cut one is one line; a changed one is refused on --resume of trees
    # written before the change, whose references it would mix with new ones
    if how == "truncated":
        one_line(run_cli("tree", here), f"{here}/sa_00000", "is truncated")
    if how == "changed":
        out = tmp_path / "again.jsonl"
        out.write_bytes(files["trees"].read_bytes().splitlines(keepends=True)[0])
        one_line(run_cli("tree", here, "-o", out, "--resume"), f"tar {here}/sa_000000.tar changed since {out} "
                 "was written", "build this tar's trees again")


def test_compressed_or_cut_tar_is_one_line_at_tree(shards, tmp_path):
    import gzip

    gz = tmp_path / "sa_000000.tar.gz"
    gz.write_bytes(gzip.compress(shards.tars[0].read_bytes()))
    one_line(run_cli("tree", gz), str(gz), "gzip-compressed: a compressed tar cannot be read in place",
             f"gunzip --keep {gz}")
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(gz, folder)
    cut = folder / "sa_000001.tar"
    with tarfile.open(shards.tars[1]) as tf:
        last = tf.getmembers()[-1]
    cut.write_bytes(shards.tars[1].read_bytes()[:last.offset_data + 100])  # inside the last member's data
    r = run_cli("tree", folder, "--on-error", "skip", "-o", tmp_path / "out.jsonl")
    assert r.exit_code == 2 and "2 failed" in r.stderr, r.stderr  # every input failed: status 2, both named
    assert f"{folder / gz.name}: is gzip-compressed" in r.stderr and f"{cut}: is truncated" in r.stderr


# ------------------------------------------------------------------------------------------- a cluster
@pytest.mark.slow
def test_two_nodes_through_torchrun_rendezvous_train_on_tar_records(runs, tmp_path):
    """The README's multi-node command, two "nodes" on this machine (one CPU process each, gloo): both
    agents meet at one c10d rendezvous endpoint, and the run trains on records whose images lie in tars."""
    import socket

    pytest.importorskip("torch")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "tars17",
           "-m", "ureca_cli", "train", str(runs["tar"].flat), "--out", str(out), "--stage", "1", "--max-steps", "2",
           "--no-validate", "--base", "tiny", "--global-batch", "2", "--batch-size", "1", "--cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        results = [(p.wait(timeout=300), p.stderr.read()) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    for code, err in results:
        assert code == 0, err[-3000:]
    text = "".join(err for _, err in results)
    assert "2 processes" in text and text.count("stage 1: done") == 1  # one report, from global rank 0
    assert (out / "ureca.json").is_file()
