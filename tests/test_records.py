"""records.check_image_record: what a stage reading image records says about other records."""

from __future__ import annotations

import pytest

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
