"""Visual prompts: what a chat model is shown of one region (Pillow and numpy only).

Frames and formats used here:
- image: a ``PIL.Image`` in RGB, ``W x H`` pixels (the record's ``width`` x ``height``);
- mask: ``HxW uint8`` (or bool) 0/1 bitmap in the same pixel frame as the image;
- box: XYWH in pixels of the mask's own pixels (``masks.pixel_box``), never SA-1B's one-pixel-short box.

The kinds of image, all built from one ``VisualPrompter`` per photo (the blur is computed once per photo):
- ``blurred_crop(mask)``: the region sharp, everything else under a strong Gaussian blur (sigma 100 by
  default, as the released code), cropped tightly to the box of the mask's pixels;
- ``contour_in_context(mask, main=None)``: for a main object (``main`` is None) the whole photo with the
  region's outer contour drawn in yellow; for a part, the crop of its main object's box with the main object
  sharp, the rest blurred, and the part contoured;
- ``full_contour(mask)``: the whole photo with the region contoured (bottom-up paragraphs);
- ``contour_on(image, mask)``: the region contoured on the plain photo (the Contour baseline).

The contour is the outer boundary only (holes are filled first), about ``contour_width`` (3) pixels wide and
centred on the boundary, as OpenCV's ``drawContours`` with thickness 3 draws the contour pixels of
``findContours(RETR_EXTERNAL)``: the mask's boundary pixels dilated by one pixel each way.

The size a picture is sent at (``VisualSettings.size``): with ``max_side`` its longer side is at most that many
pixels; otherwise, with ``tiles`` (a ``tiles.TileBudget``: annotate's default), the smallest size that still
holds every pixel InternVL's tiling keeps of it; with neither, full size. The window is cut from the
full-resolution photo (its box taken from the full-resolution mask) and only the window is resampled; the
contour is drawn afterwards, at the size sent, so it stays ``contour_width`` pixels wide, and the blur is
computed once per photo at a reduced size (``blur``). Resampled windows and the blurred-background composites
that several prompts share (a main object's crop is the backdrop of all its parts' context pictures) are made
once per photo and kept in a small cache.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InputError
from ..masks import pixel_box
from .tiles import TileBudget

YELLOW = (255, 255, 0)
Box = tuple[int, int, int, int]  # XYWH pixels


# -------------------------------------------------------------------------------------------- morphology
def _neighbourhood(m: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op`` (``np.bitwise_or`` or ``np.bitwise_and``) of each pixel of an ``HxW`` bool array with its 8
    neighbours; outside the array counts as False."""
    p = np.pad(m, 1)
    out = p[1:-1, 1:-1].copy()
    h, w = m.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                op(out, p[dy : dy + h, dx : dx + w], out=out)
    return out


def _shift_or(m: np.ndarray) -> np.ndarray:
    """3x3 dilation of an ``HxW`` bool array (8-neighbourhood); outside the array counts as False."""
    return _neighbourhood(m, np.bitwise_or)


