"""Visual prompts on synthetic masks over real photos (skipped without ../shared) and a generated image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ureca_cli.errors import InputError
from ureca_cli.images import load_image
from ureca_cli.masks import pixel_box
from ureca_cli.visual.prompter import (
    YELLOW,
    VisualPrompter,
    VisualSettings,
    _erode,
    _shift_or,
    contour_band,
    fill_holes,
)


def _disk(h, w, cy, cx, r):
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _noise_image(w=240, h=180, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _dilate(m, k):
    for _ in range(k):
        m = _shift_or(m)
    return m


def _erode_k(m, k):
    for _ in range(k):
        m = _erode(m)
    return m


def _boundary(m):
    """Pixels within one pixel of the boundary between mask and background."""
    m = m.astype(bool)
    return _dilate(m, 1) & ~_erode(m)


@pytest.fixture(params=["astronaut.png", "coffee.png", "noise"])
def photo(request):
    if request.param == "noise":
        return _noise_image()
    from tests.conftest import SHARED_DATA

    p = SHARED_DATA / "images" / request.param
    if not p.is_file():
        pytest.skip("../shared/data is absent")
    return load_image(p)


def _ring_mask(h, w):
    """A disk with a square hole, away from the image edges."""
    m = _disk(h, w, h // 2, w // 2, min(h, w) // 3)
    s = min(h, w) // 12
    m[h // 2 - s : h // 2 + s, w // 2 - s : w // 2 + s] = 0
    return m


def test_blurred_crop_keeps_region_and_blurs_background(photo):
    w, h = photo.size
    mask = _ring_mask(h, w)
    vp = VisualPrompter(photo)
    out = np.asarray(vp.blurred_crop(mask)).astype(int)
    x, y, bw, bh = pixel_box(mask)
    assert out.shape == (bh, bw, 3)  # the crop is the box of the mask's own pixels
    src = np.asarray(photo).astype(int)[y : y + bh, x : x + bw]
    win = mask[y : y + bh, x : x + bw].astype(bool)
    assert (out[win] == src[win]).all()  # inside: unchanged, boundary included (no contour on the crop)
    outside = ~_dilate(win, 2)
    # outside: blurred, so much smoother than the photo there
    def roughness(a):
        return np.abs(np.diff(a, axis=1))[outside[:, 1:] & outside[:, :-1]].mean()

    assert roughness(out) < 0.35 * roughness(src)


def test_contour_is_yellow_and_on_the_boundary(photo):
    w, h = photo.size
    mask = _ring_mask(h, w)
    vp = VisualPrompter(photo)
    out = np.asarray(vp.full_contour(mask)).astype(int)
    src = np.asarray(photo).astype(int)
    yellow = (out == YELLOW).all(axis=2) & ~(src == YELLOW).all(axis=2)
    changed = (out != src).any(axis=2)
    m = mask.astype(bool)
    near = _dilate(_boundary(fill_holes(m)), 1)  # within the contour's width of the outer boundary
    assert yellow.any()
    assert (changed <= near).all()  # nothing changed away from the outer boundary
    assert (changed == yellow | (changed & (src == YELLOW).all(axis=2))).all()
    # the hole's edge gets no contour (outer contour only)
    hole = fill_holes(m) & ~m
    assert not (yellow & _dilate(hole, 1) & ~_dilate(_boundary(fill_holes(m)), 0)).any()
    # inside, away from the boundary: unchanged; the band covers the whole outer boundary
    deep = _erode_k(m, 3)
    assert (out[deep] == src[deep]).all()
    outer_edge = fill_holes(m) & ~_erode(fill_holes(m))
    assert yellow[outer_edge].mean() > 0.99


def test_contour_band_is_three_pixels_centred():
    m = np.zeros((40, 40), np.uint8)
    m[10:30, 10:30] = 1
    band = contour_band(m, 3)
    row = band[20]
    assert list(np.flatnonzero(row)) == [9, 10, 11, 28, 29, 30]  # one outside, edge, one inside, each side
    assert contour_band(m, 5)[20].sum() == 10
    assert not contour_band(np.zeros((5, 5), np.uint8)).any()


def test_fill_holes_spiral_and_edges():
    m = np.ones((30, 30), np.uint8)
    m[5:25, 5:25] = 0
    m[10:20, 10:20] = 1
    m[13:17, 13:17] = 0  # a hole inside an island inside a hole
    filled = fill_holes(m)
    assert filled.all()
    edge = np.zeros((10, 10), np.uint8)
    edge[:, :5] = 1  # touches the border: nothing to fill, edge counts as boundary
    assert (fill_holes(edge) == edge.astype(bool)).all()
    assert contour_band(edge)[5, 0]


def test_part_in_context_crops_to_main_object(photo):
    w, h = photo.size
    main = _disk(h, w, h // 2, w // 2, min(h, w) // 3)
    part = _disk(h, w, h // 2, w // 2 + min(h, w) // 8, min(h, w) // 10)
    vp = VisualPrompter(photo)
    out = np.asarray(vp.contour_in_context(part, main)).astype(int)
    x, y, bw, bh = pixel_box(main)
    assert out.shape == (bh, bw, 3)
    src = np.asarray(photo).astype(int)[y : y + bh, x : x + bw]
    mwin, pwin = main[y : y + bh, x : x + bw].astype(bool), part[y : y + bh, x : x + bw].astype(bool)
    band = _dilate(_boundary(pwin), 1)
    sharp = mwin & ~band
    assert (out[sharp] == src[sharp]).all()  # main object sharp
    assert (out[band & ~_boundary(pwin) & (out != src).any(axis=2)] == YELLOW).all()
    assert (out[_boundary(pwin) & pwin] == YELLOW).all()
    corner = ~_dilate(mwin, 2)
    assert (out[corner] != src[corner]).any(axis=1).mean() > 0.5  # outside the main object: blurred
    # a main object in context: the whole photo, region contoured, nothing blurred
    whole = np.asarray(vp.contour_in_context(main)).astype(int)
    assert whole.shape == (h, w, 3)
    far = ~_dilate(_boundary(main.astype(bool)), 2)
    assert (whole[far] == np.asarray(photo).astype(int)[far]).all()


def test_max_side_downscales_and_keeps_contour_width():
    img = _noise_image(400, 300)
    m = _disk(300, 400, 150, 200, 100)
    vp = VisualPrompter(img, VisualSettings(max_side=100))
    full = vp.full_contour(m)
    assert max(full.size) == 100 and full.size == (100, 75)
    arr = np.asarray(full)
    row = (arr[37] == YELLOW).all(axis=1)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
    assert list(runs) == [3, 3]
    assert max(vp.blurred_crop(m).size) == 100


def test_bad_masks_and_images(tmp_path):
    img = _noise_image(50, 40)
    vp = VisualPrompter(img)
    with pytest.raises(InputError, match="empty"):
        vp.blurred_crop(np.zeros((40, 50), np.uint8))
    with pytest.raises(InputError, match="40x50"):
        vp.blurred_crop(np.ones((50, 40), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="does not decode"):
        load_image(bad)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    good = tmp_path / "good.png"
    img.save(good)
    with pytest.raises(InputError, match="50x40 but the record says 40x50"):
        load_image(good, width=40, height=50)
