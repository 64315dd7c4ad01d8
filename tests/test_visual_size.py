"""The size prompt pictures are drawn at (InternVL's tile budget, --max-side), that drawing them small gives the
picture a model would see of the full-size drawing, and the pieces that make annotate's drawing cheap: masks
decoded over their box, hole filling, JPEG pictures spliced from a shared backdrop, data URLs made once."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.servers.trees import make_image, make_tree_record
from ureca_cli.errors import InputError
from ureca_cli.masks import encode, pixel_box, resize_nearest
from ureca_cli.masks.boxed import BoxedMask, boxed_node_mask, decode_boxed
from ureca_cli.visual.jpeg import JpegEncoder, Overlay, Picture, encode_jpeg
from ureca_cli.visual.prompter import YELLOW, VisualPrompter, VisualSettings, _shift_or, fill_holes
from ureca_cli.visual.tiles import TileBudget

SIZES = [37, 100, 300, 447, 448, 449, 700, 896, 1000, 1344, 1500, 1792, 2000, 2250, 3000, 5376, 6000]


def _dilate(m, k):
    for _ in range(k):
        m = _shift_or(m)
    return m


def _photo(w, h, seed=0):
    """A textured RGB image (the blur and the resampling have something to change)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    im = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)).astype(np.int16)
    return Image.fromarray(np.clip(im + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8))


