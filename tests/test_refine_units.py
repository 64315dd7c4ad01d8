"""Pieces of `ureca refine`: DINOv2 region features on real pixels, masked pooling, similar sets, the
set-of-mark image, and the prompt templates' wording."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.refine_fixtures import SPOTS, pasted_photo
from ureca_cli.curate.features import (
    FeatureConfig,
    RegionEmbedder,
    cosine_matrix,
    letterbox,
    patch_grid,
    patch_weights,
    similar_sets,
)
from ureca_cli.visual.setofmark import BLUE, LABEL_BOX, MarkSettings, colour, set_of_mark, union_box


@pytest.fixture(scope="module")
def vits14():
    """The random-weight ViT-S/14 at real size (the bench's model), shared by the tests of this module."""
    emb = RegionEmbedder(FeatureConfig(model="random:dinov2-vits14"))
    emb.model  # noqa: B018
    return emb.model


@pytest.mark.parametrize("mode", ["crop", "masked-pool"])
def test_pasted_pixels_are_each_others_look_alikes(shared_data, tmp_path, vits14, mode):
    """The same pixels pasted twice into a real photo, plus a third different region: with real (random-weight)
    DINOv2 features the identical pair is more similar than any pair with the third, and a threshold between
    the two puts exactly the pair in each other's similar set."""
    from ureca_cli.visual.prompter import VisualPrompter

    path, spots = pasted_photo(shared_data, tmp_path / "pasted.png")
    image = Image.open(path).convert("RGB")
    masks = [spots["A"], spots["B"], spots["C"]]
    emb = RegionEmbedder(FeatureConfig(model="random:dinov2-vits14", mode=mode), model=vits14)
    if mode == "crop":
        vp = VisualPrompter(image)
        x = emb.embed_crops([vp.blurred_crop(m) for m in masks])
    else:
        x = emb.embed_masked(image, masks)
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sim = cosine_matrix(x)
    assert sim[0, 1] > max(sim[0, 2], sim[1, 2])
    threshold = (sim[0, 1] + max(sim[0, 2], sim[1, 2])) / 2
    sets = similar_sets(sim, threshold, None)
    assert [j for j, _ in sets[0]] == [1] and [j for j, _ in sets[1]] == [0] and sets[2] == []


def test_patch_weights_area_fractions():
    m = np.zeros((28, 42), np.uint8)
    m[0:14, 0:7] = 1  # half of patch (0, 0)
    m[14:28, 28:42] = 1  # all of patch (1, 2)
    w = patch_weights(m, (2, 3)).reshape(2, 3)
    assert w[0, 0] == pytest.approx(98 / (98 + 196)) and w[1, 2] == pytest.approx(196 / (98 + 196))
    assert w.sum() == pytest.approx(1) and w[0, 1] == w[0, 2] == w[1, 0] == w[1, 1] == 0
    assert not patch_weights(np.zeros((10, 10), np.uint8), (2, 2)).any()
    # uneven grids: every pixel lands in exactly one cell
    m = np.ones((37, 53), np.uint8)
    assert patch_weights(m, (5, 7)).sum() == pytest.approx(1)
    # against a plain per-pixel count on random masks and grids
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 60, 2)
        gh, gw = rng.integers(1, min(h, 16) + 1), rng.integers(1, min(w, 16) + 1)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        ref = np.zeros((gh, gw))
        ys, xs = np.nonzero(m)
        np.add.at(ref, (((ys + 0.5) * gh / h).astype(int), ((xs + 0.5) * gw / w).astype(int)), 1)
        expect = (ref / ref.sum()).ravel() if m.any() else ref.ravel()
        assert np.allclose(patch_weights(m, (gh, gw)), expect, atol=1e-6)
    assert patch_grid(400, 600, 518, 14) == (25, 37)
    assert patch_grid(5, 3000, 518, 14) == (1, 37)


def test_masked_pool_one_forward_pass_for_all_regions():
    emb = RegionEmbedder(FeatureConfig(model="random:dinov2-tiny", mode="masked-pool"))
    calls = []
    forward = emb._forward
    emb._forward = lambda batch: calls.append(batch.shape) or forward(batch)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    masks = []
    for k in range(12):
        m = np.zeros((90, 120), np.uint8)
        m[k * 7:k * 7 + 10, k * 9:k * 9 + 12] = 1
        masks.append(m)
    x = emb.embed_masked(image, iter(masks))
    assert x.shape == (12, 32) and len(calls) == 1
    assert calls[0][2] % 14 == 0 and calls[0][3] % 14 == 0
    x2 = emb.embed_masked(image, [masks[3]])
    assert np.allclose(x2[0], x[3], atol=1e-5)  # a region's embedding does not depend on the others


def test_crop_features_batched_and_letterboxed():
    emb = RegionEmbedder(FeatureConfig(model="random:dinov2-tiny", batch_size=2))
    shapes = []
    forward = emb._forward
    emb._forward = lambda batch: shapes.append(batch.shape) or forward(batch)
    crops = [Image.new("RGB", (30 + 10 * i, 50), (i * 40, 100, 200)) for i in range(5)]
    x = emb.embed_crops(crops)
    assert x.shape == (5, 32) and [s[0] for s in shapes] == [2, 2, 1] and shapes[0][2:] == (224, 224)
    lb = letterbox(Image.new("RGB", (100, 50), (255, 0, 0)), 56)
    assert lb.shape == (56, 56, 3) and tuple(lb[28, 28]) == (255, 0, 0) and tuple(lb[2, 28]) != (255, 0, 0)


