"""`ureca tree` on bad input: one line naming the file and the fault, exit 2 under stop, a count under skip."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from tests.tree_fixtures import blob_file


def _good(folder: Path, name: str = "good") -> Path:
    return blob_file(folder, name, objects=1, seed=1, image_id=name)


def _edit(path: Path, fn) -> Path:
    doc = orjson.loads(path.read_bytes())
    fn(doc)
    path.write_bytes(orjson.dumps(doc))
    return path


def _not_json(d: Path) -> tuple[Path, str]:
    p = d / "broken.json"
    p.write_text('{"image": {"width": 3,')
    return p, "not valid JSON"


def _no_annotations(d: Path) -> tuple[Path, str]:
    p = _good(d, "noann")
    return _edit(p, lambda doc: doc.pop("annotations")), "no 'annotations' list"


def _size_mismatch(d: Path) -> tuple[Path, str]:
    p = _good(d, "size")
    return _edit(p, lambda doc: doc["annotations"][2]["segmentation"].update(size=[241, 320])), \
        "annotations[2]: RLE size 320x241 (WxH) disagrees with the image size 320x240"


def _corrupt_counts(d: Path) -> tuple[Path, str]:
    p = _good(d, "counts")
    return _edit(p, lambda doc: doc["annotations"][1]["segmentation"].update(counts="a1b2")), \
        "annotations[1]: corrupt RLE counts"


def _short_counts(d: Path) -> tuple[Path, str]:  # valid characters, but the runs stop short of the image
    p = _good(d, "short")
    seg = orjson.loads(p.read_bytes())["annotations"][0]["segmentation"]
    return _edit(p, lambda doc: doc["annotations"][0]["segmentation"].update(counts=seg["counts"][:-2])), \
        "annotations[0]: corrupt RLE counts"


def _no_image_named_or_found(d: Path) -> tuple[Path, str]:
    """SAM output (no image block, so no file_name) with no photo of its stem: the record could not name its
    image. (An SA-1B file whose named image is missing builds, with a warning: test_missing_image_...)"""
    p = _good(d, "noimage")
    (d / "noimage.png").unlink()
    return _edit(p, lambda doc: doc.pop("image")), "no image for this file"


def _stray_list(d: Path) -> tuple[Path, str]:
    """A list of masks (SAM output) whose later entry is broken is a broken mask file, not a stray JSON."""
    p = _good(d, "sam")
    doc = orjson.loads(p.read_bytes())
    anns = [{k: v for k, v in a.items() if k != "id"} for a in doc["annotations"]]
    p.write_bytes(orjson.dumps(anns + [{"area": 3}]))
    return p, f"annotations[{len(anns)}] has no 'segmentation'"


def _wrong_image_size(d: Path) -> tuple[Path, str]:
    from tests.tree_fixtures import write_image

    p = _good(d, "wrongsize")
    write_image(d / "wrongsize.png", 100, 50)
    return p, "is 100x50, the JSON says 320x240"


def _empty_dir(d: Path) -> tuple[Path, str]:
    p = d / "empty"
    p.mkdir()
    return p, "directory holds no .json files"


def _unreadable(d: Path) -> tuple[Path, str]:
    """A path that cannot be read as a file. Tests run as root, where chmod 000 does not stop reads, so a
    directory named like a JSON file stands in for it there (inside a folder, so the folder's listing
    yields it); as another user the file is made unreadable with chmod 000."""
    if os.geteuid() != 0:
        p = _good(d, "secret")
        p.chmod(0)
        return p, "permission denied"
    folder = d / "listing"
    (folder / "x.json").mkdir(parents=True)
    return folder, "x.json: is a directory, expected a JSON file"


def _id_a_list(d: Path) -> tuple[Path, str]:  # wrongly typed fields: the field and the type expected
    p = _good(d, "idlist")
    return _edit(p, lambda doc: doc["annotations"][1].update(id=[1])), \
        "field 'annotations[1].id' should be a non-empty string or an integer, got list"


def _id_an_object(d: Path) -> tuple[Path, str]:
    p = _good(d, "idobj")
    return _edit(p, lambda doc: doc["annotations"][2].update(id={"n": 2})), \
        "field 'annotations[2].id' should be a non-empty string or an integer, got object"


def _area_a_string(d: Path) -> tuple[Path, str]:
    p = _good(d, "areastr")
    return _edit(p, lambda doc: doc["annotations"][0].update(area="12")), \
        "field 'annotations[0].area' should be a number, got string"


def _bbox_strings(d: Path) -> tuple[Path, str]:
    p = _good(d, "bboxstr")
    return _edit(p, lambda doc: doc["annotations"][0].update(bbox=["1", "2", "3", "4"])), \
        "field 'annotations[0].bbox' should be a list of 4 numbers"


def _image_id_a_list(d: Path) -> tuple[Path, str]:
    p = _good(d, "imgidlist")
    return _edit(p, lambda doc: doc["image"].update(image_id=[7])), \
        "field 'image.image_id' should be a string or an integer, got list"


CASES = [_not_json, _no_annotations, _size_mismatch, _corrupt_counts, _short_counts, _no_image_named_or_found,
         _stray_list,
         _wrong_image_size, _empty_dir, _unreadable, _id_a_list, _id_an_object, _area_a_string, _bbox_strings,
         _image_id_a_list]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__.strip("_"))
def test_bad_input_one_line_exit_2_or_a_skip_count(cli, tmp_path, case):
    bad, reason = case(tmp_path)
    good = _good(tmp_path / "ok")
    out = tmp_path / "out.jsonl"
    res = cli("tree", good, bad, "-o", out)
    assert res.exit_code == 2, res.stderr
    lines = _lines(res.stderr)
    assert len(lines) == 1, lines
    assert str(bad) in lines[0] and reason in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert len(out.read_bytes().splitlines()) == 1  # what was already written stays

    failed = tmp_path / "failed.txt"
    res = cli("tree", bad, good, "--on-error", "skip", "--failed", failed)
    assert res.exit_code == 0, res.stderr
    assert [orjson.loads(line)["image_id"] for line in res.stdout.splitlines()] == ["good"]
    assert reason in res.stderr and "1 failed and skipped" in res.stderr
    listed = _lines(failed.read_text())  # the input to run again: the file (or the folder's entry) at fault
    assert len(listed) == 1 and listed[0].startswith(str(bad))


def test_no_input_at_all_is_one_line(cli, tmp_path):
    res = cli("tree", tmp_path / "nothing-here.json")
    assert res.exit_code == 2 and "no such file or directory" in res.stderr
    res = cli("tree", str(tmp_path / "*.json"))
    assert res.exit_code == 2 and "no file matches this pattern" in res.stderr
    res = cli("tree", "-", input="\n")
    assert res.exit_code == 2 and "no paths on stdin" in res.stderr


def test_render_and_images_must_be_folders(cli, tmp_path):
    (tmp_path / "file.txt").write_text("")
    res = cli("tree", tmp_path / "x.json", "--render", tmp_path / "file.txt")
    assert res.exit_code == 2 and res.stderr.strip() == f"ureca tree: error: --render {tmp_path / 'file.txt'}: " \
        "exists and is not a folder"
    res = cli("tree", tmp_path / "x.json", "--images", tmp_path / "nowhere")
    assert res.exit_code == 2 and "--images" in res.stderr and "not a folder" in res.stderr


def test_annotation_ids_that_give_one_region_id_are_refused(cli, tmp_path):
    """Annotation ids 1 and "1" in one SA-1B file became two records with id 900000/1 after tree, annotate and
    refine --flat: tree, the first stage that sees them, refuses the file."""
    from tests.tree_fixtures import rect, write_sa1b

    masks = [rect(40, 40, 0, 30, 0, 30), rect(40, 40, 0, 10, 0, 10)]
    path = write_sa1b(tmp_path, "sa_900000", masks, ids=[1, "1"], image_id=900000)
    res = cli("tree", path)
    assert res.exit_code == 2 and res.stdout == ""
    lines = _lines(res.stderr)
    assert lines == [f"ureca tree: error: {path}: annotations[1]: id '1' is also the id of annotations[0] (1); "
                     "region ids (<image_id>/<id>) must differ"], lines


def test_a_stray_json_in_the_folder_is_skipped_with_one_warning(cli, tmp_path):
    """`ureca tree DIR` stopped at the first JSON that is not a mask file (a notes.json beside the masks): such
    files are skipped with one warning each, and the mask files around them are built."""
    d = tmp_path / "sa"
    for name in ("a", "c"):
        _good(d, name)
    (d / "b_notes.json").write_text('{"note": "masks from the March run"}')
    (d / "list.json").write_text('["x", "y"]')
    out = tmp_path / "out.jsonl"
    res = cli("tree", d, "-o", out)
    assert res.exit_code == 0, res.stderr
    assert [orjson.loads(line)["image_id"] for line in out.read_bytes().splitlines()] == ["a", "c"]
    warnings = [line for line in _lines(res.stderr) if "warning" in line]
    assert len(warnings) == 2 and all("not a mask file" in w for w in warnings)
    assert str(d / "b_notes.json") in warnings[0] and str(d / "list.json") in warnings[1]
    assert "2 images written" in res.stderr and "error" not in res.stderr
    res = cli("tree", d / "b_notes.json")  # nothing but stray files: nothing to do is an error
    assert res.exit_code == 2 and "no mask file among the inputs" in res.stderr


def test_missing_image_builds_the_tree_with_a_warning(cli, tmp_path):
    """`ureca tree` refused to build a tree when the image was missing though the JSON holds the size: it builds
    it and warns (the image is needed only by annotate and refine); --render, which draws over it, still stops."""
    p = _good(tmp_path, "noimage")
    with_image = cli("tree", p).stdout
    (tmp_path / "noimage.png").unlink()
    res = cli("tree", p)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == with_image  # the same record, image path included
    (warning,) = [line for line in _lines(res.stderr) if "warning" in line]
    assert "noimage.png not found" in warning and "annotate and refine will need the image" in warning
    res = cli("tree", p, "--render", tmp_path / "png")
    assert res.exit_code == 2 and "noimage.png not found (--render draws the tree over it)" in res.stderr
