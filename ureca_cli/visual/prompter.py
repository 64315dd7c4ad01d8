"""Visual prompts: what a chat model is shown of one region (Pillow and numpy only).

Frames and formats used here:
- image: a ``PIL.Image`` in RGB, ``W x H`` pixels (the record's ``width`` x ``height``);
- mask: ``HxW uint8`` (or bool) 0/1 bitmap in the same pixel frame as the image, or a ``masks.BoxedMask`` of it
  (only its box's window);
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
from ..masks.boxed import BoxedMask
from .jpeg import Overlay, Picture
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

    Works on the background's row runs (a few per row) rather than its pixels: a run touches the runs of the
    next row whose columns overlap its own; connected runs are grouped by hooking each edge's larger root under
    its smaller and jumping to the roots (a handful of numpy passes over the runs, even for a spiral); groups
    with no run on the border are holes, and only their runs are painted.
    """
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return m.copy()
    h, w = m.shape
    p = np.zeros((h, w + 2), dtype=np.int8)
    p[:, 1:-1] = ~m
    d = np.diff(p, axis=1)  # +1 where a background run starts, -1 one past where it ends
    rows, starts = np.nonzero(d == 1)
    ends = np.nonzero(d == -1)[1]
    n = rows.size
    if n == 0:
        return m.copy()
    stride = w + 1
    key_s, key_e = rows * stride + starts, rows * stride + ends  # runs in row-major order: both sorted
    below = np.flatnonzero(rows > 0)  # each run and the runs of the row above that overlap it
    above = (rows[below] - 1) * stride
    lo = np.searchsorted(key_e, above + starts[below], side="right")
    count = np.maximum(np.searchsorted(key_s, above + ends[below], side="left") - lo, 0)
    eb = np.repeat(below, count)
    ea = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    parent = np.arange(n)
    while True:
        pa, pb = parent[ea], parent[eb]
        small, big = np.minimum(pa, pb), np.maximum(pa, pb)
        if not (small != big).any():
            break
        np.minimum.at(parent, big, small)
        while True:
            pp = parent[parent]
            if (pp == parent).all():
                break
            parent = pp
    outside = np.zeros(n, dtype=bool)
    outside[parent[(rows == 0) | (rows == h - 1) | (starts == 0) | (ends == w)]] = True
    hole = np.flatnonzero(~outside[parent])
    out = m.copy()
    if hole.size:
        length = ends[hole] - starts[hole]
        first = rows[hole] * w + starts[hole]
        out.ravel()[np.repeat(first - np.cumsum(length) + length, length) + np.arange(int(length.sum()))] = True
    return out


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
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    small = rgb.resize((sw, sh), Image.Resampling.BOX) if (sw, sh) != (w, h) else rgb
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

    Masks are ``HxW`` 0/1 arrays in the photo's frame or ``masks.BoxedMask``s of it (annotate decodes its masks
    as those: only the box's window). Thread-safe (a value two threads need at once may be computed twice,
    harmlessly). The images returned may be shared between calls: do not modify them.
    """

    CACHE = 8  # windows and composites kept: a main object's backdrop serves all its parts

    def __init__(self, image: Image.Image, settings: VisualSettings | None = None):
        self.image = image if image.mode == "RGB" else image.convert("RGB")
        self.settings = settings or VisualSettings()
        self._small: Image.Image | None = None
        self._windows = _Cache(self.CACHE)
        self._bases = _Cache(self.CACHE)
        self._boxed = _Cache(self.CACHE)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def _blurred_small(self) -> Image.Image:
        """The blurred photo at a reduced size (``blur``). When the whole photo is sent downscaled and the blur
        reduces it further anyway, it is reduced from that downscaled copy (made once, and a third of the pixels
        to read for a 1500x2250 photo): the same picture after a blur that strong."""
        if self._small is None:
            sigma = self.settings.sigma
            whole, size = self._sharp_window(self.whole())
            scale = size[0] / self.image.width
            if scale < 1 and sigma * scale / 6.0 >= 1:
                self._small = blur(whole, sigma * scale)
            else:
                self._small = blur(self.image, sigma)
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

    def _as_boxed(self, mask: Any) -> BoxedMask:
        """``mask`` (``HxW`` 0/1 array or ``BoxedMask``) as a ``BoxedMask`` of this photo, checked (an array's
        box is found once per array object)."""
        shape = mask.shape
        if tuple(shape) != (self.image.height, self.image.width):
            raise InputError(f"mask is {shape[1]}x{shape[0]} but the image is {self.image.width}x{self.image.height}")
        if isinstance(mask, BoxedMask):
            return mask
        key = id(mask)
        boxed = self._boxed.get(key, (mask,))
        if boxed is None:
            boxed = BoxedMask.from_bitmap(mask)
            if boxed is None:
                raise InputError("the region's mask is empty")
            self._boxed.put(key, boxed, (mask,))
        return boxed

    @staticmethod
    def _local(m: BoxedMask, box: Box, size: tuple[int, int], pad: int = 0) -> tuple[np.ndarray, int, int] | None:
        """The part of mask ``m`` that falls in the ``box`` window (XYWH, full resolution) at ``size`` (W, H):
        ``(bits, ox, oy)``, ``bits`` a bool array placed at ``(ox, oy)`` of the window at ``size``, covering the
        mask's pixels there and ``pad`` more pixels each way (clipped to the window); ``None`` when none fall in it.

        Resampled by nearest neighbour (each output pixel takes the mask pixel under its centre), over the
        mask's own box only, so a small region in a large window costs little.
        """
        x, y, w, h = box
        mx, my, mw, mh = m.box
        ax0, ay0, ax1, ay1 = mx - x, my - y, mx - x + mw, my - y + mh  # the mask's box in the window
        if ax1 <= 0 or ay1 <= 0 or ax0 >= w or ay0 >= h:
            return None
        W, H = size
        if (W, H) == (w, h):
            x0, y0, x1, y1 = max(0, ax0 - pad), max(0, ay0 - pad), min(W, ax1 + pad), min(H, ay1 + pad)
            out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            cx0, cy0, cx1, cy1 = max(0, ax0), max(0, ay0), min(w, ax1), min(h, ay1)
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = m.bits[cy0 - ay0 : cy1 - ay0, cx0 - ax0 : cx1 - ax0]
            return out, x0, y0
        sx, sy = W / w, H / h

        def axis(a0: int, a1: int, n_out: int, n_in: int, scale: float) -> tuple[int, int, np.ndarray]:
            """Output range [o0, o1) (padded, clipped) and, per output pixel, the mask-box index under its
            centre (-1 where outside the mask's box)."""
            o0 = max(0, math.floor(max(a0, 0) * scale) - pad)
            o1 = min(n_out, math.ceil(min(a1, n_in) * scale) + 1 + pad)
            src = np.minimum(((np.arange(o0, o1) + 0.5) / scale).astype(np.int64), n_in - 1) - a0
            return o0, o1, np.where((src >= 0) & (src < a1 - a0), src, -1)

        x0, x1, cols = axis(ax0, ax1, W, w, sx)
        y0, y1, rows = axis(ay0, ay1, H, h, sy)
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        ci, ri = np.flatnonzero(cols >= 0), np.flatnonzero(rows >= 0)
        if ci.size and ri.size:  # both ranges are contiguous: the sampled mask pixels land in one block
            out[ri[0] : ri[-1] + 1, ci[0] : ci[-1] + 1] = m.bits[rows[ri][:, None], cols[ci][None, :]]
        return out, x0, y0

    def _base(self, box: Box, sharp: BoxedMask | None) -> tuple[Image.Image, tuple[int, int]]:
        """The ``box`` window at the size sent, ``sharp`` kept sharp and the rest blurred (``None``: all sharp).
        Composites are cached by box and mask object (a main object's is the backdrop of every part's context
        picture, and its own blurred crop)."""
        window, size = self._sharp_window(box)
        if sharp is None:
            return window, size
        hit = self._bases.get(box, (sharp,))
        if hit is None:
            hit = self._blurred_window(box, size)
            local = self._local(sharp, box, size)
            if local is not None:
                keep, ox, oy = local
                region = (ox, oy, ox + keep.shape[1], oy + keep.shape[0])
                src = window if region == (0, 0, *size) else window.crop(region)
                hit.paste(src, region[:2], Image.fromarray(keep.astype(np.uint8) * 255))
            hit = self._bases.put(box, hit, (sharp,))
        return hit, size

    def _picture(self, box: Box, sharp: BoxedMask | None, contour: BoxedMask | None) -> Picture:
        """The ``box`` window with ``sharp`` kept sharp and the rest blurred (``None``: all sharp), and
        ``contour`` contoured: the (cached, shared) backdrop and the contour as an overlay. Pillow does the pixel
        work (pastes under masks), numpy only touches the masks' own windows."""
        base, size = self._base(box, sharp)
        if contour is None:
            return Picture(base)
        width = self.settings.contour_width
        local = self._local(contour, box, size, pad=max(0, (width - 1) // 2) + 1)
        if local is None:
            return Picture(base)
        bits, ox, oy = local
        band = contour_band(bits, width)
        bb = pixel_box(band)
        if bb is None:
            return Picture(base)
        bx, by, bw, bh = bb
        return Picture(base, Overlay(band[by : by + bh, bx : bx + bw], ox + bx, oy + by, self.settings.color))

    def whole(self) -> Box:
        return (0, 0, self.image.width, self.image.height)

    # ------------------------------------------------------------------------------- the prompt images
    def picture(self, kind: str, mask: Any = None, main: Any = None) -> Picture:
        """The prompt image ``kind`` (the name of one of the methods below, which give ``picture(...).image()``)
        as a ``jpeg.Picture``: its shared backdrop and its contour, so that ``jpeg.JpegEncoder`` re-encodes only
        the rows the contour touches."""
        if kind == "plain":
            return self._picture(self.whole(), None, None)
        m = self._as_boxed(mask)
        if kind == "blurred_crop":
            return self._picture(m.box, m, None)
        if kind == "crop":
            return self._picture(m.box, None, None)
        if kind == "full_contour" or (kind == "contour_in_context" and main is None):
            return self._picture(self.whole(), None, m)
        if kind == "contour_in_context":
            mm = self._as_boxed(main)
            return self._picture(mm.box, mm, m)
        raise ValueError(f"unknown prompt image {kind!r}")

    def blurred_crop(self, mask: Any) -> Image.Image:
        """The region sharp on a blurred background, cropped to the box of the mask's pixels."""
        return self.picture("blurred_crop", mask).image()

    def contour_in_context(self, mask: Any, main: Any | None = None) -> Image.Image:
        """A main object (``main`` None): the whole photo with the region contoured. A part: its main
        object's box, main object sharp, the rest blurred, the part contoured."""
        return self.picture("contour_in_context", mask, main).image()

    def full_contour(self, mask: Any) -> Image.Image:
        """The whole photo with the region's outer contour drawn."""
        return self.picture("full_contour", mask).image()

    def plain(self) -> Image.Image:
        """The whole photo, only downscaled to the size sent."""
        return self.picture("plain").image()

    def crop(self, mask: Any) -> Image.Image:
        """The plain photo cropped to the box of the mask's pixels (the Crop baseline: nothing blurred)."""
        return self.picture("crop", mask).image()
