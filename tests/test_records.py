"""records.check_image_record: what a stage reading image records says about other records."""

from __future__ import annotations

import json

import pytest

from tests.checks import one_error_line
from ureca_cli import records as R
from ureca_cli.errors import InputError


def test_a_region_record_is_named_as_such():
    region = {"id": "sa_1/4", "image_id": "sa_1", "image": "sa_1.jpg", "rle": {"size": [2, 2], "counts": "04"},
              "caption": "a cup"}
    with pytest.raises(InputError, match=r"^f.jsonl:3: a region record \(one region a line, id 'sa_1/4'\) where an "
                                         r"image record with 'nodes' is expected"):
        R.check_image_record(region, "f.jsonl:3")
    with pytest.raises(InputError, match="missing field 'image_id'"):
        R.check_image_record({"Bleu_1": 3.0}, "s.json:1")
    image = {"image_id": 1, "image": "a.jpg", "width": 2, "height": 2, "nodes": []}
    assert R.check_image_record(image, "x")["image_id"] == "1"


# ----------------------------------------------------------------------------------------- the schema
def test_a_newer_major_schema_is_refused_and_older_ones_read():
    rle = {"size": [2, 2], "counts": "04"}
    region = {"id": "sa_1/4", "image": "sa_1.jpg", "rle": rle, "caption": "a cup"}
    image = {"image_id": "sa_1", "image": "sa_1.jpg", "width": 2, "height": 2, "nodes": []}
    for rec, check in ((region, R.check_region_record), (image, R.check_image_record)):
        for ok in (None, 1, "1", "1.7", 0):
            check({**rec, "schema": ok} if ok is not None else dict(rec), "f.jsonl:1")
        for newer in (2, "2.0", R.SCHEMA_VERSION + 1):
            with pytest.raises(InputError, match=rf"^f.jsonl:3: schema {newer}: written by a newer ureca"):
                check({**rec, "schema": newer}, "f.jsonl:3")
        with pytest.raises(InputError, match="field 'schema' should be a version number"):
            check({**rec, "schema": "next"}, "f.jsonl:1")


def _one_line(result, command: str, *needles: str) -> None:
    one_error_line(result, *needles, prefix=f"ureca {command}: ")


def test_every_reading_stage_refuses_a_newer_schema(cli, tmp_path):
    """refine (image records), score, train and caption (region records) stop at the line, exit 2, one line."""
    import numpy as np
    from PIL import Image

    from ureca_cli import masks as M

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:6] = 1
    node = {"id": 1, "parent": None, "role": "main", "rle": M.encode(m), "caption": "a box"}
    image = {"schema": 1, "image_id": "a", "image": str(tmp_path / "a.png"), "width": 8, "height": 8, "nodes": [node]}
    images = tmp_path / "images.jsonl"
    images.write_text(json.dumps(image) + "\n" + json.dumps({**image, "image_id": "b", "schema": 2}) + "\n")
    _one_line(cli("refine", images, "--no-refine", "--flat", "-o", tmp_path / "flat.jsonl"), "refine",
              "images.jsonl:2", "schema 2: written by a newer ureca")
    region = {"id": "a/1", "image_id": "a", "image": str(tmp_path / "a.png"), "rle": M.encode(m), "caption": "a box"}
    regions = tmp_path / "regions.jsonl"
    regions.write_text(json.dumps(region) + "\n" + json.dumps({**region, "id": "a/2", "schema": "3.1"}) + "\n")
    _one_line(cli("score", regions, regions, "--no-bertscore"), "score", "regions.jsonl:2", "schema 3.1")
    _one_line(cli("train", regions, "--out", tmp_path / "run", "--base", "tiny", "--cpu"), "train",
              "regions.jsonl:2", "schema 3.1")
    assert not (tmp_path / "run").exists()
    newest = tmp_path / "newest.jsonl"  # caption: the bad line first, so no request is ever sent
    newest.write_text(json.dumps({**region, "schema": 2}) + "\n" + json.dumps(region) + "\n")
    _one_line(cli("caption", "--input", newest, "--region-prompt", "contour", "--backend", "openai", "--base-url",
                  "http://127.0.0.1:9/v1", "--model", "m", "-o", tmp_path / "preds.jsonl"), "caption",
              "newest.jsonl:1", "schema 2")


# ----------------------------------------------------------------------------------------- provenance
def test_flat_region_records_carry_how_they_were_made(cli, tmp_path):
    """`refine --flat` keeps the image record's tree, annotate and refine blocks (model, backend, prompt
    version) in every region record, and training reads those records as before."""
    import numpy as np
    from PIL import Image

    from ureca_cli import masks as M
    from ureca_cli.curate.export import flat_records

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:6] = 1
    blocks = {"tree": {"threshold": 0.8, "parent_rule": "tightest"},
              "annotate": {"backend": "openai", "model": "m-38b", "prompt_version": "ureca-prompts-1+abc"},
              "refine": {"backend": "openai", "model": "m-38b", "prompt_version": "ureca-prompts-1+def"}}
    nodes = [{"id": 1, "parent": None, "role": "main", "depth": 1, "rle": M.encode(m), "caption": "a box"},
             {"id": 2, "parent": None, "role": "dropped", "rle": M.encode(m)}]
    rec = {"schema": 1, "image_id": "a", "image": str(tmp_path / "a.png"), "width": 8, "height": 8,
           "nodes": nodes, **blocks}
    (flat,) = flat_records(rec)
    for key, block in blocks.items():
        assert flat[key] == block
    assert flat["schema"] == R.SCHEMA_VERSION and flat["role"] == "main" and flat["caption"] == "a box"
    path = tmp_path / "refined.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    out = tmp_path / "flat.jsonl"
    result = cli("refine", path, "--no-refine", "--flat", "-o", out)
    assert result.exit_code == 0, result.stderr
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert {k: line[k] for k in blocks} == blocks and line["id"] == "a/1"


