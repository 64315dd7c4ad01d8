"""The one mask layer: COCO RLE in and out, bitmaps, boxes, and containment on RLE runs.

Conventions used across the package:
- bitmap: ``HxW uint8`` array of 0/1, row-major, image frame;
- RLE: COCO compressed RLE ``{"size": [H, W], "counts": str}`` (pycocotools, column-major runs);
- box: XYWH in pixels. SA-1B files carry their own boxes, one pixel narrower and shorter than
  ``pycocotools.mask.toBbox``; trees keep the file's box, and ``pixel_box`` gives the box of the pixels.

``rle`` holds the RLE codec (a COCO ``segmentation`` in any form -> checked counts, the checked decode) and the
one mask rule every stage reads masks by (``checked_counts``: runs that cover exactly the size; ``node_mask`` /
``region_area``: a region is of its image's size and holds a pixel), bitmaps and boxes; ``runs`` the containment of many masks at once on their runs (``RunSet``, what ``ureca
tree`` builds its hierarchy from); ``regions`` the forms a region is given in on the command line (mask PNG,
RLE, box), each made into a mask of its image.
"""

from .rle import (
    area,
    as_coco_rle,
    checked_counts,
    decode,
    encode,
    node_mask,
    pixel_box,
    region_area,
    resize_nearest,
    rle_from_any,
    segmentation_counts,
    to_json_rle,
)

__all__ = ["area", "as_coco_rle", "checked_counts", "decode", "encode", "node_mask", "pixel_box", "region_area",
           "resize_nearest", "rle_from_any", "segmentation_counts", "to_json_rle"]
