"""The synthetic shapes task: deterministic, captions follow the grammar, and they need the mask."""

from __future__ import annotations

import json
import re

import numpy as np

from ureca_cli import masks as M
from ureca_cli.train.synthetic import (
    PLACE_PHRASE,
    SceneConfig,
    attribute_accuracy,
    make_scene,
    parse_caption,
    write_dataset,
)

GRAMMAR = re.compile(
    r"^an? (red|green|blue|yellow|purple|orange) (square|circle|triangle) "
    r"(" + "|".join(PLACE_PHRASE.values()) + r")"
    r"( (inside|containing) an? (red|green|blue|yellow|purple|orange) (square|circle|triangle))?$"
)


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_dataset_is_deterministic_and_follows_the_grammar(tmp_path):
    cfg = SceneConfig(sizes=((96, 96), (144, 96)))
    a = write_dataset(tmp_path / "a", train=6, test=2, seed=3, cfg=cfg)
    b = write_dataset(tmp_path / "b", train=6, test=2, seed=3, cfg=cfg)
    ra, rb = _read(a["train"]), _read(b["train"])
    assert [(r["id"], r["caption"], r["rle"]) for r in ra] == [(r["id"], r["caption"], r["rle"]) for r in rb]
    assert (tmp_path / "a/images/syn3_00000.png").read_bytes() == (tmp_path / "b/images/syn3_00000.png").read_bytes()
    test = _read(a["test"])
    assert not {r["image_id"] for r in ra} & {r["image_id"] for r in test}
    for r in ra + test:
        assert GRAMMAR.match(r["caption"]), r["caption"]
        assert r["id"] == f"{r['image_id']}/{r['id'].split('/')[1]}"
        assert parse_caption(r["caption"]) == {k: r["attributes"][k] for k in ("colour", "shape", "position")}
    # several regions per image, captions unique within an image: the image alone does not say which
    by_image = {}
    for r in ra:
        by_image.setdefault(r["image_id"], []).append(r["caption"])
    assert all(len(c) >= 2 and len(set(c)) == len(c) for c in by_image.values())
    images = _read(a["train_images"])
    assert sum(len(rec["nodes"]) for rec in images) == len(ra)
    assert all(rec["scene_caption"] for rec in images)


def test_masks_match_the_caption():
    cfg = SceneConfig()
    for seed in range(20):
        width, height, shapes = make_scene(seed, cfg)
        from ureca_cli.train.synthetic import render

        img, masks = render(width, height, shapes)
        arr = np.asarray(img)
        for s, m in zip(shapes, masks, strict=True):
            box = M.pixel_box(m)
            assert box is not None
            x, y, w, h = box
            assert abs(x - s.x0) <= 2 and abs(y - s.y0) <= 2 and abs(w - s.side) <= 3 and abs(h - s.side) <= 3
            if s.parent is not None:  # an inner shape lies inside its container's mask
                assert (masks[s.parent][m > 0]).all()
            if not s.children:  # a leaf's pixels are its colour
                from ureca_cli.train.synthetic import COLOURS

                inside = arr[m > 0]
                share = (np.abs(inside.astype(int) - COLOURS[s.colour]).sum(1) < 10).mean()
                assert share > 0.9


def test_small_regions_exist_and_accuracy_scores_them(tmp_path):
    paths = write_dataset(tmp_path, train=0, test=10, seed=0)
    refs = _read(paths["test"])
    assert any(r["attributes"]["small"] for r in refs) and not all(r["attributes"]["small"] for r in refs)
    perfect = attribute_accuracy({r["id"]: r["caption"] for r in refs}, refs)
    assert perfect["all"] == 100 and perfect["small_all"] == 100
    wrong = {r["id"]: r["caption"].replace(r["attributes"]["colour"], "blue" if r["attributes"]["colour"] != "blue"
                                           else "red", 1) for r in refs}
    acc = attribute_accuracy(wrong, refs)
    assert acc["colour"] == 0 and acc["shape"] == 100 and acc["all"] == 0
    assert attribute_accuracy({}, refs)["all"] == 0


def test_cli_entry(tmp_path, capsys):
    from ureca_cli.train.synthetic import main

    assert main([str(tmp_path), "--train", "2", "--test", "1", "--size", "64x64"]) == 0
    assert len(list((tmp_path / "images").glob("*.png"))) == 3
    capsys.readouterr()
    assert main([str(tmp_path), "--size", "10x10"]) == 2
    out, err = capsys.readouterr()
    assert not out and err.startswith("synthetic: error: ")  # messages to stderr, stdout for data