# ----------------------------------------------------------------------------------------- node ids
def test_node_ids_that_give_one_region_id_are_refused():
    """Node ids 1 and "1" (or 1 twice) both became the region `<image_id>/1`: refused, naming both nodes."""
    rle = {"size": [2, 2], "counts": "04"}
    image = {"image_id": "900000", "image": "a.jpg", "width": 2, "height": 2}
    for ids in ([1, "1"], [1, 1], ["a/b", "a/b"]):
        nodes = [{"id": 7, "rle": rle}] + [{"id": i, "rle": rle} for i in ids]
        with pytest.raises(InputError, match=rf"^f.jsonl:2: nodes\[2\]: id {ids[1]!r} gives the region id "
                                             rf"'900000/{ids[1]}' of nodes\[1\] \(id {ids[0]!r}\)"):
            R.check_image_record({**image, "nodes": nodes}, "f.jsonl:2")
    R.check_image_record({**image, "nodes": [{"id": 1, "rle": rle}, {"id": "01", "rle": rle}]}, "x")


def test_refine_flat_refuses_node_ids_that_give_one_region_id(cli, tmp_path):
    """`refine --flat` wrote two records with id 900000/1 for node ids 1 and "1"."""
    rle = {"size": [2, 2], "counts": "04"}
    nodes = [{"id": 1, "parent": None, "role": "main", "rle": rle, "caption": "a cup"},
             {"id": "1", "parent": None, "role": "main", "rle": rle, "caption": "a mug"}]
    path = tmp_path / "refined.jsonl"
    path.write_text(json.dumps({"image_id": "900000", "image": "a.jpg", "width": 2, "height": 2, "nodes": nodes})
                    + "\n")
    _one_line(cli("refine", path, "--no-refine", "--flat"), "refine", "refined.jsonl:1",
              "nodes[1]: id '1' gives the region id '900000/1' of nodes[0] (id 1)")


# ------------------------------------------------------------------------------------------- field types
def test_wrongly_typed_fields_are_named_with_the_type_expected(cli, tmp_path):
    """An id that is a list or an object, an area that is a string, a parent that is a list: annotate failed with
    "unexpected TypeError", refine --flat wrote them on (a region id "a/[1]"); every reading stage now names the
    field and the type it expects, one line, exit 2."""
    import numpy as np
    from PIL import Image

    from tests.servers.chat import ScriptedServer
    from ureca_cli import masks as M

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:6] = 1
    nodes = [{"id": 1, "parent": None, "children": [2], "depth": 1, "area": 12, "role": "main", "rle": M.encode(m),
              "caption": "a box"},
             {"id": 2, "parent": 1, "children": [], "depth": 2, "area": 12, "role": "part", "rle": M.encode(m),
              "caption": "a lid"}]
    image = {"schema": 1, "image_id": "a", "image": str(tmp_path / "a.png"), "width": 8, "height": 8, "nodes": nodes}
    bad_nodes = {"id": ([1], "nodes[1].id", "a non-empty string or an integer, got list"),
                 "parent": ([1], "nodes[1].parent", "a string or an integer (a node id"),
                 "area": ("12", "nodes[1].area", "a number, got string"),
                 "children": ("2", "nodes[1].children", "a list of node ids")}
    for field, (value, name, expected) in bad_nodes.items():
        rec = json.loads(json.dumps(image))
        rec["image_id"] = "b"  # its own image: a repeated image_id is refused before its nodes are read
        rec["nodes"][1][field] = value
        path = tmp_path / f"bad_{field}.jsonl"
        path.write_text(json.dumps(image) + "\n" + json.dumps(rec) + "\n")
        _one_line(cli("refine", path, "--no-refine", "--flat", "-o", tmp_path / "flat.jsonl"), "refine",
                  f"bad_{field}.jsonl:2", f"field '{name}' should be {expected}")
        for n in rec["nodes"]:  # the same record before annotate: a tree record
            n.pop("caption")
        tree = tmp_path / f"tree_{field}.jsonl"
        tree.write_text(json.dumps(rec) + "\n")
        with ScriptedServer(lambda body: "a box") as server:
            _one_line(cli("annotate", tree, "--backend", "openai", "--base-url", server.url, "-o",
                          tmp_path / "ann.jsonl"), "annotate", f"tree_{field}.jsonl:1", f"field '{name}' should be")
    region = {"id": "a/1", "image_id": "a", "image": str(tmp_path / "a.png"), "rle": M.encode(m), "caption": "a box"}
    for field, value, expected in (("id", {"n": 1}, "'id' should be a string or an integer, got object"),
                                   ("id", [1], "'id' should be a string or an integer, got list"),
                                   ("area", "12", "'area' should be a number, got string"),
                                   ("parent", [1], "'parent' should be a string or an integer")):
        path = tmp_path / "regions.jsonl"
        path.write_text(json.dumps(region) + "\n" + json.dumps({**region, "id": "a/2", field: value}) + "\n")
        _one_line(cli("score", path, path, "--no-bertscore"), "score", "regions.jsonl:2", expected)
        _one_line(cli("train", path, "--out", tmp_path / "run", "--base", "tiny", "--cpu"), "train",
                  "regions.jsonl:2", expected)
        with ScriptedServer(lambda body: "a box") as server:
            _one_line(cli("caption", "--input", path, "--region-prompt", "contour", "--backend", "openai",
                          "--base-url", server.url, "--model", "scripted", "-o", tmp_path / "preds.jsonl"),
                      "caption", "regions.jsonl:2", expected)