def _ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.ogrid[:h, :w]
    return ((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1).astype(np.uint8)


# ------------------------------------------------------------------------------------------ the tile budget
def test_tile_budget_keeps_every_pixel_internvl_keeps():
    """For any picture, the fitted size covers the canvas of the grid transformers' processor picks and of the
    grid the released dynamic_preprocess picks, keeps the aspect ratio, is never larger, and leads the processor
    to the same grid."""
    from ureca_cli.model.tiling import released_grid, tile_grid

    budget = TileBudget()
    rng = np.random.default_rng(0)
    sizes = [(w, h) for w in SIZES for h in SIZES] + [tuple(int(v) for v in rng.integers(16, 6000, 2)) for _ in range(150)]
    for w, h in sizes:
        fw, fh = budget.fit(w, h)
        assert fw <= w and fh <= h
        cols, rows = tile_grid(h, w, 448, 1, 12)
        rcols, rrows = released_grid(w, h, 448, 1, 12)
        for c, r in ((cols, rows), (rcols, rrows)):
            assert fw >= min(w, c * 448) and fh >= min(h, r * 448), (w, h, fw, fh, c, r)
        if (fw, fh) != (w, h):
            assert abs(fw / w - fh / h) < 1 / min(w, h)  # one scale for both sides, to a pixel
            assert tile_grid(fh, fw, 448, 1, 12) == (cols, rows), (w, h)
            assert released_grid(fw, fh, 448, 1, 12) == (rcols, rrows), (w, h)
            # and it is the smallest such size: one pixel less on the binding side would not cover
            cw, ch = budget.canvas(w, h)
            assert fw == cw or fh == ch


def test_tile_budget_sizes_of_sa1b_photos_and_crops():
    budget = TileBudget()
    assert budget.fit(1500, 2250) == (896, 1344)  # 2:3 -> a 2x3 grid
    assert budget.fit(2250, 1500) == (1344, 896)
    assert budget.fit(2000, 1500) == (1792, 1344)  # 4:3 -> 4x3
    assert budget.fit(1500, 1500) == (1344, 1344)  # square: 1x1, 2x2 and 3x3 tie; the largest is kept
    assert budget.fit(2250, 1000) == (2250, 1000)  # halfway between 2x1 and 5x2: any downscale breaks the tie
    assert budget.fit(300, 500) == (300, 500)  # a region's crop smaller than its grid: as it is
    assert budget.fit(600, 1350) == (600, 1350)  # 2x5 grid, 896x2240: the model enlarges it
    assert TileBudget(tile=64, max_tiles=4).fit(400, 600) == (86, 128)  # 1x2 grid: 64x128
    with pytest.raises(InputError):
        TileBudget(tile=8)


def test_explicit_max_side_wins_and_zero_is_full_size():
    auto = VisualSettings.for_max_side(None)
    assert auto.tiles == TileBudget() and auto.max_side is None
    assert auto.size(1500, 2250) == (896, 1344)
    given = VisualSettings.for_max_side(300)
    assert given.tiles is None and given.size(1500, 2250) == (200, 300)
    assert VisualSettings(max_side=300, tiles=TileBudget()).size(1500, 2250) == (200, 300)  # max_side first
    assert VisualSettings.for_max_side(2000).size(1500, 2250) == (1333, 2000)  # larger than the budget: as asked
    off = VisualSettings.for_max_side(0)
    assert off.size(1500, 2250) == (1500, 2250) and off.describe()["size"] == "full"
    assert auto.describe()["size"] == "internvl tiles: 12 x 448"
    with pytest.raises(InputError, match="--max-side 8"):
        VisualSettings(max_side=8)


# ------------------------------------------------------------------------ drawn small = drawn big, resized
@pytest.fixture(scope="module")
def scene():
    h, w = 600, 400
    img = _photo(w, h)
    main = _ellipse(h, w, 200, 300, 150, 250)
    part = _ellipse(h, w, 230, 250, 50, 70)
    return img, main, part


def test_downscaled_prompts_equal_full_size_drawing_resized(scene):
    """Drawn at the budget's size, each prompt is the full-size drawing resized to that size (bilinear), except
    within 2 pixels of a mask's edge (the mask is resampled by nearest neighbour, the full-size composite is
    blended) and in the contour, which stays 3 pixels wide instead of being thinned to a blend: there, every pixel
    the resized full-size contour changes lies within 1 pixel of ours, and ours within 2 pixels of it.
    Tolerance elsewhere: a mean difference under 1.5 levels and no pixel off by more than 24 (the blur is
    upsampled once instead of upsampled and then reduced)."""
    img, main, part = scene
    h, w = main.shape
    budget = TileBudget(tile=64, max_tiles=4)
    small = VisualPrompter(img, VisualSettings(sigma=20, tiles=budget))
    big = VisualPrompter(img, VisualSettings(sigma=20))
    for name, args, frame in [("blurred_crop", (main,), main), ("contour_in_context", (part, main), main),
                              ("full_contour", (part,), None)]:
        ours = getattr(small, name)(*args)
        x, y, bw, bh = pixel_box(frame) if frame is not None else (0, 0, w, h)
        assert ours.size == budget.fit(bw, bh) and ours.size[0] < bw
        ref = getattr(big, name)(*args).resize(ours.size, Image.Resampling.BILINEAR)
        a, b = np.asarray(ours).astype(int), np.asarray(ref).astype(int)
        near = np.zeros(a.shape[:2], dtype=bool)
        for m in args:
            r = resize_nearest(m[y : y + bh, x : x + bw], ours.size[1], ours.size[0]).astype(bool)
            near |= _dilate(r, 2) & _dilate(~r, 2)
        diff = np.abs(a - b).max(axis=2)
        assert diff[~near].mean() < 1.5 and diff[~near].max() <= 24, (name, diff[~near].mean(), diff[~near].max())
        if name != "blurred_crop":
            backdrop = (big.blurred_crop(main) if name == "contour_in_context" else big.plain())
            plain = np.asarray(backdrop.resize(ours.size, Image.Resampling.BILINEAR)).astype(int)
            theirs = np.abs(b - plain).max(axis=2) > 30  # where the resized full-size contour shows
            yellow = (a == YELLOW).all(axis=2)
            assert theirs.any() and yellow.any()
            assert (theirs <= _dilate(yellow, 1)).all() and (yellow <= _dilate(theirs, 2)).all(), name


def test_crop_is_cut_at_full_resolution_then_resized(scene):
    """The crop box comes from the full-resolution mask, and only the crop is resampled: a region whose box
    starts at an odd pixel and has a one-pixel spur gives exactly photo.crop(box).resize(size) inside the mask,
    which resizing the photo first and cropping after would not."""
    img, _, _ = scene
    h, w = 600, 400
    m = _ellipse(h, w, 201, 313, 90, 170)
    m[140:143, 201] = 1  # a one-pixel spur above the ellipse: it sets the box's top
    box = pixel_box(m)
    assert box[1] == 140
    vp = VisualPrompter(img, VisualSettings(sigma=20, max_side=64))
    out = vp.blurred_crop(m)
    x, y, bw, bh = box
    assert out.size == VisualSettings(max_side=64).size(bw, bh)
    want = np.asarray(img.resize(out.size, Image.Resampling.BILINEAR, box=(x, y, x + bw, y + bh),
                                 reducing_gap=2.0)).astype(int)
    keep = resize_nearest(m[y : y + bh, x : x + bw], out.size[1], out.size[0]).astype(bool)
    got = np.asarray(out).astype(int)
    assert (got[keep] == want[keep]).all()
    # resizing the whole photo first, then cropping the scaled box, is a different picture
    s = out.size[0] / bw
    first = img.resize((round(w * s), round(h * s)), Image.Resampling.BILINEAR)
    crop_after = np.asarray(first.crop((round(x * s), round(y * s), round(x * s) + out.size[0],
                                        round(y * s) + out.size[1]))).astype(int)
    assert (crop_after[keep] != want[keep]).any()


# ----------------------------------------------------------------------------------- masks over their box
def test_boxed_masks_equal_full_decoding():
    rng = np.random.default_rng(3)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random() * 0.4).astype(np.uint8)
        if t % 3 == 0:  # a compact blob somewhere
            m[:] = 0
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, 9), x0 : x0 + rng.integers(1, 9)] = 1
        rle = encode(m)
        got = decode_boxed(rle)
        if not m.any():
            assert got is None
            continue
        assert got.box == pixel_box(m) and got.shape == (h, w) and (got.full() == m).all()
        assert got.bits.flags.c_contiguous
        listed = decode_boxed({"size": [h, w], "counts": _uncompressed(m)})  # the uncompressed form too
        assert listed.box == got.box and (listed.bits == got.bits).all()
    node = {"id": 5, "rle": {"size": [4, 4], "counts": "bad!"}}
    with pytest.raises(InputError, match=r"^t.jsonl:1 node 5: cannot decode RLE"):
        boxed_node_mask(node, 4, 4, "t.jsonl:1")
    with pytest.raises(InputError, match="node 6: its mask is empty"):
        boxed_node_mask({"id": 6, "rle": encode(np.zeros((4, 4), np.uint8))}, 4, 4, "t.jsonl:1")
    with pytest.raises(InputError, match="node 7: mask size 4x4 differs from the record's 5x4"):
        boxed_node_mask({"id": 7, "rle": encode(np.ones((4, 4), np.uint8))}, 4, 5, "t.jsonl:1")