def test_similar_sets_threshold_cap_and_order():
    sim = np.array([[1, .9, .85, .2], [.9, 1, .95, .1], [.85, .95, 1, .81], [.2, .1, .81, 1]], np.float32)
    sets = similar_sets(sim, 0.8, 2)
    assert [j for j, _ in sets[0]] == [1, 2] and [j for j, _ in sets[1]] == [2, 0]
    assert [j for j, _ in sets[2]] == [1, 0] and [j for j, _ in sets[3]] == [2]
    assert [j for j, _ in similar_sets(sim, 0.8, None)[2]] == [1, 0, 3]
    assert similar_sets(sim, 0.95, None)[1] == []  # strictly above the threshold


def test_set_of_mark_colours_labels_and_crop(shared_data, tmp_path):
    path, spots = pasted_photo(shared_data, tmp_path / "pasted.png")
    image = Image.open(path).convert("RGB")
    target, others = spots["A"], [spots["B"], spots["C"]]
    som = set_of_mark(image, target, others)
    boxes = []
    for name in ("A", "B", "C"):
        y, x = SPOTS[name]
        ys, xs = np.nonzero(spots[name])
        boxes.append((int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1))
    ux, uy, uw, uh = union_box(boxes, 3, image.width, image.height)
    assert som.size == (uw, uh)  # cropped to the union of the regions' boxes (plus the contour's width)
    arr = np.asarray(som)
    for i, m in enumerate([target, *others]):
        win = m[uy:uy + uh, ux:ux + uw].astype(bool)
        ys, xs = np.nonzero(win)
        # the outline's colour sits on the region's left edge, on the row through its centre
        row = int(np.median(ys))
        left = int(xs[ys == row].min())
        assert tuple(arr[row, left]) == colour(i), i
        # a dark label box at the region's centre
        cy, cx = int(ys.mean()), int(xs.mean())
        patch = arr[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3)
        assert any(tuple(p) == LABEL_BOX for p in patch) or any(tuple(p) == colour(i) for p in patch)
    assert colour(0) == BLUE and len({colour(i) for i in range(12)}) == 12
    small = set_of_mark(image, target, others, MarkSettings(max_side=200))
    assert max(small.size) == 200
    assert (np.asarray(small) == BLUE).all(axis=2).sum() > 50  # the outline keeps its width when downscaled
    with pytest.raises(Exception, match="empty"):
        set_of_mark(image, target, [np.zeros_like(target)])


PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def test_templates_share_no_8_word_run_with_the_paper():
    if not PAPER.is_dir():
        pytest.skip("../shared/paper is absent")
    paper = []
    for f in sorted(PAPER.iterdir()):
        if f.is_file():
            paper.extend(_words(f.read_text(encoding="utf-8", errors="ignore")))
    grams = {tuple(paper[i:i + 8]) for i in range(len(paper) - 7)}
    prompts = Path(__file__).resolve().parents[1] / "ureca_cli" / "prompts"
    names = sorted(prompts.glob("refine*.txt")) + sorted(prompts.glob("verify*.txt"))
    assert len(names) >= 2
    for p in names:
        w = _words(p.read_text(encoding="utf-8"))
        shared = [" ".join(w[i:i + 8]) for i in range(len(w) - 7) if tuple(w[i:i + 8]) in grams]
        assert not shared, (p.name, shared)


def test_nested_regions_get_labels_apart():
    from ureca_cli.visual.setofmark import label_spot

    yy, xx = np.mgrid[:200, :200]
    disc = [((xx - 100) ** 2 + (yy - 100) ** 2 <= r * r) for r in (20, 50, 90)]
    placed: list = []
    spots = []
    for i, m in enumerate(disc):
        others = [d for j, d in enumerate(disc) if j != i]
        x0, y0 = label_spot(m, others, (16, 20), placed, (200, 200), fallback=(100, 100))
        assert m[y0 + 10, x0 + 8]  # the label's centre lies inside its region
        placed.append((x0, y0, x0 + 16, y0 + 20))
        spots.append((x0, y0))
    assert abs(spots[0][0] + 8 - 100) <= 1 and abs(spots[0][1] + 10 - 100) <= 1  # the target at its centre
    for a in range(3):
        for b in range(a + 1, 3):
            pa, pb = placed[a], placed[b]
            assert pa[2] <= pb[0] or pb[2] <= pa[0] or pa[3] <= pb[1] or pb[3] <= pa[1]
    # a ring's label stays on the ring (its own part), not in the hole it surrounds
    ring = disc[1] & ~disc[0]
    x0, y0 = label_spot(disc[1], [disc[0]], (16, 20), [], (200, 200), fallback=(100, 100))
    assert ring[y0 + 10, x0 + 8]


def test_label_point_inside_the_band_of_a_ring():
    from ureca_cli.visual.setofmark import label_point

    yy, xx = np.mgrid[:300, :300]
    d = np.sqrt((xx - 150.0) ** 2 + (yy - 150.0) ** 2)
    ring = (d <= 100) & (d > 60)
    x, y = label_point(ring)
    assert ring[y, x] and 70 <= d[y, x] <= 90  # in the middle of the band, not on its inner edge
    ellipse = ((xx - 150) / 120.0) ** 2 + ((yy - 150) / 40.0) ** 2 <= 1
    assert label_point(ellipse) == (150, 150)
    thin = np.zeros((300, 300), bool)
    thin[10, 5:200] = True
    x, y = label_point(thin)
    assert thin[y, x]


def test_feature_settings_name_the_option_at_fault():
    from ureca_cli.curate.features import FeatureConfig
    from ureca_cli.errors import UrecaError

    with pytest.raises(UrecaError, match=r"^--pool-side 3: needs at least 14 pixels"):  # named --crop-size too
        FeatureConfig(pool_side=3)
