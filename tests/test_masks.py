"""masks: the one mask rule every stage reads masks by (checked counts, regions of their image with a pixel)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from ureca_cli import masks as M
from ureca_cli.errors import InputError


def test_node_mask_checks_size_and_emptiness():
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 1
    node = {"id": 7, "rle": M.encode(m)}
    assert (M.node_mask(node, 4, 6, "in.jsonl:1") == m).all()
    with pytest.raises(InputError, match=r"^in.jsonl:1: node 7: mask size 6x4 differs from the record's 5x4$"):
        M.node_mask(node, 4, 5, "in.jsonl:1")
    with pytest.raises(InputError, match=r"^in.jsonl:1: node 8: its mask is empty$"):
        M.node_mask({"id": 8, "rle": M.encode(np.zeros((4, 6), np.uint8))}, 4, 6, "in.jsonl:1")


def test_one_mask_rule_counts_cover_the_image_and_regions_hold_a_pixel():
    """The rule every stage reads masks by (masks.rle): counts, compressed or not, cover exactly H*W pixels
    (pycocotools filled the rest of a short uncompressed RLE with garbage, which annotate and refine took while
    tree refused it); a region is moreover of its image's size and holds a pixel (train took all-zero masks that
    caption refused)."""
    m = np.zeros((4, 6), np.uint8)
    m[1:3, 2:5] = 1
    good = M.encode(m)
    assert (M.decode(good) == m).all() and M.region_area(good, (6, 4)) == 6
    flat = m.flatten(order="F")
    runs = [len(list(g)) for _, g in itertools.groupby(flat)]
    runs = ([0] if flat[0] else []) + runs
    assert (M.decode({"size": [4, 6], "counts": runs}) == m).all()  # uncompressed, covering: fine
    for bad, why in (({"size": [4, 6], "counts": [10, 5]}, "uncompressed RLE counts do not cover the 6x4 image"),
                     ({"size": [4, 6], "counts": runs + [3]}, "uncompressed RLE counts do not cover"),
                     ({"size": [4, 7], "counts": good["counts"]}, "corrupt RLE counts (runs cover 24 pixels"),
                     ({"size": [4, 5], "counts": good["counts"]}, "corrupt RLE counts (runs cover 24 pixels")):
        with pytest.raises(InputError, match=r"^x.jsonl:2: " + re.escape(why)):
            M.decode(bad, "x.jsonl:2")
        with pytest.raises(InputError, match=re.escape(why)):
            M.region_area(bad, None, "x.jsonl:2")
        with pytest.raises(InputError, match=re.escape(why)):
            M.node_mask({"id": 3, "rle": bad}, *bad["size"], "x.jsonl:2")
    with pytest.raises(InputError, match=r"^x.jsonl:2: mask is empty \(no pixel of the region is set\)$"):
        M.region_area(M.encode(np.zeros((4, 6), np.uint8)), (6, 4), "x.jsonl:2")
    with pytest.raises(InputError, match=r"mask is 6x4 but the image is 7x4"):
        M.region_area(good, (7, 4), "x.jsonl:2")
