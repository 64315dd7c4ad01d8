"""masks.node_mask: the checked decode annotate and refine share."""

from __future__ import annotations

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