def _erode(m: np.ndarray) -> np.ndarray:
    """3x3 erosion of an ``HxW`` bool array (8-neighbourhood); outside the array counts as background."""
    return _neighbourhood(m, np.bitwise_and)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``HxW`` bool: the mask with every background area not 4-connected to the border filled in.

    Reachability spreads along row runs and column runs of background pixels in turn (numpy only), which
    settles in a few sweeps for real masks.
    """
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return m.copy()
    bg = ~m
    reach = np.zeros_like(bg)
    reach[0, :] = bg[0, :]
    reach[-1, :] = bg[-1, :]
    reach[:, 0] |= bg[:, 0]
    reach[:, -1] |= bg[:, -1]
    total = int(bg.sum())
    for _ in range(10_000):
        before = int(reach.sum())
        reach = _spread_runs(bg, reach)
        reach = _spread_runs(bg.T, reach.T).T
        after = int(reach.sum())
        if after == before or after == total:  # settled, or every background pixel reached (no holes)
            break
    return ~reach


def _spread_runs(bg: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """Mark whole horizontal runs of ``bg`` that hold at least one ``reach`` pixel (both ``HxW`` bool)."""
    h, w = bg.shape
    flat = np.ascontiguousarray(bg).ravel()
    prev = np.zeros_like(flat)
    prev[1:] = flat[:-1]
    prev[::w] = False  # a run never continues across rows
    starts = flat & ~prev
    run_id = np.cumsum(starts) - 1
    hit = np.zeros(int(starts.sum()) + 1, dtype=bool)
    r = np.ascontiguousarray(reach).ravel() & flat
    hit[run_id[r]] = True
    out = flat & hit[np.maximum(run_id, 0)]
    return out.reshape(h, w)


def contour_band(mask: np.ndarray, width: int = 3, box: Box | None = None) -> np.ndarray:
    """``HxW`` bool: the pixels a ``width``-pixel line along the mask's outer contour covers.

    The contour pixels are the pixels of the hole-filled mask with a background pixel among their eight
    neighbours (or on the array's edge); the band is those pixels dilated by ``(width - 1) // 2`` pixels,
    so it straddles the boundary: a pixel inside, the boundary pixel, a pixel outside for ``width`` 3.
    ``box`` (XYWH), when the caller knows it, is a box holding every pixel of the mask (saves a pass over it).
    """
    m = np.asarray(mask, dtype=bool)
    if box is None:
        box = pixel_box(m)
    out = np.zeros(m.shape, dtype=bool)
    if box is None:
        return out
    r = max(0, (width - 1) // 2)
    x, y, w, h = box
    x0, y0 = max(0, x - r - 1), max(0, y - r - 1)
    x1, y1 = min(m.shape[1], x + w + r + 1), min(m.shape[0], y + h + r + 1)
    win = m[y0:y1, x0:x1]
    filled = fill_holes(win)
    # pixels at the array's edge count as boundary (the image ends there)
    band = filled & ~_erode(filled)
    for _ in range(r):
        band = _shift_or(band)
    out[y0:y1, x0:x1] = band
    return out


# ---------------------------------------------------------------------------------------------- drawing
def draw_contour(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int] = YELLOW, width: int = 3) -> Image.Image:
    """A copy of ``image`` (RGB) with the outer contour of ``mask`` (``HxW`` 0/1, same frame) drawn in ``color``."""
    arr = np.array(image.convert("RGB"))
    band = contour_band(mask, width)
    arr[band] = color
    return Image.fromarray(arr)


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """A Gaussian blur of standard deviation ``sigma`` (full-size pixels), computed at a reduced size.

    A blur this strong keeps no detail finer than about ``sigma / 3`` pixels, so the image is first reduced
    by ``sigma / 6`` (box filter), blurred there, and returned at the reduced size: a small RGB image whose
    pixel ``u`` covers full-size pixels ``[u * f, (u + 1) * f)``, ``f = image.width / small.width``.
    Resample the part you need with ``resize(size, box=...)`` (``VisualPrompter`` does).
    """
    factor = max(1.0, sigma / 6.0)
    w, h = image.size
    sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
    small = image.convert("RGB").resize((sw, sh), Image.Resampling.BOX) if (sw, sh) != (w, h) else image.convert("RGB")
    radius = sigma * sw / w
    return small.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else small


def fit_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """``(w, h)`` scaled down (never up) so that the longer side is at most ``max_side``."""
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


@dataclass(frozen=True)
class VisualSettings:
    """How visual prompts are drawn, and at what size they are sent (``size``)."""

    sigma: float = 100.0  # Gaussian blur of the background, in full-size pixels (released code: 100)
    contour_width: int = 3  # pixels, centred on the boundary
    max_side: int | None = None  # downscale what is sent so its longer side is at most this (None or 0: no limit)
    color: tuple[int, int, int] = YELLOW
    tiles: TileBudget | None = None  # without max_side: downscale to what this tile budget keeps (None: full size)

    def __post_init__(self):
        if not math.isfinite(self.sigma):
            raise InputError(f"--blur-sigma {self.sigma}: needs a finite number >= 0")
        if self.sigma < 0:
            raise InputError(f"--blur-sigma {self.sigma}: must be >= 0")
        if self.contour_width < 1:
            raise InputError(f"contour width {self.contour_width}: must be >= 1")
        if self.max_side is not None and self.max_side != 0 and self.max_side < 16:
            raise InputError(f"--max-side {self.max_side}: must be at least 16 (0: full size)")

    @classmethod
    def for_max_side(cls, max_side: int | None, **changes: Any) -> VisualSettings:
        """``--max-side`` as annotate reads it: not given (None): the size InternVL's tiling uses
        (``TileBudget()``: tiles of 448 pixels, up to 12); 0: full size; N: the longer side at most N."""
        base = cls(**changes)
        if max_side is None:
            return replace(base, tiles=TileBudget())
        return replace(base, max_side=max_side or None, tiles=None)

    def size(self, w: int, h: int) -> tuple[int, int]:
        """``(W, H)`` a ``w x h`` window is sent at: ``max_side`` if set, else the tile budget's fit, else as is."""
        if self.max_side:
            return fit_size(w, h, self.max_side)
        if self.tiles is not None:
            return self.tiles.fit(w, h)
        return w, h

    def describe(self) -> dict[str, Any]:
        """The settings as records' provenance states them."""
        return {"sigma": self.sigma, "contour_width": self.contour_width, "max_side": self.max_side,
                "size": f"longest side {self.max_side}" if self.max_side else
                        self.tiles.describe() if self.tiles is not None else "full"}


class _Cache:
    """A small thread-safe LRU of values made from a photo (resampled windows, composites); a key may hold
    objects whose identity matters (masks), kept alive with the entry and compared with ``is``."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, pins: tuple = ()) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or len(hit[0]) != len(pins) or any(a is not b for a, b in zip(hit[0], pins, strict=True)):
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Any, value: Any, pins: tuple = ()) -> Any:
        with self._lock:
            self._items[key] = (pins, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


class VisualPrompter:
    """Builds every visual prompt of one photo; the blurred copy is computed once, on first use, and resampled
    windows and shared composites are cached (a few, least recently used dropped first).

    Thread-safe (a value two threads need at once may be computed twice, harmlessly). The images returned may be
    shared between calls: do not modify them.
    """

    CACHE = 8  # windows and composites kept: a main object's backdrop serves all its parts

    def __init__(self, image: Image.Image, settings: VisualSettings | None = None):
        self.image = image.convert("RGB")
        self.settings = settings or VisualSettings()
        self._small: Image.Image | None = None
        self._windows = _Cache(self.CACHE)
        self._bases = _Cache(self.CACHE)
        self._boxes = _Cache(self.CACHE)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def _blurred_small(self) -> Image.Image:
        if self._small is None:
            self._small = blur(self.image, self.settings.sigma)
        return self._small

    def _sharp_window(self, box: Box) -> tuple[Image.Image, tuple[int, int]]:
        """The photo's ``box`` (XYWH, full-resolution pixels) at the size it is sent (``settings.size``): cut
        from the full-resolution photo, then only that window resampled. Resampled windows are cached."""
        x, y, w, h = box
        size = self.settings.size(w, h)
        if size == (w, h):
            return (self.image if box == self.whole() else self.image.crop((x, y, x + w, y + h))), size
        hit = self._windows.get(box)
        if hit is None:
            hit = self._windows.put(box, self.image.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + w, y + h),
                                                           reducing_gap=2.0))
        return hit, size

    def _blurred_window(self, box: Box, size: tuple[int, int]) -> Image.Image:
        """The blurred photo's ``box`` at ``size`` (W, H), upsampled from the small blurred copy."""
        x, y, w, h = box
        small = self._blurred_small()
        fx, fy = small.width / self.image.width, small.height / self.image.height
        return small.resize(size, Image.Resampling.BILINEAR, box=(x * fx, y * fy, (x + w) * fx, (y + h) * fy))

    @staticmethod
    def _mask_window(mask: np.ndarray, box: Box, size: tuple[int, int], mask_box: Box | None = None
                     ) -> tuple[np.ndarray, Box | None]:
        """The ``box`` window of an ``HxW`` 0/1 mask at ``size`` (W, H): ``size[1] x size[0]`` bool, and a box
        (XYWH, in the window at ``size``) that holds all its pixels (None: none).

        Resampled by nearest neighbour (each output pixel takes the mask pixel under its centre), and only
        over the mask's own pixel box (``mask_box``, full-resolution XYWH, when known), so a small region in a
        large window costs little.
        """
        x, y, w, h = box
        win = np.asarray(mask[y : y + h, x : x + w], dtype=bool)
        if mask_box is None:
            pb = pixel_box(win)
        else:
            mx, my, mw, mh = mask_box
            px, py = max(0, mx - x), max(0, my - y)
            pw, ph = min(w, mx + mw - x) - px, min(h, my + mh - y) - py
            pb = (px, py, pw, ph) if pw > 0 and ph > 0 else None
        if size == (w, h):
            return win, pb
        out = np.zeros((size[1], size[0]), dtype=bool)
        if pb is None:
            return out, None
        sx, sy = size[0] / w, size[1] / h
        px, py, pw, ph = pb
        x0, x1 = int(np.floor(px * sx)), min(size[0], int(np.ceil((px + pw) * sx)) + 1)
        y0, y1 = int(np.floor(py * sy)), min(size[1], int(np.ceil((py + ph) * sy)) + 1)
        cols = np.minimum(((np.arange(x0, x1) + 0.5) / sx).astype(np.int64), w - 1)
        rows = np.minimum(((np.arange(y0, y1) + 0.5) / sy).astype(np.int64), h - 1)
        out[y0:y1, x0:x1] = win[rows[:, None], cols[None, :]]
        return out, (x0, y0, x1 - x0, y1 - y0)

    def _base(self, box: Box, sharp_mask: np.ndarray | None) -> tuple[Image.Image, tuple[int, int]]:
        """The ``box`` window at the size sent, ``sharp_mask`` (``HxW`` 0/1, the photo's frame) kept sharp and the
        rest blurred (``None``: all sharp). Composites are cached by box and mask object (a main object's is the
        backdrop of every part's context picture, and its own blurred crop)."""
        sharp, size = self._sharp_window(box)
        if sharp_mask is None:
            return sharp, size
        hit = self._bases.get(box, (sharp_mask,))
        if hit is None:
            keep, _ = self._mask_window(sharp_mask, box, size, self._box_of(sharp_mask))
            out = self._blurred_window(box, size)
            out.paste(sharp, (0, 0), Image.fromarray(keep.astype(np.uint8) * 255))
            hit = self._bases.put(box, out, (sharp_mask,))
        return hit, size

    def _compose(self, box: Box, sharp_mask: np.ndarray | None, contour_mask: np.ndarray | None) -> Image.Image:
        """The ``box`` window with ``sharp_mask`` kept sharp and the rest blurred (``None``: all sharp), and
        ``contour_mask`` contoured; both masks ``HxW`` 0/1 in the photo's frame. Pillow does the pixel work
        (pastes under masks), numpy only touches the masks' own windows. Without a contour the result may be a
        cached image shared with other calls."""
        base, size = self._base(box, sharp_mask)
        if contour_mask is None:
            return base
        win, win_box = self._mask_window(contour_mask, box, size, self._box_of(contour_mask))
        band = contour_band(win, self.settings.contour_width, win_box) if win_box is not None else win
        out = base.copy()
        bb = pixel_box(band)
        if bb is not None:
            bx, by, bw, bh = bb
            sub = Image.fromarray(band[by : by + bh, bx : bx + bw].astype(np.uint8) * 255)
            out.paste(self.settings.color, (bx, by, bx + bw, by + bh), sub)
        return out

    def _box_of(self, mask: np.ndarray) -> Box:
        """The XYWH box of ``mask``'s pixels in full-resolution pixels (cached per mask object)."""
        if mask.shape != (self.image.height, self.image.width):
            raise InputError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {self.image.width}x{self.image.height}"
            )
        key = id(mask)
        box = self._boxes.get(key, (mask,))
        if box is None:
            box = pixel_box(mask)
            if box is None:
                raise InputError("the region's mask is empty")
            self._boxes.put(key, box, (mask,))
        return box

    def whole(self) -> Box:
        return (0, 0, self.image.width, self.image.height)

    # ------------------------------------------------------------------------------- the prompt images
    def blurred_crop(self, mask: np.ndarray) -> Image.Image:
        """The region sharp on a blurred background, cropped to the box of the mask's pixels."""
        return self._compose(self._box_of(mask), mask, None)

    def contour_in_context(self, mask: np.ndarray, main: np.ndarray | None = None) -> Image.Image:
        """A main object (``main`` None): the whole photo with the region contoured. A part: its main
        object's box, main object sharp, the rest blurred, the part contoured."""
        if main is None:
            self._box_of(mask)
            return self._compose(self.whole(), None, mask)
        return self._compose(self._box_of(main), main, mask)

    def full_contour(self, mask: np.ndarray) -> Image.Image:
        """The whole photo with the region's outer contour drawn."""
        self._box_of(mask)
        return self._compose(self.whole(), None, mask)

    def plain(self) -> Image.Image:
        """The whole photo, only downscaled to ``max_side``."""
        return self._compose(self.whole(), None, None)

    def crop(self, mask: np.ndarray) -> Image.Image:
        """The plain photo cropped to the box of the mask's pixels (the Crop baseline: nothing blurred)."""
        return self._compose(self._box_of(mask), None, None)
