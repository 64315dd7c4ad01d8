"""Automatic mask generation as SA-1B was made: a grid of single-point prompts over the image and over
zoomed crops, SAM's three masks per point, filters, and non-maximum suppression.

Per crop (the whole image is crop 0; layer ``i`` adds ``(2**i)**2`` overlapping crops):
1. the crop is encoded once; a ``points_per_side / downscale**layer`` square grid of points, in batches of
   ``points_per_batch``, goes through the decoder (one call per batch, 3 masks per point);
2. predicted IoU ``> pred_iou_thresh`` (on the low-resolution output, before anything is upscaled);
3. logits upscaled to the crop; stability score ``|logits > t + offset| / |logits > t - offset|`` (t = 0)
   ``>= stability_score_thresh``; masks binarized at 0;
4. boxes (XYXY, inclusive pixel indices): masks whose box lies within 20 px of a crop edge that is not an
   image edge are cut by the crop and dropped; masks under ``min_area`` pixels are dropped;
5. box NMS (``box_nms_thresh``) by predicted IoU, within the crop.
Across crops, box NMS (``crop_nms_thresh``) prefers the mask from the smaller crop (score 1 / crop area).
A threshold of 0 turns its filter off, as in SAM. Output: SAM's annotation dicts (``generate_masks``).

What comes from transformers and what is written here: the model, the image processing and the logits
upscaling are transformers' (``Segmenter``); NMS is torchvision's. Transformers' own mask-generation helpers
(``SamImageProcessor.generate_crop_boxes`` / ``filter_masks`` / ``post_process_for_mask_generation``, the
``mask-generation`` pipeline) are not used: ``filter_masks`` drops the point each mask came from (SA-1B's
``point_coords``), upscales all 3 masks of every point before the IoU filter, and keeps stability ``>``
where SAM keeps ``>=``; ``post_process_for_mask_generation`` runs one NMS over all crops by predicted IoU
(SAM: per crop by IoU, then across crops preferring smaller crops) and decodes every mask back to a bitmap;
and ``generate_crop_boxes`` returns points already scaled to SAM 1's input frame, wrong for SAM 2. The crop
layout here equals ``generate_crop_boxes``'s (a test checks it). SAM's ``min_mask_region_area`` clean-up
(removing islands and filling holes with OpenCV) is not done; ``min_area`` drops small masks instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import EDGE_TOLERANCE, AmgConfig
from .model import MASK_THRESHOLD, rgb_array

CHUNK = 16  # masks upscaled and encoded at once after the IoU filter


# ------------------------------------------------------------------------------------ grids and crops
def point_grid(n_per_side: int) -> np.ndarray:
    """``n*n x 2`` float64 (x, y) in [0, 1]: the centres of an n x n grid of cells, row by row."""
    side = (np.arange(n_per_side, dtype=np.float64) + 0.5) / n_per_side
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[tuple[tuple[int, ...], int]]:
    """``[(crop XYXY pixels, layer), ...]``: the whole image (layer 0), then for layer ``i`` (1..n) a
    ``2**i x 2**i`` grid of crops overlapping by ``overlap_ratio`` of the short side scaled by ``2 / 2**i``
    (SAM's layout, column by column)."""
    out: list[tuple[tuple[int, ...], int]] = [((0, 0, width, height), 0)]
    short = min(height, width)
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + width) / n))
        ch = int(math.ceil((overlap * (n - 1) + height) / n))
        for x0 in (int((cw - overlap) * i) for i in range(n)):
            for y0 in (int((ch - overlap) * j) for j in range(n)):
                out.append(((x0, y0, min(x0 + cw, width), min(y0 + ch, height)), layer))
    return out


# ------------------------------------------------------------------------------------ mask measures
def stability_scores(logits: Any, threshold: float = MASK_THRESHOLD, offset: float = 1.0) -> Any:
    """``N x H x W`` logits -> ``N`` float: IoU of the masks binarized at ``threshold + offset`` and at
    ``threshold - offset`` (the first lies inside the second); 0 where the looser mask is empty."""
    import torch

    inter = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int64)
    union = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int64)
    return torch.where(union > 0, inter.double() / union.clamp(min=1).double(), 0.0).float()