def _uncompressed(m):
    flat = m.T.ravel()
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    return [int(change[0])] + np.diff(change).tolist()


def test_prompts_from_boxed_masks_equal_prompts_from_bitmaps(scene):
    img, main, part = scene
    vp = VisualPrompter(img, VisualSettings(sigma=20, tiles=TileBudget(tile=64, max_tiles=4)))
    bm, bp = BoxedMask.from_bitmap(main), BoxedMask.from_bitmap(part)
    for name, a, b in [("blurred_crop", (main,), (bm,)), ("contour_in_context", (part, main), (bp, bm)),
                       ("full_contour", (part,), (bp,)), ("crop", (part,), (bp,))]:
        assert np.array_equal(np.asarray(getattr(vp, name)(*a)), np.asarray(getattr(vp, name)(*b))), name


def test_fill_holes_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(5)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 35, 2))
        m = rng.random((h, w)) < rng.random()
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m)), (h, w)
    spiral = np.zeros((61, 61), bool)
    for k in range(0, 30, 4):
        spiral[k, k : 61 - k] = spiral[k : 61 - k, 60 - k] = spiral[60 - k, k + 2 : 61 - k] = True
        spiral[k + 2 : 61 - k, k] = True
    assert np.array_equal(fill_holes(spiral), ndimage.binary_fill_holes(spiral))


# ----------------------------------------------------------------------------------------- JPEG splicing
def test_spliced_jpeg_is_the_whole_encoding_byte_for_byte():
    base = _photo(203, 181, seed=2)  # neither side a multiple of 16: partial MCUs at the right and bottom
    enc = JpegEncoder()
    rng = np.random.default_rng(7)
    # (x, y, w, h) of the overlay: corners, edges, one MCU, the whole picture, and random boxes
    cases = [(0, 0, 5, 5), (203 - 9, 181 - 9, 9, 9), (40, 0, 1, 181), (16, 16, 16, 16), (0, 0, 203, 181),
             (190, 30, 13, 40), (3, 170, 60, 11)]
    for _ in range(12):
        w, h = (int(v) for v in rng.integers(1, 80, 2))
        cases.append((int(rng.integers(0, 203 - w + 1)), int(rng.integers(0, 181 - h + 1)), w, h))
    for x, y, w, h in cases:
        pic = Picture(base, Overlay(rng.random((h, w)) < 0.5, x, y, YELLOW))
        data = enc.encode(pic)
        assert data == encode_jpeg(pic.image(), restart_blocks=1), (x, y, w, h)
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (203, 181)
    assert enc.spliced == len(cases) and enc.whole == 0
    assert enc.encode(Picture(base)) == encode_jpeg(base, restart_blocks=1)


