"""SA-1B per-image JSON from generated masks, and its atomic writer (``--write-masks DIR``).

The file is what SA-1B ships and what ``ureca tree`` reads: ``{"image": {image_id, width, height,
file_name}, "annotations": [{id, segmentation: {size: [H, W], counts}, bbox [x, y, w, h], area,
predicted_iou, stability_score, crop_box, point_coords}]}``, masks as COCO compressed RLE, boxes in SA-1B's
convention (one pixel short of the pixels' extent). ``image_id`` follows the package's rule for images without
an SA-1B id (``records.image_id_from_stem``: the photo's stem, ``sa_`` dropped before a number); ``file_name`` is the photo's name, looked up next to the JSON (or in
tree's ``--images DIR``); ``id`` is the mask's index in the file. The settings that made the masks are kept
under ``"generator"``, which SA-1B readers ignore.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import AmgConfig


def sa1b_record(annotations: list[dict], *, image_id: str, width: int, height: int, file_name: str,
                generator: dict | None = None) -> dict:
    """The SA-1B per-image dict of ``annotations`` (``generate_masks`` output), ids 0..n-1 in order."""
    rec: dict[str, Any] = {
        "image": {"image_id": str(image_id), "width": int(width), "height": int(height), "file_name": file_name},
        "annotations": [{"id": i, **ann} for i, ann in enumerate(annotations)],
    }
    if generator is not None:
        rec["generator"] = generator
    return rec


def image_id_of(image_path: str | Path) -> str:
    """The ``image_id`` of a photo with no SA-1B id, by the package's one rule (``records.image_id_from_stem``:
    its file's stem, SA-1B's ``sa_`` dropped before a number)."""
    from ..records import image_id_from_stem

    return image_id_from_stem(Path(image_path).stem)


def generate_mask_file(seg: Any, image_path: str | Path, cfg: AmgConfig | None = None, *,
                       where: str | None = None) -> dict:
    """Run automatic mask generation on the photo at ``image_path`` -> its SA-1B per-image dict.

    A missing or undecodable photo is an ``InputError`` naming it (and ``where``)."""
    from .amg import generate_masks
    from .model import load_rgb

    cfg = cfg or AmgConfig()
    path = Path(image_path)
    image = load_rgb(path, where)
    anns = generate_masks(seg, image, cfg)
    return sa1b_record(anns, image_id=image_id_of(path), width=image.shape[1], height=image.shape[0],
                       file_name=path.name,
                       generator={"model": getattr(seg, "name", ""), "settings": cfg.settings()})


def write_mask_file(record: dict, folder: str | Path) -> Path:
    """Write ``record`` to ``folder/<stem of file_name>.json`` (else ``<image_id>.json``, made a name by
    ``records.file_name``) atomically (a temporary file in the same folder, then a rename), so a reader or an
    interrupted run never sees half a file. Returns the path."""
    import orjson

    from ..records import file_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(record["image"]["file_name"]).stem or file_name(record["image"]["image_id"])
    path = folder / f"{stem}.json"
    tmp = folder / f".{stem}.json.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(record))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