def mask_boxes(masks: Any) -> Any:
    """``N x H x W`` bool -> ``N x 4`` int64 XYXY with inclusive ends (the first and last pixel's index, as
    SAM's boxes); ``[0, 0, 0, 0]`` for an empty mask."""
    import torch

    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    y0 = torch.where(rows, ar_h, h).amin(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where((y1 >= 0)[:, None], boxes, torch.zeros_like(boxes))


def near_crop_edge(boxes: Any, crop: tuple[int, ...], image: tuple[int, ...], atol: float = EDGE_TOLERANCE) -> Any:
    """``N`` bool: an XYXY box (image frame) lies within ``atol`` px of an edge of ``crop`` that is not an
    edge of ``image`` (both XYXY): the mask is cut by the crop."""
    import torch

    b = boxes.double()
    c = torch.tensor(crop, dtype=torch.float64, device=b.device)
    im = torch.tensor(image, dtype=torch.float64, device=b.device)
    near_crop = (b - c).abs() <= atol
    near_image = (b - im).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


def _nms(boxes: Any, scores: Any, thresh: float) -> Any:
    from torchvision.ops import nms

    return nms(boxes.double(), scores.double(), thresh)


# ------------------------------------------------------------------------------------------ the masks
class _Masks:
    """Masks kept so far (all on the CPU): COCO RLEs and per-mask tensors, filtered together."""

    def __init__(self):
        import torch

        self.rles: list[dict] = []
        self.boxes = torch.zeros((0, 4), dtype=torch.int64)  # XYXY inclusive, image frame
        self.iou = torch.zeros(0)
        self.stability = torch.zeros(0)
        self.points = torch.zeros((0, 2), dtype=torch.float64)  # image frame
        self.areas = torch.zeros(0, dtype=torch.int64)
        self.crops = torch.zeros((0, 4), dtype=torch.int64)  # XYXY

    def add(self, other: _Masks) -> None:
        import torch

        self.rles += other.rles
        for key in ("boxes", "iou", "stability", "points", "areas", "crops"):
            setattr(self, key, torch.cat([getattr(self, key), getattr(other, key)]))

    def take(self, keep: Any) -> _Masks:
        out = _Masks()
        keep_list = [int(i) for i in keep]
        out.rles = [self.rles[i] for i in keep_list]
        for key in ("boxes", "iou", "stability", "points", "areas", "crops"):
            setattr(out, key, getattr(self, key)[keep])
        return out

    def __len__(self) -> int:
        return len(self.rles)


def _encode_rles(masks: np.ndarray, crop: tuple[int, ...], height: int, width: int) -> list[dict]:
    """``N x h x w`` bool masks of a crop -> COCO RLEs (str counts) in the ``height x width`` image."""
    from ..masks.rle import _mask_utils, to_json_rle

    x0, y0, x1, y1 = crop
    full = np.zeros((height, width, len(masks)), dtype=np.uint8, order="F")
    full[y0:y1, x0:x1, :] = np.moveaxis(masks, 0, -1)
    return [to_json_rle(r) for r in _mask_utils().encode(full)]


def _process_batch(seg: Any, enc: Any, points: np.ndarray, crop: tuple[int, ...], size: tuple[int, int],
                   cfg: AmgConfig) -> _Masks:
    """One batch of grid points (crop pixels) -> the masks that pass the filters (steps 2-4)."""
    import torch

    height, width = size
    x0, y0 = crop[0], crop[1]
    logits, iou = seg.decode(enc, points[:, None, :], np.ones((len(points), 1), dtype=np.int64), None, True)
    k = iou.shape[1]
    logits = logits.flatten(0, 1)  # N*K x h x w
    iou = iou.flatten()
    point_of = torch.arange(len(points), device=iou.device).repeat_interleave(k)
    keep = iou > cfg.pred_iou_thresh if cfg.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
    out = _Masks()
    for idx in torch.nonzero(keep).flatten().split(CHUNK):
        up = seg.upscale(enc, logits[idx][:, None])[:, 0]  # c x crop_h x crop_w
        stab = stability_scores(up, MASK_THRESHOLD, cfg.stability_score_offset)
        ok = stab >= cfg.stability_score_thresh if cfg.stability_score_thresh > 0 else torch.ones_like(stab, dtype=torch.bool)
        masks = up[ok] > MASK_THRESHOLD
        idx, stab = idx[ok], stab[ok]
        boxes = mask_boxes(masks) + torch.tensor([x0, y0, x0, y0], device=masks.device)
        areas = masks.flatten(1).sum(1)
        ok = ~near_crop_edge(boxes, crop, (0, 0, width, height)) & (areas >= cfg.min_area)
        if not bool(ok.any()):
            continue
        part = _Masks()
        part.rles = _encode_rles(masks[ok].cpu().numpy(), crop, height, width)
        part.boxes = boxes[ok].cpu()
        part.iou = iou[idx[ok]].cpu()
        part.stability = stab[ok].cpu()
        pts = torch.as_tensor(points, dtype=torch.float64)[point_of[idx[ok]].cpu()]
        part.points = pts + torch.tensor([x0, y0], dtype=torch.float64)
        part.areas = areas[ok].cpu()
        part.crops = torch.tensor([crop] * int(ok.sum()), dtype=torch.int64)
        out.add(part)
    return out


def _process_crop(seg: Any, image: np.ndarray, crop: tuple[int, ...], layer: int, cfg: AmgConfig) -> _Masks:
    x0, y0, x1, y1 = crop
    piece = np.ascontiguousarray(image[y0:y1, x0:x1])
    enc = seg.encode([piece])[0]
    n = cfg.points_per_side // cfg.crop_n_points_downscale_factor**layer
    points = point_grid(n) * np.array([x1 - x0, y1 - y0], dtype=np.float64)  # crop pixels
    data = _Masks()
    for start in range(0, len(points), cfg.points_per_batch):
        data.add(_process_batch(seg, enc, points[start : start + cfg.points_per_batch], crop, image.shape[:2], cfg))
    if len(data) == 0:
        return data
    return data.take(_nms(data.boxes, data.iou, cfg.box_nms_thresh))


def generate_masks(seg: Any, image: Any, cfg: AmgConfig | None = None) -> list[dict]:
    """Every mask SAM finds in ``image`` (PIL or ``HxWx3 uint8``), as SAM's automatic mask generator writes
    them: ``segmentation`` (COCO compressed RLE, str counts), ``area`` (pixels), ``bbox`` (XYWH, SA-1B
    convention: ``w = x1 - x0`` of the inclusive box, one pixel short of the pixels' extent),
    ``predicted_iou``, ``point_coords`` (``[[x, y]]``, the grid point in image pixels),
    ``stability_score``, ``crop_box`` (XYWH). Order: the NMS order (best score first)."""

    cfg = cfg or AmgConfig()
    arr = rgb_array(image)
    height, width = arr.shape[:2]
    crops = crop_boxes(height, width, cfg.crop_n_layers, cfg.crop_overlap_ratio)
    data = _Masks()
    for crop, layer in crops:
        data.add(_process_crop(seg, arr, crop, layer, cfg))
    if len(crops) > 1 and len(data):
        c = data.crops.double()
        scores = 1.0 / ((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]))
        data = data.take(_nms(data.boxes, scores, cfg.crop_nms_thresh))
    anns = []
    for i in range(len(data)):
        x0, y0, x1, y1 = (float(v) for v in data.boxes[i])
        cx0, cy0, cx1, cy1 = (float(v) for v in data.crops[i])
        anns.append({
            "segmentation": data.rles[i],
            "area": int(data.areas[i]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(data.iou[i]),
            "point_coords": [[float(v) for v in data.points[i]]],
            "stability_score": float(data.stability[i]),
            "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
        })
    return anns
