"""SAM in the commands: `caption --point/--box --box-to-mask sam` and `tree --generate-masks`, end to end.

A tiny random `SamModel` saved with its processor is the `--sam-model` folder, and a tiny URECA checkpoint
captions. Random weights give meaningless masks, so every mask the commands write is compared with the one
the library (`ureca_cli.sam`, itself checked against transformers in tests/test_sam.py) gives for the same
prompts; the trees from generated masks are compared with the trees `ureca tree` builds from the SA-1B files
`--write-masks` kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from tests.checks import one_error_line  # noqa: E402
from ureca_cli import records as R  # noqa: E402
from ureca_cli import sam  # noqa: E402
from ureca_cli.errors import InputError  # noqa: E402
from ureca_cli.masks import decode  # noqa: E402
from ureca_cli.masks.regions import mask_from_png  # noqa: E402

B = Path(__file__).resolve().parent / "data" / "benchmarks"
# random weights: the filters off, so that masks come out; no NMS, so that trees have depth
FAST_AMG = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1"]


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory) -> Path:
    return sam.save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny-sam", seed=0)


@pytest.fixture(scope="module")
def seg(sam_dir):
    return sam.load_sam(str(sam_dir), device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of two real photos (scikit-image's coffee 600x400 and chelsea 451x300), as PNG and JPEG."""
    skdata = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.coffee()).save(folder / "coffee.png")
    Image.fromarray(skdata.chelsea()).save(folder / "chelsea.jpg", quality=95)
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture
def encodes(monkeypatch):
    """Counts the images SAM's image encoder sees (through every `Segmenter`)."""
    seen: list[int] = []
    original = sam.Segmenter.encode

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(sam.Segmenter, "encode", counting)
    return seen


def _records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _caption(cli, ckpt, *args):
    return cli("caption", *args, "--model", ckpt, "--max-new-tokens", "4")


