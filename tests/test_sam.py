"""SAM through transformers: prompts to masks and automatic mask generation.

A tiny random `SamModel` (and a tiny `Sam2Model`) saved with its processor loads through `load_sam`, the path
of a downloaded checkpoint. Its masks mean nothing, so prompt segmentation is checked against transformers'
own processor + model + post-processing run by hand (coordinates, box conversion, labels, choice of mask),
and the filters and NMS of automatic generation are checked through `tests/sam_doubles.SceneSegmenter`, whose
masks and scores are chosen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.sam_doubles import OFF, SceneSegmenter, coordinate_image, obj, rect_logits
from ureca_cli import sam
from ureca_cli.errors import InputError, UrecaError
from ureca_cli.masks import decode, pixel_box

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> sam.Segmenter:
    folder = sam.save_tiny_sam(tmp_path_factory.mktemp("tiny-sam"), seed=0)
    return sam.load_sam(str(folder), device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return skdata.coffee()  # 400 x 600 x 3 uint8


def _reference(seg, image, *, points=None, labels=None, box=None, multimask):
    """transformers alone: SamProcessor normalizes the prompts, SamModel runs on the pixels, the processor
    post-processes; the candidate with the highest predicted IoU -> (HxW bool, score)."""
    kw = {}
    if points is not None:
        kw["input_points"] = [[points]]
        kw["input_labels"] = [[labels]]
    if box is not None:
        kw["input_boxes"] = [[box]]
    inputs = seg.processor(images=image, return_tensors="pt", **kw)
    with torch.inference_mode():
        out = seg.model(**inputs, multimask_output=multimask)
    masks = seg.processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                             inputs["reshaped_input_sizes"])[0][0]  # K x H x W bool
    best = int(out.iou_scores[0, 0].argmax())
    return masks[best].numpy(), float(out.iou_scores[0, 0, best])


# ------------------------------------------------------------------------------------- prompts to masks
def test_one_point_is_the_best_of_three_as_transformers_gives_it(tiny, photo):
    [got] = sam.segment_regions(tiny, photo, [sam.Region((sam.Point(412, 300),))])
    want, score = _reference(tiny, photo, points=[[412, 300]], labels=[1], multimask=True)
    assert got.mask.shape == (400, 600) and got.mask.dtype == bool and got.candidates == 3
    assert 0 < got.mask.sum() < got.mask.size  # not a blank answer the comparison would pass anyway
    assert np.array_equal(got.mask, want)
    assert got.score == pytest.approx(score, rel=1e-5, abs=1e-7)


def test_box_is_xywh_turned_into_sams_xyxy(tiny, photo):
    [got] = sam.segment_regions(tiny, photo, [sam.Region(box=(100, 50, 300, 200))])
    want, score = _reference(tiny, photo, box=[100, 50, 400, 250], multimask=False)
    assert got.candidates == 1 and 0 < got.mask.sum() < got.mask.size
    assert np.array_equal(got.mask, want)
    assert got.score == pytest.approx(score, rel=1e-5, abs=1e-7)


def test_negative_points_reach_sam_with_label_zero(tiny, photo):
    pos, neg = sam.Point(200, 150), sam.Point(450, 320, 0)
    [got] = sam.segment_regions(tiny, photo, [sam.Region((pos, neg))])
    want, score = _reference(tiny, photo, points=[[200, 150], [450, 320]], labels=[1, 0], multimask=False)
    assert 0 < got.mask.sum() < got.mask.size
    assert np.array_equal(got.mask, want)
    assert got.score == pytest.approx(score, rel=1e-5, abs=1e-7)
    [both_pos] = sam.segment_regions(tiny, photo, [sam.Region((pos, sam.Point(450, 320, 1)))])
    assert both_pos.score != pytest.approx(got.score, rel=1e-4)  # the label changed what SAM saw


def test_several_regions_share_one_encoding_and_equal_one_at_a_time(tiny, photo):
    regions = [
        sam.Region((sam.Point(100, 100),)),
        sam.Region(box=(50, 60, 200, 150)),
        sam.Region((sam.Point(300, 200), sam.Point(310, 210, 0))),
        sam.Region((sam.Point(500, 350),)),
        sam.Region((sam.Point(320, 180),), box=(250, 120, 150, 120)),
    ]
    calls = []
    hook = tiny.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        together = sam.segment_regions(tiny, photo, regions)
        assert len(calls) == 1  # one image, one encoding, five regions
        enc = tiny.encode([photo])[0]
        one_by_one = sam.segment_regions(tiny, photo, regions, encoding=enc, batched=False)
        assert len(calls) == 2
        alone = [sam.segment_regions(tiny, photo, [r])[0] for r in regions]  # each region its own encoding
    finally:
        hook.remove()
    for a, b, c in zip(together, one_by_one, alone, strict=True):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.mask, c.mask)
        assert a.score == pytest.approx(c.score, rel=1e-4, abs=1e-6)
    assert [r.candidates for r in together] == [3, 1, 1, 3, 1]


def test_region_mask_rle_round_trips(tiny, photo):
    masks = sam.segment_regions(tiny, photo, [sam.Region((sam.Point(100, 100),)), sam.Region(box=(0, 0, 600, 400))])
    for m in masks:
        rle = m.rle()
        assert rle["size"] == [400, 600] and isinstance(rle["counts"], str)
        assert np.array_equal(decode(rle).astype(bool), m.mask)


def test_sam2_checkpoint_segments_and_generates(tmp_path, photo):
    seg = sam.load_sam(str(sam.save_tiny_sam(tmp_path / "tiny-sam2", family="sam2")), device="cpu")
    assert seg.family == "sam2"
    regions = [sam.Region((sam.Point(100, 100),)), sam.Region(box=(50, 60, 200, 150))]
    together = sam.segment_regions(seg, photo, regions)
    alone = [sam.segment_regions(seg, photo, [r])[0] for r in regions]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(together, alone, strict=True))
    anns = sam.generate_masks(seg, photo, sam.AmgConfig(points_per_side=4, pred_iou_thresh=0,
                                                        stability_score_thresh=0))
    assert anns and all(a["segmentation"]["size"] == [400, 600] for a in anns)


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("region, message", [
    (sam.Region((sam.Point(600, 10),)), "--point 600,10: outside the 600x400 image coffee.png"),
    (sam.Region((sam.Point(5, -1, 0),)), "--point 5,-1:0: outside the 600x400 image"),
    (sam.Region(box=(10, 10, 0, 5)), "--box 10,10,0,5: empty box"),
    (sam.Region(box=(500, 300, 101, 50)), "--box 500,300,101,50: reaches outside the 600x400 image"),
    (sam.Region(), "region 2 of the 600x400 image coffee.png has no prompt: give it --point X,Y or --box"),
])
def test_bad_prompts_are_one_clear_error_before_sam_runs(tiny, photo, region, message):
    calls = []
    hook = tiny.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InputError) as e:
            sam.segment_regions(tiny, photo, [sam.Region((sam.Point(1, 1),)), region], where="coffee.png")
    finally:
        hook.remove()
    assert message in str(e.value) and "\n" not in str(e.value)
    assert calls == []


@pytest.mark.parametrize("parse, text, message", [
    (sam.parse_point, "412,300:2", "--point 412,300:2: the label after ':' must be 1"),
    (sam.parse_point, "412", "--point 412: expected x,y"),
    (sam.parse_point, "a,b", "numbers in pixels"),
    (sam.parse_point, "nan,3", "finite"),
    (sam.parse_box, "1,2,3", "--box 1,2,3: expected x,y,w,h"),
    (sam.parse_box, "1,2,0,4", "--box 1,2,0,4: empty box"),
    (sam.parse_box, "1,2,-3,4", "empty box"),
])
def test_bad_point_and_box_text(parse, text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse(text)


def test_parsed_prompts():
    assert sam.parse_point(" 412,300 ") == sam.Point(412, 300, 1)
    assert sam.parse_point("500.5,310:0") == sam.Point(500.5, 310, 0)
    assert sam.parse_point("1,2:1").spec() == "1,2"
    assert sam.parse_box("10,20,30.5,40") == (10, 20, 30.5, 40)


def test_model_not_available_offline_names_the_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UrecaError) as e:
        sam.load_sam("ureca-tests/sam-not-cached-anywhere", device="cpu")
    msg = str(e.value)
    assert msg.startswith("--sam-model ureca-tests/sam-not-cached-anywhere: not available offline")
    assert "--sam-model DIR" in msg and "\n" not in msg


def test_model_folder_problems(tmp_path):
    with pytest.raises(UrecaError, match=r"--sam-model ./nope/sam: no such folder"):
        sam.load_sam("./nope/sam")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UrecaError, match="--sam-model .*empty: no SAM model in this folder"):
        sam.load_sam(str(tmp_path / "empty"))
    other = tmp_path / "dino"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "dinov2", "hidden_size": 8}')
    with pytest.raises(UrecaError, match=r"a 'dinov2' model, not SAM"):
        sam.load_sam(str(other))


def test_amg_settings_are_checked():
    with pytest.raises(UrecaError, match="--points-per-side 0: needs a whole number >= 1"):
        sam.AmgConfig(points_per_side=0)
    with pytest.raises(UrecaError, match="--pred-iou-thresh 1.5"):
        sam.AmgConfig(pred_iou_thresh=1.5)
    with pytest.raises(UrecaError, match="deepest crop layer would get no points"):
        sam.AmgConfig(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2)


def test_importing_the_package_loads_no_numpy_or_torch():
    code = ("import sys; from ureca_cli import sam; sam.parse_point('1,2'); sam.AmgConfig(); "
            "print(sorted(m for m in ('numpy', 'torch', 'transformers', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------- automatic generation, through the double
H = W = 200
SCENE_CFG = dict(points_per_side=4, min_area=10)  # grid points at 25, 75, 125, 175 on both axes


def _scene() -> SceneSegmenter:
    unstable = np.full((H, W), OFF, dtype=np.float32)
    unstable[110:150, 20:60] = 0.5  # above 0 and above -1, not above +1
    unstable[120:140, 30:50] = 2.0  # above +1: stability 400 / 1600
    return SceneSegmenter(H, W, [
        obj((20, 60, 20, 60), rect_logits(H, W, 20, 60, 20, 60), 0.95),  # A: kept
        obj((20, 60, 110, 150), rect_logits(H, W, 20, 60, 110, 150), 0.5),  # B: low predicted IoU
        obj((110, 150, 20, 60), unstable, 0.95),  # C: unstable
        obj((100, 150, 100, 150), rect_logits(H, W, 110, 160, 110, 160), 0.93),  # D1: a duplicate of D2 ...
        obj((100, 150, 150, 200), rect_logits(H, W, 111, 160, 110, 160), 0.97),  # D2: ... scored higher
        obj((70, 80, 70, 80), rect_logits(H, W, 70, 73, 70, 73), 0.99),  # E: 9 pixels
    ])


def _boxes(anns) -> list[list[float]]:
    return [a["bbox"] for a in anns]


A_BOX, B_BOX, C_BOX = [20.0, 20.0, 39.0, 39.0], [110.0, 20.0, 39.0, 39.0], [20.0, 110.0, 39.0, 39.0]
D1_BOX, D2_BOX, E_BOX = [110.0, 110.0, 49.0, 49.0], [110.0, 111.0, 49.0, 48.0], [70.0, 70.0, 2.0, 2.0]


def test_amg_keeps_what_passes_every_filter_best_first():
    seg = _scene()
    anns = sam.generate_masks(seg, coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG))
    assert _boxes(anns) == [D2_BOX, A_BOX]  # SA-1B boxes: w = x1 - x0 of the inclusive box
    d2, a = anns
    assert (a["area"], a["predicted_iou"], a["stability_score"]) == (1600, pytest.approx(0.95), 1.0)
    assert a["point_coords"] == [[25.0, 25.0]] and a["crop_box"] == [0.0, 0.0, 200.0, 200.0]
    assert d2["point_coords"] == [[175.0, 125.0]]
    for ann in anns:  # RLE round trip and the box convention
        m = decode(ann["segmentation"])
        assert int(m.sum()) == ann["area"]
        x, y, w, h = pixel_box(m)
        assert ann["bbox"] == [x, y, w - 1, h - 1]
    assert seg.encodes == 1 and seg.decodes == [16]  # 16 points in one decoder call


def test_amg_predicted_iou_filter():
    anns = sam.generate_masks(_scene(), coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG, pred_iou_thresh=0))
    assert B_BOX in _boxes(anns)
    assert next(a for a in anns if a["bbox"] == B_BOX)["predicted_iou"] == pytest.approx(0.5)
    strict = sam.generate_masks(_scene(), coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG, pred_iou_thresh=0.5))
    assert B_BOX not in _boxes(strict)  # SAM keeps IoU > threshold, not >=


def test_amg_stability_filter():
    anns = sam.generate_masks(_scene(), coordinate_image(H, W),
                              sam.AmgConfig(**SCENE_CFG, stability_score_thresh=0))
    c = next(a for a in anns if a["bbox"] == C_BOX)
    assert c["stability_score"] == pytest.approx(0.25)
    assert c["area"] == 1600  # binarized at 0: the ring counts
    kept = sam.generate_masks(_scene(), coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG, stability_score_thresh=0.25))
    assert C_BOX in _boxes(kept)  # SAM keeps stability >= threshold
    assert C_BOX not in _boxes(sam.generate_masks(_scene(), coordinate_image(H, W),
                                                  sam.AmgConfig(**SCENE_CFG, stability_score_thresh=0.26)))


def test_amg_box_nms_and_min_area():
    no_nms = sam.generate_masks(_scene(), coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG, box_nms_thresh=1.0))
    assert _boxes(no_nms) == [D2_BOX, A_BOX, D1_BOX]
    small = sam.generate_masks(_scene(), coordinate_image(H, W), sam.AmgConfig(points_per_side=4, min_area=9))
    assert _boxes(small) == [E_BOX, D2_BOX, A_BOX]


def test_amg_points_go_in_batches_of_points_per_batch():
    seg = _scene()
    anns = sam.generate_masks(seg, coordinate_image(H, W), sam.AmgConfig(**SCENE_CFG, points_per_batch=5))
    assert seg.decodes == [5, 5, 5, 1] and seg.encodes == 1
    assert _boxes(anns) == [D2_BOX, A_BOX]


def _crop_scene() -> SceneSegmenter:
    # F: rows 60:100, columns 100:132. Crops of layer 1 on 200x200: (0,0,134,134), (0,66,134,200),
    # (66,0,200,134), (66,66,200,200); F is whole in the first and third, but lies within 20 px of the
    # first's right edge (x 131 vs 134); the second and fourth cut it at y = 66.
    return SceneSegmenter(H, W, [obj((60, 100, 100, 132), rect_logits(H, W, 60, 100, 100, 132), 0.95)])


def test_amg_crops_drop_masks_cut_by_a_crop_edge_and_prefer_the_smaller_crop():
    cfg = dict(points_per_side=4, crop_n_layers=1)
    seg = _crop_scene()
    every = sam.generate_masks(seg, coordinate_image(H, W), sam.AmgConfig(**cfg, crop_nms_thresh=1.0))
    assert seg.encodes == 5  # the image and four crops, each encoded once
    assert sorted(a["crop_box"] for a in every) == [[0.0, 0.0, 200.0, 200.0], [66.0, 0.0, 134.0, 134.0]]
    assert all(a["bbox"] == [100.0, 60.0, 31.0, 39.0] for a in every)
    [best] = sam.generate_masks(_crop_scene(), coordinate_image(H, W), sam.AmgConfig(**cfg))
    assert best["crop_box"] == [66.0, 0.0, 134.0, 134.0]
    assert best["point_coords"] == [[116.25, 83.75]]  # the crop's grid point, in image pixels


def test_crop_layout_is_transformers_generate_crop_boxes():
    from transformers import SamImageProcessor

    from ureca_cli.sam.amg import crop_boxes

    ip = SamImageProcessor()
    for h, w, layers in [(200, 200, 1), (400, 600, 2), (1500, 2250, 2), (333, 97, 3)]:
        theirs = ip.generate_crop_boxes(np.zeros((h, w, 3), dtype=np.uint8), 1024, crop_n_layers=layers,
                                        points_per_crop=2)[0]
        ours = [list(c) for c, _ in crop_boxes(h, w, layers, 512 / 1500)]
        assert ours == theirs.int().tolist()


# ---------------------------------------------------------------------- SA-1B files and trees from photos
def test_generated_masks_make_an_sa1b_file_the_tree_stage_reads(tiny, photo, tmp_path):
    from PIL import Image

    from ureca_cli.curate.tree import TreeConfig, build_tree, load_mask_file

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo).save(photos / "coffee.png")
    cfg = sam.AmgConfig(points_per_side=6, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    rec = sam.generate_mask_file(tiny, photos / "coffee.png", cfg)
    assert rec["image"] == {"image_id": "coffee", "width": 600, "height": 400, "file_name": "coffee.png"}
    anns = rec["annotations"]
    assert len(anns) > 10 and [a["id"] for a in anns] == list(range(len(anns)))
    for ann in anns:
        m = decode(ann["segmentation"])
        assert m.shape == (400, 600) and int(m.sum()) == ann["area"] > 0
        x, y, w, h = pixel_box(m)
        assert ann["bbox"] == [x, y, w - 1, h - 1]
    out = sam.write_mask_file(rec, tmp_path / "masks")
    assert out == tmp_path / "masks" / "coffee.json"
    assert [p.name for p in out.parent.iterdir()] == ["coffee.json"]  # no temporary file left behind
    assert orjson.loads(out.read_bytes()) == rec
    tcfg = TreeConfig(images=photos)
    mf = load_mask_file(out, tcfg)
    assert (mf.width, mf.height, mf.image_id) == (600, 400, "coffee")
    tree = build_tree(out, tcfg)
    assert len(tree["nodes"]) == len(anns)
    assert [n["bbox"] for n in tree["nodes"]] == [a["bbox"] for a in anns]  # the file's own boxes are kept
    assert {n["predicted_iou"] for n in tree["nodes"]} == {a["predicted_iou"] for a in anns}


def test_shared_photos_give_sa1b_files(tiny, shared_data, tmp_path):
    from ureca_cli.curate.tree import TreeConfig, build_tree

    photo_path = shared_data / "images" / "chelsea.png"
    if not photo_path.is_file():
        pytest.skip("../shared/data/images/chelsea.png is absent")
    cfg = sam.AmgConfig(points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    out = sam.write_mask_file(sam.generate_mask_file(tiny, photo_path, cfg), tmp_path)
    tree = build_tree(out, TreeConfig(images=photo_path.parent))
    assert tree["image_id"] == "chelsea" and tree["nodes"]


def test_missing_photo_is_an_input_error(tiny, tmp_path):
    with pytest.raises(InputError, match="image file '.*nothere.jpg' not found"):
        sam.generate_mask_file(tiny, tmp_path / "nothere.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="image file '.*bad.jpg' does not decode"):
        sam.generate_mask_file(tiny, bad)


def test_mask_file_named_after_an_id_stays_in_its_folder(tmp_path):
    """Without a photo name the SA-1B file is named after its image id, through the one helper for names made
    from ids (records.file_name): no id reaches outside the folder."""
    from ureca_cli.sam.sa1b import sa1b_record, write_mask_file

    out = tmp_path / "a" / "masks"
    for image_id in ("../../x", "..", "a/b"):
        path = write_mask_file(sa1b_record([], image_id=image_id, width=4, height=3, file_name=""), out)
        assert path.parent == out and path.is_file()
    assert len(list(out.iterdir())) == 3 and not (tmp_path / "x.json").exists()
