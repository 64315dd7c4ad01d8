"""The set-of-mark image that uniqueness refinement shows the chat model (Pillow and numpy only).

One image per target region: the target and the regions it was found similar to, each outlined with its own
colour from a fixed palette (the target always blue, index 0; the others 1, 2, ... in the order given), and
each index written in the region's colour on a dark box at the region's centre, so the model can tell which
outline is which. Nested regions share a centre, so a label goes to the centre of the part of its region that
no smaller listed region covers, and, where that spot is taken, to the nearest free spot inside its region
(``label_spot``); the target's label is placed first. The image is cropped to the union of the regions' boxes (widened by the contour width, so
outlines on the edge stay whole) and, with ``max_side``, downscaled before the outlines are drawn, so they
keep their width.

Frames: the photo is a ``PIL.Image`` in RGB, ``W x H``; masks are ``HxW`` 0/1 arrays in that frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from ..masks import pixel_box
from .prompter import contour_band, fit_size

BLUE = (0, 90, 255)
# index 1, 2, ...: saturated colours that stay apart from blue and from each other; cycled past the end
PALETTE = (
    (255, 40, 40),  # red
    (0, 200, 70),  # green
    (255, 215, 0),  # yellow
    (255, 0, 220),  # magenta
    (0, 230, 230),  # cyan
    (255, 140, 0),  # orange
    (150, 60, 255),  # violet
    (160, 255, 60),  # lime
    (255, 120, 170),  # pink
    (140, 90, 40),  # brown
    (255, 255, 255),  # white
)
LABEL_BOX = (20, 20, 20)


def colour(index: int) -> tuple[int, int, int]:
    """Outline colour of index ``index`` (0 is the target, blue)."""
    return BLUE if index == 0 else PALETTE[(index - 1) % len(PALETTE)]


@dataclass(frozen=True)
class MarkSettings:
    """How set-of-mark images are drawn."""

    contour_width: int = 3  # pixels at the size sent
    max_side: int | None = None  # downscale so the longer side is at most this (None or 0: full size)
    font_size: int | None = None  # None: about 1/20 of the shorter side, at least 12 pixels

    def __post_init__(self):
        if self.contour_width < 1:
            raise InputError(f"contour width {self.contour_width}: must be >= 1")
        if self.max_side is not None and self.max_side != 0 and self.max_side < 16:
            raise InputError(f"--max-side {self.max_side}: must be at least 16 (0: full size)")
        if self.font_size is not None and self.font_size < 6:
            raise InputError(f"font size {self.font_size}: must be at least 6")


def union_box(boxes: list[tuple[int, int, int, int]], margin: int, width: int, height: int) -> tuple[int, int, int, int]:
    """XYWH box holding every XYWH box in ``boxes``, widened by ``margin`` and clipped to the image."""
    x0 = max(0, min(b[0] for b in boxes) - margin)
    y0 = max(0, min(b[1] for b in boxes) - margin)
    x1 = min(width, max(b[0] + b[2] for b in boxes) + margin)
    y1 = min(height, max(b[1] + b[3] for b in boxes) + margin)
    return x0, y0, x1 - x0, y1 - y0


def _erode4(m: np.ndarray) -> np.ndarray:
    """4-neighbour erosion of an ``HxW`` bool array; outside the array counts as background."""
    out = m.copy()
    out[1:, :] &= m[:-1, :]
    out[:-1, :] &= m[1:, :]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out


def label_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of a pixel well inside the ``HxW`` mask, near its centre.

    The mask (subsampled to about 96 pixels on its shorter side) is eroded until it vanishes. The centroid
    is kept when it survives half as many erosions as the deepest pixels (a convex region: its centre);
    else the deepest pixel nearest the centroid is taken, so a ring or a crescent, whose centroid lies
    outside it or on its edge, gets a point in the middle of its band.
    """
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    f = max(1, min(mask.shape) // 96)
    small = np.asarray(mask[f // 2::f, f // 2::f], dtype=bool)
    levels = [small]
    while levels[-1].any():
        levels.append(_erode4(levels[-1]))
    levels.pop()  # the empty one
    if levels:
        half = levels[(len(levels) - 1) // 2]
        iy, ix = int(round((cy - f // 2) / f)), int(round((cx - f // 2) / f))
        if 0 <= iy < half.shape[0] and 0 <= ix < half.shape[1] and half[iy, ix] and mask[int(cy), int(cx)]:
            return int(cx), int(cy)
        sy, sx = np.nonzero(levels[-1])
        sy, sx = sy * f + f // 2, sx * f + f // 2
        k = int(np.argmin((sy - cy) ** 2 + (sx - cx) ** 2))
        if mask[sy[k], sx[k]]:
            return int(sx[k]), int(sy[k])
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))  # a region too thin for the grid
    return int(xs[k]), int(ys[k])


def _window_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The ``box`` (XYWH) window of an ``HxW`` mask resampled to ``size`` (W, H): ``H' x W'`` bool."""
    x, y, w, h = box
    win = np.asarray(mask[y:y + h, x:x + w], dtype=bool)
    if size == (w, h):
        return win
    im = Image.fromarray(win.astype(np.uint8) * 255)
    return np.asarray(im.resize(size, Image.Resampling.BILINEAR)) >= 128


def set_of_mark(image: Image.Image, target: np.ndarray, others: list[np.ndarray],
                settings: MarkSettings | None = None) -> Image.Image:
    """The set-of-mark image: ``target`` as index 0 in blue, ``others[i]`` as index ``i + 1``.

    ``image`` is RGB ``W x H``; masks are ``HxW`` 0/1 in its frame. Returns an RGB image of the union of the
    regions' boxes (at most ``max_side`` on its longer side).
    """
    s = settings or MarkSettings()
    img = image.convert("RGB")
    masks = [target, *others]
    boxes = []
    for i, m in enumerate(masks):
        if m.shape != (img.height, img.width):
            raise InputError(f"mask {i} is {m.shape[1]}x{m.shape[0]} but the image is {img.width}x{img.height}")
        b = pixel_box(m)
        if b is None:
            raise InputError("the target's mask is empty" if i == 0 else f"similar region {i}'s mask is empty")
        boxes.append(b)
    box = union_box(boxes, s.contour_width, img.width, img.height)
    x, y, w, h = box
    size = fit_size(w, h, s.max_side)
    if size == (w, h):
        window = img.crop((x, y, x + w, y + h))
    else:
        window = img.resize(size, Image.Resampling.LANCZOS, box=(x, y, x + w, y + h), reducing_gap=3.0)
    arr = np.array(window)
    wins = [_window_mask(m, box, size) for m in masks]
    # others first, the target last, so that its outline is on top where outlines cross
    for i in [*range(1, len(masks)), 0]:
        arr[contour_band(wins[i], s.contour_width)] = colour(i)
    out = Image.fromarray(arr)
    draw = ImageDraw.Draw(out)
    font_size = s.font_size or max(12, round(min(size) / 20))
    font = ImageFont.load_default(size=font_size)
    pad = max(2, font_size // 6)
    placed: list[tuple[int, int, int, int]] = []
    areas = [int(wm.sum()) for wm in wins]
    for i in range(len(masks)):  # the target's label first, so that it sits right at its centre
        text = str(i)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        bw, bh = right - left + 2 * pad, bottom - top + 2 * pad
        # the part of the region that no smaller listed region covers: a cup's rim rather than its coffee
        others = [wins[j] for j in range(len(masks)) if j != i and areas[j] < areas[i]]
        x0, y0 = label_spot(wins[i], others, (bw, bh), placed, size, fallback=_box_centre(boxes[i], box, size))
        placed.append((x0, y0, x0 + bw, y0 + bh))
        draw.rectangle((x0, y0, x0 + bw - 1, y0 + bh - 1), fill=LABEL_BOX)
        draw.text((x0 + pad - left, y0 + pad - top), text, fill=colour(i), font=font)
    return out


def _box_centre(b: tuple[int, int, int, int], window: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[float, float]:
    """Centre of the XYWH box ``b`` (photo frame) in the frame of ``window`` resampled to ``size``."""
    x, y, w, h = window
    return (b[0] - x + b[2] / 2) * size[0] / w, (b[1] - y + b[3] / 2) * size[1] / h


def _clamp(cx: float, cy: float, label: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a ``label`` (w, h) box centred on ``(cx, cy)``, kept inside an image of ``size``."""
    x0 = min(max(0, int(round(cx - label[0] / 2))), max(0, size[0] - label[0]))
    y0 = min(max(0, int(round(cy - label[1] / 2))), max(0, size[1] - label[1]))
    return x0, y0


def label_spot(mask: np.ndarray, others: list[np.ndarray], label: tuple[int, int],
               placed: list[tuple[int, int, int, int]], size: tuple[int, int],
               fallback: tuple[float, float]) -> tuple[int, int]:
    """Top-left corner of a region's label box: at the region's centre (``label_point``) when that box
    overlaps no label already ``placed`` (boxes ``x0, y0, x1, y1``); else at the nearest point of the region
    where it overlaps none, trying first the region's own part (not covered by ``others``, the smaller
    regions listed), so that nested regions, which share a centre, keep their labels apart. ``mask`` and ``others`` are ``H' x W'`` bool at
    the size sent; ``fallback`` is used for a region too thin to survive downscaling."""

    def free(x0: int, y0: int) -> bool:
        x1, y1 = x0 + label[0], y0 + label[1]
        return all(x1 <= a or x0 >= c or y1 <= b or y0 >= d for a, b, c, d in placed)

    if not mask.any():
        return _clamp(*fallback, label, size)
    own = mask.copy()
    for o in others:
        own &= ~o
    first = _clamp(*label_point(own if own.any() else mask), label, size)
    if free(*first):
        return first
    step = max(1, min(label) // 2)
    for part in (own, mask):
        ys, xs = np.nonzero(part[::step, ::step])
        if ys.size == 0:
            continue
        ys, xs = ys * step, xs * step
        cy, cx = ys.mean(), xs.mean()
        for k in np.argsort((ys - cy) ** 2 + (xs - cx) ** 2, kind="stable"):
            spot = _clamp(float(xs[k]), float(ys[k]), label, size)
            if free(*spot):
                return spot
    return first
