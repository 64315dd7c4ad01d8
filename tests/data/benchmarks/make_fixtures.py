"""Rebuild the benchmark fixtures: each benchmark's released files in their real structure and field names, a few
small synthetic images each, made-up captions and questions.

- ``refcocog/finetune_refcocog_val_with_mask.json`` (Osprey: caption on the image entry, polygon or RLE
  segmentation), ``refcocog/finetune_refcocog_val_captions.json`` (MDETR/GLaMM: caption and bbox on the
  annotation, annotation id = entry id), images in ``coco/`` (``COCO_train2014_<12 digits>.jpg``);
- ``vg/region_descriptions.json`` (the official form) and ``vg/test_caption.json`` (GRiT/GLaMM's COCO form),
  images in ``vg/images/VG_100K`` and ``vg/images/VG_100K_2`` as the release unpacks;
- ``dlc/`` (DLC-Bench: ``annotations.json`` with RLE masks, ``class_names.json``, ``qa.json``, ``images/``).

Run from the repository root: ``.venv/bin/python tests/data/benchmarks/make_fixtures.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ureca_cli import masks as M

HERE = Path(__file__).resolve().parent


def _image(path: Path, size: tuple[int, int], seed: int, boxes: list[list[int]]) -> None:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(im)
    for x, y, w, h in boxes:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _rect_rle(w: int, h: int, box: list[int]) -> dict:
    m = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    m[y:y + bh, x:x + bw] = 1
    return M.encode(m)


def refcocog() -> None:
    w, h = 64, 48
    coco_ids = [101, 102, 103]
    boxes = {101: [[4, 6, 20, 18], [34, 10, 24, 30]], 102: [[10, 8, 40, 30]], 103: [[2, 2, 30, 20]]}
    for cid in coco_ids:
        _image(HERE / "coco" / f"COCO_train2014_{cid:012d}.jpg", (w, h), cid, boxes[cid])
    # one referring expression per image entry, as MDETR's files hold them
    entries = [(101, 0, "the red block on the left"), (101, 1, "a tall box at the right side"),
               (102, 0, "the big square in the middle"), (103, 0, "small thing in the top corner")]
    osprey_images, osprey_anns, glamm_images, glamm_anns = [], [], [], []
    for k, (cid, b, caption) in enumerate(entries):
        x, y, bw, bh = boxes[cid][b]
        image = {"file_name": f"COCO_train2014_{cid:012d}.jpg", "height": h, "width": w, "id": k,
                 "original_id": cid, "caption": caption, "dataset_name": "refcocog",
                 "tokens_negative": [[0, len(caption)]]}
        polygon = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        seg = _rect_rle(w, h, boxes[cid][b]) if k == 2 else polygon  # Osprey's file has both kinds
        osprey_images.append(image)
        osprey_anns.append({"area": bw * bh, "iscrowd": 0, "image_id": k, "category_id": 1, "id": 1000 + k,
                            "bbox": [x, y, bw, bh], "segmentation": seg, "original_id": 50000 + k})
        glamm_images.append({k2: v for k2, v in image.items() if k2 != "tokens_negative"})
        glamm_anns.append({"image_id": k, "id": k, "caption": caption, "bbox": [x + 0.5, y + 0.25, bw - 1, bh - 0.5],
                           "area": bw * bh, "iscrowd": 0, "category_id": 1})
    cats = [{"supercategory": "object", "id": 1, "name": "object"}]
    _dump(HERE / "refcocog" / "finetune_refcocog_val_with_mask.json",
          {"info": {}, "licenses": [], "images": osprey_images, "annotations": osprey_anns, "categories": cats})
    _dump(HERE / "refcocog" / "finetune_refcocog_val_captions.json",
          {"images": glamm_images, "annotations": glamm_anns, "categories": cats})


def vg() -> None:
    w, h = 60, 40
    regions = {2401: [(11, [2, 3, 20, 15], "a white plate on a table"), (12, [30, 5, 25, 30], "green leaves")],
               2402: [(21, [0, 0, 60, 10], "blue sky above the street"), (22, [10, 12, 15, 20], "a man walking"),
                      (23, [40, 20, 18, 18], "red car parked")],
               2403: [(31, [5, 5, 50, 30], "wooden bench in a park")]}
    official, images, anns = [], [], []
    for n, (vid, regs) in enumerate(regions.items()):
        sub = "VG_100K" if n < 2 else "VG_100K_2"
        _image(HERE / "vg" / "images" / sub / f"{vid}.jpg", (w, h), vid, [b for _, b, _ in regs])
        official.append({"regions": [{"region_id": rid, "width": b[2], "height": b[3], "image_id": vid,
                                      "phrase": phrase, "y": b[1], "x": b[0]} for rid, b, phrase in regs],
                         "id": vid})
        for _rid, b, phrase in regs:  # GRiT/GLaMM's test_caption.json: one entry per region
            k = len(images)
            images.append({"id": k, "file_name": f"{vid}.jpg", "height": h, "width": w})
            anns.append({"id": k, "image_id": k, "bbox": b, "area": b[2] * b[3], "iscrowd": 0, "category_id": 1,
                         "caption": phrase})
    _dump(HERE / "vg" / "region_descriptions.json", official)
    _dump(HERE / "vg" / "test_caption.json",
          {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]})


def _positive(part: str, obj: str, attr: str, value: str) -> dict:
    return {"question": "Which of the following is applicable to the description?", "type": "positive",
            "choices": [[f"The {part} or the {obj} is not mentioned.", 0],
                        [f"The {attr} of the {part} is not mentioned, but the {part} of the {obj} is mentioned.", 0.5],
                        [f"The {attr} of the {part} is mentioned in the description but is not {value}.", -1],
                        [f"The {attr} of the {part} is mentioned in the description and is {value}.", 1]]}


def _negative(thing: str, obj: str | None = None) -> dict:
    if obj is None:
        return {"question": "Which of the following is applicable to the description?", "type": "negative",
                "subtype": "salient negative",
                "choices": [[f"The {thing} are not mentioned in the description.", 1],
                            [f"The {thing} are mentioned in the description.", -1]]}
    return {"question": "Which of the following is applicable to the description?", "type": "negative",
            "subtype": "negative part",
            "choices": [[f"The {thing} of the {obj} are not mentioned in the description.", 1],
                        [f"The {thing} of the {obj} are mentioned in the description.", -1],
                        [f"The {obj} is not mentioned in the description.", 0]]}


def dlc() -> None:
    w, h = 56, 42
    anns_by_image = {
        "sa_dlc_0001.jpg": [(3001, "wild bird", [4, 4, 24, 20]), (3002, "boat", [30, 20, 22, 18])],
        "sa_dlc_0002.jpg": [(3003, "shoes", [10, 10, 30, 24])],
        "sa_dlc_0003.jpg": [(3004, "bus", [2, 8, 50, 30]), (3005, "traffic light", [40, 2, 10, 16])],
    }
    images, anns, classes, qa = [], [], {}, {}
    for k, (file_name, regs) in enumerate(anns_by_image.items()):
        _image(HERE / "dlc" / "images" / file_name, (w, h), 77 + k, [b for _, _, b in regs])
        images.append({"id": 500 + k, "file_name": file_name, "height": h, "width": w})
        for aid, cls, b in regs:
            anns.append({"id": aid, "image_id": 500 + k, "category_id": 1, "segmentation": _rect_rle(w, h, b),
                         "bbox": b, "area": b[2] * b[3], "iscrowd": 0})
            classes[str(aid)] = cls
    qa["3001"] = [_positive("wing", "wild bird", "color", "grey or brown"),
                  _positive("tail", "wild bird", "shape", "fan-like"), _negative("claws", "wild bird"),
                  _negative("boats")]
    qa["3002"] = [_positive("hull", "boat", "color", "white"), _negative("sails", "boat")]
    qa["3003"] = [_positive("laces", "shoes", "color", "black"), _positive("sole", "shoes", "color", "white"),
                  _negative("socks")]
    qa["3004"] = [_positive("windows", "bus", "shape", "rectangular"), _negative("passengers")]
    qa["3005"] = [_positive("light", "traffic light", "color", "red")]  # a region with no negative question
    _dump(HERE / "dlc" / "annotations.json",
          {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]})
    _dump(HERE / "dlc" / "class_names.json", classes)
    _dump(HERE / "dlc" / "qa.json", qa)


if __name__ == "__main__":
    refcocog()
    vg()
    dlc()