def test_jpeg_without_restart_markers_is_encoded_whole(monkeypatch):
    """A strip written with other tables or without restart markers is never spliced: the picture is encoded
    whole."""
    from ureca_cli.visual import jpeg

    base = _photo(64, 80)
    pic = Picture(base, Overlay(np.ones((5, 5), bool), 3, 30, YELLOW))
    real = jpeg.encode_jpeg
    monkeypatch.setattr(jpeg, "encode_jpeg", lambda im, q=92, restart_blocks=0: real(im, q, 0))
    enc = JpegEncoder()
    assert enc.encode(pic) == real(pic.image(), 92, 0) and enc.whole == 1 and enc.spliced == 0
    calls = iter([92, 80])  # the backdrop at 92, the strip at 80: other quantisation tables
    monkeypatch.setattr(jpeg, "encode_jpeg", lambda im, q=92, restart_blocks=0: real(im, next(calls, 92), restart_blocks))
    enc = JpegEncoder()
    assert enc.encode(pic) == real(pic.image(), 92, 1) and enc.whole == 1


def test_prepared_images_are_the_drawn_pictures_encoded(tmp_path):
    """The worker path (spliced JPEGs) sends exactly the encoding of the pictures the in-thread path draws."""
    from ureca_cli.curate.annotate import _ImageContext, plan_record, prepare_images

    w, h = 320, 480
    img = make_image(tmp_path / "p.jpg", w, h, seed=1)
    rec = make_tree_record(img, w, h, image_id="p", mains=2, fanout=(2, 2), seed=1)
    visual = VisualSettings(sigma=20, tiles=TileBudget(tile=64, max_tiles=6))
    out = prepare_images(json.loads(json.dumps(rec)), "t", visual)
    plan = plan_record(json.loads(json.dumps(rec)), "t")
    ctx = _ImageContext(json.loads(json.dumps(rec)), plan, "t", visual)
    assert out["full"] and out["context"] and out["crop"]
    for kind, images in out.items():
        for nid, e in images.items():
            pil = getattr(ctx, kind)(nid)
            assert e.size == pil.size and e.data == encode_jpeg(pil, restart_blocks=1), (kind, nid)
    full = out["full"][plan.mains[0]]
    assert full.size == visual.size(w, h) and full.size != (w, h)  # drawn at the budget's size


def test_an_encoded_image_is_base64_encoded_once(monkeypatch):
    import base64

    from ureca_cli.mllm import EncodedImage
    from ureca_cli.mllm.base import user
    from ureca_cli.mllm.openai import to_openai_messages

    e = EncodedImage(encode_jpeg(_photo(32, 24)), "image/jpeg", (32, 24))
    calls = []
    real = base64.b64encode
    monkeypatch.setattr(base64, "b64encode", lambda b: calls.append(len(b)) or real(b))
    a = to_openai_messages([user(e, "one")])
    b = to_openai_messages([user(e, "two")])
    url = a[0]["content"][0]["image_url"]["url"]
    assert url == b[0]["content"][0]["image_url"]["url"] and url.startswith("data:image/jpeg;base64,")
    assert calls == [len(e.data)]


# -------------------------------------------------------------------------------------- through the CLI
def test_annotate_draws_at_the_tile_budget_unless_max_side_says_otherwise(cli, tmp_path):
    from tests.servers.chat import ScriptedServer

    w, h = 2400, 600  # 4:1 -> a 4x1 grid: 1792x448 is all InternVL keeps
    img = make_image(tmp_path / "wide.jpg", w, h, seed=4)
    rec = make_tree_record(img, w, h, image_id="wide", mains=1, fanout=(1,), seed=4)
    trees = tmp_path / "trees.jsonl"
    trees.write_text(json.dumps(rec) + "\n")
    main = next(n["id"] for n in rec["nodes"] if n["role"] == "main")
    with ScriptedServer(lambda body: "a caption") as s:
        for flag, size, said in [((), (1792, 448), "internvl tiles: 12 x 448"), (("--max-side", "0"), (w, h), "full"),
                                 (("--max-side", "300"), (300, 75), "longest side 300")]:
            sent, out = tmp_path / f"sent{len(flag)}{flag[-1:]}", tmp_path / f"out{len(flag)}{flag[-1:]}.jsonl"
            r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--save-prompts", sent,
                    "--prepare-workers", "0", *flag, "-o", out)
            assert r.exit_code == 0, r.stderr
            saved = next((sent / "wide").glob(f"{main}_paragraph.*"))
            with Image.open(saved) as im:
                assert im.size == size, (flag, im.size)
            assert json.loads(out.read_text())["annotate"]["visual"]["size"] == said