def _ok(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return _records(result.stdout)


_one_line_error = one_error_line


# ---------------------------------------------------------------------------------------- caption IMAGE
def test_points_make_one_region_whose_rle_is_sams_mask(cli, ckpt, sam_dir, seg, photos, encodes):
    image = photos / "coffee.png"
    recs = _ok(_caption(cli, ckpt, image, "--point", "412,300", "--point", "500,310:0", "--sam-model", sam_dir))
    assert len(recs) == 1 and encodes == [1]  # one region: the positive and the negative click together
    [rec] = recs
    region = sam.Region((sam.Point(412, 300), sam.Point(500, 310, 0)))
    [want] = sam.segment_regions(seg, np.asarray(Image.open(image).convert("RGB")), [region])
    got = decode(rec[R.RLE]).astype(bool)
    assert 0 < want.mask.sum() < want.mask.size
    assert np.array_equal(got, want.mask)  # the record's rle round-trips to SAM's mask
    assert rec[R.ID] == "coffee/0" and rec[R.IMAGE_ID] == "coffee" and isinstance(rec[R.CAPTION], str)
    assert rec["sam"] == {"model": str(sam_dir), "points": [[412.0, 300.0, 1], [500.0, 310.0, 0]],
                          "score": pytest.approx(want.score, abs=1e-4)}
    # the label reached SAM: both points positive is another prompt, and another mask
    both = _ok(_caption(cli, ckpt, image, "--point", "412,300", "--point", "500,310", "--sam-model", sam_dir))[0]
    assert both["sam"]["points"][1] == [500.0, 310.0, 1] and both[R.RLE] != rec[R.RLE]


def test_several_regions_share_one_encoding_and_keep_their_order(cli, ckpt, sam_dir, seg, photos, encodes,
                                                                  tmp_path):
    image = photos / "coffee.png"
    rect = np.zeros((400, 600), np.uint8)
    rect[50:150, 40:240] = 1
    Image.fromarray(rect * 255).save(tmp_path / "m.png")
    out = tmp_path / "masks"
    recs = _ok(_caption(cli, ckpt, image, "--mask", tmp_path / "m.png", "--box", "100,50,300,200", "--box",
                        "350,100,200,250", "--box-to-mask", "sam", "--point", "200,150", "--sam-model", sam_dir,
                        "--save-masks", out))
    assert encodes == [1]  # three SAM regions, one image encoding
    assert [r[R.ID] for r in recs] == ["coffee/0", "coffee/1", "coffee/2", "coffee/3"]
    assert "sam" not in recs[0] and np.array_equal(decode(recs[0][R.RLE]), rect)  # --mask first, as given
    regions = [sam.Region(box=(100, 50, 300, 200)), sam.Region(box=(350, 100, 200, 250)),
               sam.Region((sam.Point(200, 150),))]
    want = sam.segment_regions(seg, np.asarray(Image.open(image).convert("RGB")), regions)
    for rec, region, w in zip(recs[1:], regions, want, strict=True):
        assert 0 < w.mask.sum() < w.mask.size
        assert np.array_equal(decode(rec[R.RLE]).astype(bool), w.mask)
        assert rec["sam"]["model"] == str(sam_dir) and {k: rec["sam"][k] for k in region.prompt()} == \
            json.loads(json.dumps(region.prompt()))
    assert recs[1]["sam"]["box"] == [100, 50, 300, 200] and "points" not in recs[1]["sam"]
    # --save-masks: one PNG per region, named from the ids, that --mask reads back as the same region
    assert sorted(p.name for p in out.iterdir()) == [f"coffee_{i}.png" for i in range(4)]
    for i, rec in enumerate(recs):
        assert np.array_equal(mask_from_png(out / f"coffee_{i}.png"), decode(rec[R.RLE]))
    again = _ok(_caption(cli, ckpt, image, "--mask", out / "coffee_3.png"))[0]
    assert again[R.RLE] == recs[3][R.RLE] and again[R.CAPTION] == recs[3][R.CAPTION]


def test_box_to_mask_rect_is_still_the_rectangle(cli, ckpt, photos, encodes):
    rec = _ok(_caption(cli, ckpt, photos / "coffee.png", "--box", "100,50,300,200"))[0]
    m = decode(rec[R.RLE])
    assert m.sum() == 300 * 200 and m[50:250, 100:400].all() and "sam" not in rec
    assert encodes == []  # no SAM loaded


@pytest.mark.parametrize("args, parts", [
    (["--point", "600,10"], ["--point 600,10: outside the 600x400 image", "coffee.png"]),
    (["--point", "10,-1:0", "--point", "5,5"], ["--point 10,-1:0: outside the 600x400 image"]),
    (["--box", "10,10,0,5", "--box-to-mask", "sam"], ["--box 10,10,0,5: empty box"]),
    (["--box", "10,10,0,5"], ["--box", "10,10,0,5", "no area"]),
    (["--box", "500,300,101,50", "--box-to-mask", "sam"], ["--box 500,300,101,50: reaches outside the 600x400"]),
    (["--point", "500,310:0"], ["--point 500,310:0: negative points with no region to attach to",
                                "add a positive --point X,Y"]),
    (["--box", "10,10,50,50", "--box-to-mask", "sam", "--point", "20,20:0"], ["--point 20,20:0: negative points"]),
    (["--point", "412,300:2"], ["--point 412,300:2: the label after ':' must be 1"]),
    (["--point", "412,300", "--sam-dtype", "int8"], ["--sam-dtype 'int8': choose one of"]),
    (["--mask", "{photo}", "--sam-model", "x/y"], ["--sam-model: only with --point or --box-to-mask sam"]),
])
def test_bad_prompts_are_one_line_before_any_model_loads(cli, ckpt, photos, encodes, args, parts, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("SAM was loaded")

    monkeypatch.setattr(sam, "load_sam", no_load)
    args = [str(photos / "coffee.png") if a == "{photo}" else a for a in args]
    _one_line_error(cli("caption", photos / "coffee.png", *args, "--model", "/nonexistent/model"), *parts)


def test_sam_model_not_available_offline_is_one_line(cli, ckpt, photos, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _one_line_error(_caption(cli, ckpt, photos / "coffee.png", "--point", "10,10", "--sam-model",
                                    "ureca-tests/sam-not-cached"),
                           "--sam-model ureca-tests/sam-not-cached: not available offline", "--sam-model DIR")
    assert "hf download" in line
    line = _one_line_error(_caption(cli, ckpt, photos / "coffee.png", "--point", "10,10"),
                           "--sam-model facebook/sam-vit-base: not available offline")  # the default, offline


def test_save_masks_and_points_only_with_an_image(cli, ckpt, tmp_path):
    vg = B / "vg" / "region_descriptions.json"
    _one_line_error(_caption(cli, ckpt, "--input", vg, "--save-masks", tmp_path / "m"), "--save-masks: only with IMAGE")
    _one_line_error(_caption(cli, ckpt, "--input", vg, "--point", "1,1"), "not both")


# ------------------------------------------------------------------------------ caption --input, boxes
def test_benchmark_boxes_become_sam_masks_one_encoding_per_image(cli, ckpt, sam_dir, seg, encodes, tmp_path):
    from ureca_cli.datasets import ReadOptions, read

    vg, images = B / "vg" / "region_descriptions.json", B / "vg" / "images"
    out = tmp_path / "vg.jsonl"
    _ok(_caption(cli, ckpt, "--input", vg, "--images", images, "--box-to-mask", "sam", "--sam-model", sam_dir,
                 "-o", out))
    recs = _records(out.read_text())
    assert [r[R.ID] for r in recs] == ["2401/11", "2401/12", "2402/21", "2402/22", "2402/23", "2403/31"]
    assert encodes == [1, 1, 1]  # three images, six regions: one encoding each
    boxes = [u.value[0] for u in read(vg, "auto", ReadOptions(need=(R.IMAGE,), images=images))]
    for rec, src in zip(recs, boxes, strict=True):
        arr = np.asarray(Image.open(src[R.IMAGE]).convert("RGB"))
        h, w = arr.shape[:2]
        x, y, bw, bh = src[R.BBOX]
        box = (max(0.0, x), max(0.0, y), min(w, x + bw) - max(0.0, x), min(h, y + bh) - max(0.0, y))
        [want] = sam.segment_regions(seg, arr, [sam.Region(box=box)])
        assert np.array_equal(decode(rec[R.RLE]).astype(bool), want.mask)
        assert rec["region_from"] == "box" and rec["sam"]["box"] == list(box) and rec["reference"]
    rect = tmp_path / "rect.jsonl"  # the default: the rectangles, as before
    _ok(_caption(cli, ckpt, "--input", vg, "--images", images, "-o", rect))
    rects = _records(rect.read_text())
    assert all("sam" not in r for r in rects) and [r[R.RLE] for r in rects] != [r[R.RLE] for r in recs]
    assert int(decode(rects[0][R.RLE]).sum()) == 20 * 15


def test_box_masker_keeps_the_last_images_encoding(seg, encodes):
    img = B / "vg" / "images" / "VG_100K" / "2401.jpg"
    other = B / "vg" / "images" / "VG_100K" / "2402.jpg"
    masker = sam.BoxMasker(seg)
    a = masker(str(img), [(2.0, 3.0, 20.0, 15.0)], (60, 40), "x")
    b = masker(str(img), [(30.0, 5.0, 25.0, 30.0), (0.0, 0.0, 60.0, 40.0)], (60, 40), "x")
    assert encodes == [1] and masker.encodings == 1  # the second call reuses the first's encoding
    masker(str(other), [(0.0, 0.0, 60.0, 10.0)], (60, 40), "x")
    assert encodes == [1, 1]
    arr = np.asarray(Image.open(img).convert("RGB"))
    want = sam.segment_regions(seg, arr, [sam.Region(box=(2, 3, 20, 15)), sam.Region(box=(30, 5, 25, 30))])
    assert [x["rle"] for x in a + b[:1]] == [w.rle() for w in want]
    with pytest.raises(InputError, match="is 60x40 but the record says 61x40"):
        masker(str(img), [(0.0, 0.0, 5.0, 5.0)], (61, 40), "x")


def test_benchmark_boxes_under_shard_and_resume_run_sam_only_on_their_images(cli, ckpt, sam_dir, encodes,
                                                                              tmp_path):
    vg, images = B / "vg" / "region_descriptions.json", B / "vg" / "images"
    base = ["--input", vg, "--images", images, "--box-to-mask", "sam", "--sam-model", sam_dir]
    full = tmp_path / "full.jsonl"
    _ok(_caption(cli, ckpt, *base, "-o", full))
    encodes.clear()
    part = tmp_path / "part.jsonl"
    _ok(_caption(cli, ckpt, *base, "--shard", "1/3", "-o", part))
    assert [r[R.ID] for r in _records(part.read_text())] == ["2402/21", "2402/22", "2402/23"]
    assert encodes == [1]  # the other shards' images were never encoded
    encodes.clear()
    lines = full.read_text().splitlines(keepends=True)
    resumed = tmp_path / "resumed.jsonl"
    resumed.write_text("".join(lines[:4]))  # stopped after 2402/22
    _ok(_caption(cli, ckpt, *base, "--resume", "-o", resumed))
    assert resumed.read_text() == full.read_text()
    assert encodes == [1, 1]  # 2402 (for 2402/23) and 2403; 2401 was done


# ------------------------------------------------------------------------------ tree --generate-masks
def _tree(cli, *args):
    return cli("tree", *args, "--generate-masks", *FAST_AMG)


def test_tree_from_photos_equals_tree_from_the_written_sa1b_files(cli, sam_dir, photos, tmp_path, encodes):
    from ureca_cli.curate.tree import TreeConfig, load_mask_file

    masks = tmp_path / "masks"
    out = tmp_path / "trees.jsonl"
    result = _tree(cli, photos, "--sam-model", sam_dir, "--write-masks", masks, "-o", out)
    assert result.exit_code == 0, result.stderr
    recs = _records(out.read_text())
    assert [r[R.IMAGE_ID] for r in recs] == ["chelsea", "coffee"] and encodes == [1, 1]  # notes.txt: not a photo
    for rec in recs:
        R.check_image_record(rec, "trees.jsonl")
        assert rec[R.SOURCE] == rec[R.IMAGE] == str((photos / Path(rec[R.IMAGE]).name).resolve())
        assert rec["generator"]["model"] == str(sam_dir)
        assert rec["generator"]["settings"]["points_per_side"] == 4 and rec["tree"]["threshold"] == 0.8
        assert len(rec[R.NODES]) > 10 and max(n[R.DEPTH] for n in rec[R.NODES]) > 1
        assert (rec[R.WIDTH], rec[R.HEIGHT]) == Image.open(rec[R.IMAGE]).size
    assert sorted(p.name for p in masks.iterdir()) == ["chelsea.json", "coffee.json"]
    mf = load_mask_file(masks / "coffee.json", TreeConfig(images=photos))  # the tree loader reads them back
    assert (mf.width, mf.height, mf.image_id, len(mf.ids)) == (600, 400, "coffee", len(recs[1][R.NODES]))
    from_files = cli("tree", masks, "--images", photos)
    assert from_files.exit_code == 0, from_files.stderr
    for a, b in zip(_records(from_files.stdout), recs, strict=True):
        assert a.pop(R.SOURCE).endswith(f"{a[R.IMAGE_ID]}.json")
        b = dict(b)
        b.pop(R.SOURCE)
        assert a == b  # the same tree, node for node, as from the SA-1B files


def test_generated_nodes_are_the_masks_sam_gives(cli, sam_dir, seg, photos, tmp_path):
    result = _tree(cli, photos / "coffee.png", "--sam-model", sam_dir)
    [rec] = _records(result.stdout)
    anns = sam.generate_masks(seg, np.asarray(Image.open(photos / "coffee.png").convert("RGB")),
                              sam.AmgConfig(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0,
                                            box_nms_thresh=1.0))
    assert [n[R.RLE] for n in rec[R.NODES]] == [a["segmentation"] for a in anns]
    assert [n[R.BBOX] for n in rec[R.NODES]] == [a["bbox"] for a in anns]


def test_resume_equals_an_uninterrupted_run_and_shards_split_it(cli, sam_dir, photos, tmp_path, encodes):
    more = tmp_path / "more"
    more.mkdir()
    Image.open(photos / "coffee.png").crop((0, 0, 300, 200)).save(more / "cup.png")
    inputs = [photos, more / "cup.png"]
    full = tmp_path / "full.jsonl"
    assert _tree(cli, *inputs, "--sam-model", sam_dir, "-o", full).exit_code == 0
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    encodes.clear()
    part = tmp_path / "part.jsonl"
    part.write_text(lines[0])  # interrupted after the first image
    result = _tree(cli, *inputs, "--sam-model", sam_dir, "-o", part, "--resume")
    assert result.exit_code == 0, result.stderr
    assert part.read_text() == full.read_text() and encodes == [1, 1]  # the done image is not run again
    shards = []
    for i in range(2):
        out = tmp_path / f"shard{i}.jsonl"
        assert _tree(cli, *inputs, "--sam-model", sam_dir, "--shard", f"{i}/2", "-o", out).exit_code == 0
        shards.append(out.read_text().splitlines(keepends=True))
    assert shards == [[lines[0], lines[2]], [lines[1]]]


def test_bad_photos_and_options(cli, sam_dir, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(photos / "coffee.png").save(other / "coffee.jpg")
    (other / "broken.png").write_bytes(b"not an image")
    result = _tree(cli, photos, other, "--sam-model", sam_dir, "--on-error", "skip")
    assert result.exit_code == 0
    assert [r[R.IMAGE_ID] for r in _records(result.stdout)] == ["chelsea", "coffee"]
    assert "image id 'coffee' (the file's stem) is already the id of" in result.stderr
    assert "broken.png' does not decode" in result.stderr and "2 failed" in result.stderr
    _one_line_error(_tree(cli, other / "broken.png", "--sam-model", sam_dir), "broken.png' does not decode")
    _one_line_error(_tree(cli, tmp_path / "empty*.jpg", "--sam-model", sam_dir), "no image", "matches this pattern")
    _one_line_error(cli("tree", photos, "--points-per-side", "8"), "--points-per-side: only with --generate-masks")
    _one_line_error(cli("tree", photos, "--write-masks", tmp_path / "m"), "--write-masks: only with --generate-masks")
    _one_line_error(_tree(cli, photos, "--jobs", "2"), "--jobs 2: with --generate-masks SAM runs once")
    _one_line_error(cli("tree", photos, "--generate-masks", "--points-per-side", "0"),
                    "--points-per-side 0: needs a whole number >= 1")
    _one_line_error(_tree(cli, photos, "--sam-model", "ureca-tests/sam-not-cached"),
                    "--sam-model ureca-tests/sam-not-cached: not available offline")
    _one_line_error(_tree(cli, photos, "--images", photos, "--sam-model", sam_dir), "--images: not with")
