"""`ureca refine --flat` and `--format internvl`: the exported captions are the refined ones (the released
pipeline exported the captions from before uniqueness refinement), in the forms train reads."""

from __future__ import annotations

import json

import pytest

from tests.refine_fixtures import annotated_record, pasted_photo
from tests.servers.chat import ScriptedServer, request_text
from ureca_cli.curate.export import export, flat_records, internvl_records, output_image_key


def _answer(body: dict) -> str:
    text = request_text(body)
    line = next(x for x in text.splitlines() if x.startswith("long "))
    return "REFINED " + line


@pytest.fixture
def records(shared_data, tmp_path):
    image, spots = pasted_photo(shared_data, tmp_path / "pasted.png")
    path = tmp_path / "captioned.jsonl"
    recs = [annotated_record(image, spots, "photo1"), annotated_record(image, spots, "photo2")]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _refine(cli, *args):
    return cli("refine", *[str(a) for a in args], "--features-model", "random:dinov2-tiny", "--device", "cpu",
               "--threshold", -1, "--backend", "openai")


def test_flat_and_internvl_carry_refined_captions(cli, records, tmp_path):
    with ScriptedServer(_answer) as server:
        for args in (("-o", tmp_path / "records.jsonl"), ("--flat", "-o", tmp_path / "flat.jsonl"),
                     ("--format", "internvl", "-o", tmp_path / "internvl.jsonl")):
            r = _refine(cli, records, "--base-url", server.url, *args)
            assert r.exit_code == 0, r.stderr
    recs = _lines(tmp_path / "records.jsonl")
    refined = {f"{rec['image_id']}/{n['id']}": n for rec in recs for n in rec["nodes"] if "caption" in n}
    assert len(refined) == 12 and all(n["caption"].startswith("REFINED long ") for n in refined.values())

    flat = _lines(tmp_path / "flat.jsonl")
    assert [r["id"] for r in flat] == list(refined)  # one region record per captioned node, in order
    for r in flat:
        node = refined[r["id"]]
        assert r["caption"] == node["unique_caption"] != node["long_caption"]
        assert r["rle"] == node["rle"] and r["image_id"] == r["id"].split("/")[0]
        assert set(r) >= {"id", "image_id", "image", "rle", "caption"}

    chat = _lines(tmp_path / "internvl.jsonl")
    assert len(chat) == 12
    for line in chat:
        node = refined[line["id"]]
        assert line["image"] == "pasted" and line["mask_id"] == str(node["id"])
        human, gpt = line["conversations"]
        assert human == {"from": "human", "value": "<image>\n<mask>\nDescribe this region in the image."}
        assert gpt["from"] == "gpt" and gpt["value"] == node["unique_caption"]
        assert not gpt["value"].startswith("long ")  # never the pre-refinement caption

    # export only (no model loaded): the same lines from the refined records
    r = cli("refine", tmp_path / "records.jsonl", "--no-refine", "--format", "internvl", "-o", tmp_path / "again.jsonl")
    assert r.exit_code == 0, r.stderr
    assert _lines(tmp_path / "again.jsonl") == chat


