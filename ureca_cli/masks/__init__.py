"""The one mask layer: COCO RLE in and out, bitmaps, boxes, and containment on RLE runs.

Conventions used across the package:
- bitmap: ``HxW uint8`` array of 0/1, row-major, image frame;
- RLE: COCO compressed RLE ``{"size": [H, W], "counts": str}`` (pycocotools, column-major runs);
- box: XYWH in pixels. SA-1B files carry their own boxes, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``; trees keep the file's box, and ``pixel_box`` gives the box of the pixels.

``rle`` holds the RLE codec and the checked decode; ``runs`` the containment of many masks at once on their
runs (``RunSet``, what ``ureca tree`` builds its hierarchy from).
"""

from .rle import area, as_coco_rle, decode, encode, node_mask, pixel_box, rle_from_any, to_json_rle

__all__ = ["area", "as_coco_rle", "decode", "encode", "node_mask", "pixel_box", "rle_from_any", "to_json_rle"]
