"""A stand-in for `ureca_cli.sam.Segmenter` whose masks and scores are chosen by the test, so the filters and
the non-maximum suppression of automatic mask generation can be checked mask by mask.

The scene is a list of objects, each a trigger rectangle of the image (rows ``y0:y1``, columns ``x0:x1``) and
three candidate masks (``HxW`` float32 logits in the image frame, with a predicted IoU each). A grid point in
a trigger gets that object's three candidates, cut to the crop being decoded; any other point gets three
empty masks (predicted IoU 0.99, so only ``min_area`` removes them).
The image itself tells the double where a crop lies: pixel (x, y) holds (x, y, 0) in its red and green
channels (images up to 256 x 256), so a crop's first pixel is its offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

ON, OFF = 10.0, -10.0  # logits far from SAM's stability offsets (+-1): stability 1


def coordinate_image(height: int, width: int) -> np.ndarray:
    """``HxWx3 uint8`` whose pixel (x, y) is (x, y, 0): the double reads a crop's offset from it."""
    assert height <= 256 and width <= 256
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(width, dtype=np.uint8)[None, :]
    img[:, :, 1] = np.arange(height, dtype=np.uint8)[:, None]
    return img


def rect_logits(height: int, width: int, y0: int, y1: int, x0: int, x1: int, inside: float = ON) -> np.ndarray:
    """``HxW`` float32 logits: ``inside`` on rows y0:y1 and columns x0:x1, OFF elsewhere."""
    m = np.full((height, width), OFF, dtype=np.float32)
    m[y0:y1, x0:x1] = inside
    return m


@dataclass
class Obj:
    """A trigger rectangle (rows y0:y1, columns x0:x1) and the three candidates (logits, IoU) it returns."""

    y0: int
    y1: int
    x0: int
    x1: int
    candidates: list[tuple[np.ndarray, float]]

    def holds(self, x: float, y: float) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


def obj(trigger: tuple[int, int, int, int], mask: np.ndarray, iou: float) -> Obj:
    """An object triggered by points in ``trigger`` (y0, y1, x0, x1) whose first candidate is ``mask`` with
    predicted IoU ``iou``; the other two candidates are empty."""
    empty = np.full_like(mask, OFF)
    return Obj(*trigger, [(mask, iou), (empty, 0.1), (empty, 0.1)])


@dataclass
class FakeEncoding:
    size: tuple[int, int]
    offset: tuple[int, int]  # (x0, y0) of the crop in the image


@dataclass
class SceneSegmenter:
    """`encode` / `decode` / `upscale` as `Segmenter` has them, answering from the scene."""

    height: int
    width: int
    objects: list[Obj]
    encodes: int = 0
    decodes: list[int] = field(default_factory=list)  # prompts per decoder call

    def encode(self, images):
        out = []
        for im in images:
            self.encodes += 1
            out.append(FakeEncoding(im.shape[:2], (int(im[0, 0, 0]), int(im[0, 0, 1]))))
        return out

    def decode(self, enc, points, labels, boxes, multimask):
        assert boxes is None and multimask
        h, w = enc.size
        ox, oy = enc.offset
        pts = np.asarray(points)[:, 0, :]
        self.decodes.append(len(pts))
        logits = np.full((len(pts), 3, h, w), OFF, dtype=np.float32)
        iou = np.full((len(pts), 3), 0.99, dtype=np.float32)  # empty masks score high: min_area drops them
        for i, (x, y) in enumerate(pts):
            for obj in self.objects:
                if obj.holds(x + ox, y + oy):
                    for k, (m, s) in enumerate(obj.candidates):
                        logits[i, k] = m[oy : oy + h, ox : ox + w]
                        iou[i, k] = s
        return torch.from_numpy(logits), torch.from_numpy(iou)

    def upscale(self, enc, logits):
        return logits  # the double's logits are already at the crop's size