def test_flat_resume_keys_on_the_image(cli, records, tmp_path):
    out = tmp_path / "flat.jsonl"
    with ScriptedServer(_answer) as server:
        assert _refine(cli, records, "--base-url", server.url, "--flat", "-o", out).exit_code == 0
        lines = out.read_text().splitlines()
        out.write_text("\n".join(lines[:6]) + "\n")  # the first image's six regions
        n = len(server.requests)
        r = _refine(cli, records, "--base-url", server.url, "--flat", "--resume", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert len(server.requests) == n + 6
    assert out.read_text().splitlines() == lines


def test_export_functions_and_checks():
    rec = {"image_id": "sa_1", "image": "/data/sa_1.jpg", "width": 4, "height": 4, "nodes": [
        {"id": 7, "rle": {"size": [4, 4], "counts": "04"}, "caption": " a cup ", "verified": True},
        {"id": 8, "rle": {"size": [4, 4], "counts": "04"}, "role": "dropped"},
    ]}
    (flat,) = flat_records(rec)
    assert flat["id"] == "sa_1/7" and flat["caption"] == " a cup " and flat["verified"] is True
    (line,) = internvl_records(rec, "What is this?")
    assert line == {"id": "sa_1/7", "image": "sa_1", "mask_id": "7", "conversations": [
        {"from": "human", "value": "<image>\n<mask>\nWhat is this?"}, {"from": "gpt", "value": "a cup"}]}
    assert export(rec, "records") is rec
    assert output_image_key(flat) == "sa_1" and output_image_key(line) == "sa_1" and output_image_key(rec) == "sa_1"
    with pytest.raises(Exception, match="--format"):
        export(rec, "coco")


def test_flat_output_loads_as_training_data(cli, records, tmp_path):
    """What `--flat` writes is what `ureca train` reads (ureca_cli.train.data)."""
    data = pytest.importorskip("ureca_cli.train.data")
    out = tmp_path / "flat.jsonl"
    with ScriptedServer(_answer) as server:
        assert _refine(cli, records, "--base-url", server.url, "--flat", "-o", out).exit_code == 0
    samples = data.load_samples([out], data.DataConfig(val_fraction=0))
    assert len(samples) == 12 and all(s.caption.startswith("REFINED long ") for s in samples)


def test_tree_records_without_captions_are_refused(cli, tmp_path):
    """`ureca tree | ureca refine --flat` (annotate skipped) used to write nothing and exit 0."""
    rle = {"size": [4, 4], "counts": "04"}
    tree = {"image_id": "t1", "image": "/data/t1.jpg", "width": 4, "height": 4, "nodes": [
        {"id": 1, "rle": rle, "role": "main", "parent": None}, {"id": 2, "rle": rle, "role": "dropped"}]}
    no_main = {**tree, "image_id": "t2", "nodes": [{"id": 2, "rle": rle, "role": "dropped"}]}
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree) + "\n" + json.dumps(no_main) + "\n")
    result = cli("refine", path, "--no-refine", "--flat")
    assert result.exit_code == 2 and result.stdout == ""
    assert "trees.jsonl:1: image t1: no node has a caption (a tree record? caption it with ureca annotate" \
        in result.stderr
    # a record with nothing to caption (no main object) passes, as annotate passes it
    result = cli("refine", path, "--no-refine", "--on-error", "skip")
    assert result.exit_code == 0 and [json.loads(x)["image_id"] for x in result.stdout.splitlines()] == ["t2"]


def _images(ids: list[str], node_ids: list, path) -> None:
    rle = {"size": [4, 4], "counts": "04"}
    recs = [{"image_id": im, "image": f"/data/{im}.jpg", "width": 4, "height": 4,
             "nodes": [{"id": n, "rle": rle, "role": "main", "parent": None, "caption": f"{im} {n}"}
                       for n in node_ids]} for im in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.parametrize("fmt", [["--flat"], ["--format", "internvl"]], ids=["flat", "internvl"])
def test_resume_with_slashes_in_node_ids_neither_loses_nor_repeats(cli, tmp_path, fmt):
    """`refine --flat` and `--format internvl` with --resume wrote an image's lines again when its node ids
    held a '/' (the image key was read as the part of the region id before the last '/')."""
    path = tmp_path / "refined.jsonl"
    _images(["a", "b/c"], ["x/1", "x/2"], path)
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    assert cli("refine", path, "--no-refine", *fmt, "-o", whole).exit_code == 0
    lines = whole.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    for done in (2, 4):  # the first image written, then both
        part.write_bytes(b"".join(lines[:done]))
        r = cli("refine", path, "--no-refine", *fmt, "-o", part, "--resume")
        assert r.exit_code == 0, r.stderr
        assert part.read_bytes() == whole.read_bytes()
        assert f"{done // 2} already done" in r.stderr


def test_output_image_key_reads_the_image_of_a_line():
    assert output_image_key({"id": "a/b/x/1", "image_id": "a/b", "rle": {}}) == "a/b"
    assert output_image_key({"id": "a/b/x/1", "image": "b", "mask_id": "x/1", "conversations": []}) == "a/b"
    assert output_image_key({"image_id": "a/b", "nodes": []}) == "a/b"
