"""Rebuild this fixture: two small synthetic scenes in the released URECA dataset's format.

Layout (as the released data and SA-1B ship it):
- ``images/sa_9100001.jpg``, ``images/sa_9100002.jpg``: the images;
- ``masks/sa_9100001.json``, ...: SA-1B per-image JSON (``image`` + ``annotations`` with ``id``,
  ``segmentation`` as COCO compressed RLE, ``bbox`` XYWH, ``area``, ``predicted_iou``, ...);
- ``train.jsonl``: InternVL chat lines ``{"id", "image": "sa_XXXX", "mask_id", "conversations": [...]}``.

Run from the repository root: ``.venv/bin/python tests/data/internvl_chat/make_fixture.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ureca_cli.train.synthetic import SceneConfig, scene_records

HERE = Path(__file__).resolve().parent


def main() -> None:
    cfg = SceneConfig(sizes=((112, 84),), objects=(2, 3))
    lines = []
    for k, seed in enumerate((11, 12)):
        stem = f"sa_{9100001 + k}"
        png = HERE / "images" / f"{stem}.png"
        rec, regions = scene_records(seed, png, cfg)
        jpg = png.with_suffix(".jpg")
        from PIL import Image

        with Image.open(png) as im:
            im.save(jpg, quality=90)
        png.unlink()
        anns = []
        for node in rec["nodes"]:
            ann_id = 1000 * (k + 1) + node["id"]
            anns.append({"id": ann_id, "segmentation": node["rle"], "bbox": node["bbox"], "area": node["area"],
                         "predicted_iou": 0.95, "stability_score": 0.97, "crop_box": [0, 0, 112, 84],
                         "point_coords": [[node["bbox"][0], node["bbox"][1]]]})
            lines.append({"id": len(lines), "image": stem, "mask_id": ann_id, "conversations": [
                {"from": "human", "value": "<image>\n<mask>\nDescribe this region in the image."},
                {"from": "gpt", "value": node["caption"]}]})
        anns.append({"id": 1000 * (k + 1) + 99, "segmentation": regions[0]["rle"], "bbox": [0, 0, 1, 1],
                     "area": 1, "predicted_iou": 0.9, "stability_score": 0.9, "crop_box": [0, 0, 112, 84],
                     "point_coords": [[0, 0]]})  # a mask no line refers to
        sa = {"image": {"image_id": 9100001 + k, "width": 112, "height": 84, "file_name": f"{stem}.jpg"},
              "annotations": anns}
        (HERE / "masks").mkdir(exist_ok=True)
        (HERE / "masks" / f"{stem}.json").write_text(json.dumps(sa) + "\n")
    (HERE / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
