"""Prompt pictures as a shared backdrop plus a few changed pixels, and their JPEG encoding that re-encodes only
the rows those pixels touch.

Many prompts of one photo share a backdrop: a part's context picture is its main object's blurred-background
crop with the part's contour drawn on it, and every paragraph picture is the photo (at the size sent) with one
region contoured. ``Picture`` is such a prompt: ``base`` (an RGB ``PIL.Image``, shared, never modified) and an
``Overlay`` (pixels painted in one colour). ``Picture.image()`` paints it on a copy, once.

``JpegEncoder.encode(picture)`` gives the same bytes as encoding ``picture.image()`` as a baseline JPEG with a
restart marker after every MCU (Pillow's ``restart_marker_blocks=1``; 2 bytes per 16x16 pixels, about 2% of the
file), but works less: each backdrop is encoded once (and kept while in use), and a picture is its backdrop's
encoded MCUs with the MCUs under the overlay's box encoded afresh (the box's MCU-aligned rectangle, cut from the
backdrop, painted and encoded on its own). That is exact because, with a restart marker after every MCU, each
MCU's entropy-coded segment depends only on its own pixels: the colour conversion, the 2x2 chroma averaging
(inside an MCU), the DCT and the quantisation work block by block, the Huffman tables are the standard ones (no
``optimize``), the DC prediction restarts at every marker, and a rectangle that reaches the picture's right or
bottom edge is padded there as the picture is. The rectangle is checked to have been written with the
backdrop's very tables and layout; if not (another libjpeg, a Pillow without restart markers), the picture is
encoded whole.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

QUALITY = 92


@dataclass(frozen=True, eq=False)
class Overlay:
    """Pixels painted in ``color``: ``mask`` ``h x w`` bool placed with its top-left corner at ``(x, y)``."""

    mask: np.ndarray
    x: int
    y: int
    color: tuple[int, int, int]

    def paint(self, image: Image.Image, dx: int = 0, dy: int = 0) -> None:
        """Paint onto ``image`` in place; ``image`` is the part of the backdrop from ``(dx, dy)`` on."""
        h, w = self.mask.shape
        image.paste(self.color, (self.x - dx, self.y - dy, self.x - dx + w, self.y - dy + h),
                    Image.fromarray(self.mask.astype(np.uint8) * 255))


@dataclass(frozen=True, eq=False)
class Picture:
    """A prompt picture: ``base`` (RGB, shared: never modified) with ``overlay`` painted on it (None: none)."""

    base: Image.Image
    overlay: Overlay | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.base.size

    def image(self) -> Image.Image:
        """The picture as an RGB image, drawn once (``base`` itself when there is no overlay): do not modify it."""
        if self.overlay is None:
            return self.base
        drawn = self.__dict__.get("_drawn")
        if drawn is None:  # two threads may both draw it: the same pixels, one of them kept
            drawn = self.base.copy()
            self.overlay.paint(drawn)
            object.__setattr__(self, "_drawn", drawn)
        return drawn


def encode_jpeg(image: Image.Image, quality: int = QUALITY, restart_blocks: int = 0) -> bytes:
    """A baseline JPEG of an RGB image; ``restart_blocks``: a restart marker after every that many MCUs."""
    buf = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if restart_blocks:
        rgb.save(buf, format="JPEG", quality=quality, restart_marker_blocks=restart_blocks)
    else:
        rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_MARKERS = [bytes((0xFF, 0xD0 + i)) for i in range(8)]
_NOT_BASELINE = {0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class _Parsed:
    """A JPEG with a restart marker after every MCU, cut for splicing: ``key`` is its header (SOI up to the end
    of the SOS header) with the picture's size zeroed; MCU ``i`` (raster order) is ``data[starts[i]:ends[i]]``,
    of ``cols x rows`` MCUs of ``mcu_w x mcu_h`` pixels."""

    data: bytes
    key: bytes
    starts: list[int]
    ends: list[int]
    cols: int
    rows: int
    mcu_w: int
    mcu_h: int


def _parse(data: bytes) -> _Parsed | None:
    """``data`` cut for splicing; ``None`` unless it is a baseline JPEG with a restart marker after every MCU."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    pos, sof, restart = 2, None, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in _NOT_BASELINE:
            return None
        if marker == 0xC0:
            comps = [(body[6 + 3 * i + 1] >> 4, body[6 + 3 * i + 1] & 0x0F) for i in range(body[5])]
            sof = (pos + 5, int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"),
                   8 * max(c[0] for c in comps), 8 * max(c[1] for c in comps))
        elif marker == 0xDD:
            restart = int.from_bytes(body[0:2], "big")
        elif marker == 0xDA:
            if sof is None or restart != 1:
                return None
            end = pos + 2 + length
            spos, height, width, mcu_w, mcu_h = sof
            cols, rows = math.ceil(width / mcu_w), math.ceil(height / mcu_h)
            arr = np.frombuffer(data, dtype=np.uint8, count=len(data) - 2 - end, offset=end)
            marks = np.flatnonzero((arr[:-1] == 0xFF) & ((arr[1:] & 0xF8) == 0xD0)) + end
            if marks.size != cols * rows - 1:
                return None
            starts = np.concatenate(([end], marks + 2)).tolist()
            ends = np.concatenate((marks, [len(data) - 2])).tolist()
            key = data[:spos] + b"\0\0\0\0" + data[spos + 4 : end]
            return _Parsed(data, key, starts, ends, cols, rows, mcu_w, mcu_h)
        pos += 2 + length
    return None


class JpegEncoder:
    """JPEG bytes of ``Picture``s, re-encoding only the MCUs an overlay changes (see the module docstring).

    Backdrop encodings are kept for the ``cache`` most recently used backdrops. Thread-safe.
    """

    def __init__(self, quality: int = QUALITY, cache: int = 8):
        self.quality = quality
        self.cache = cache
        self._bases: OrderedDict[int, tuple[Image.Image, bytes, _Parsed | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.spliced = 0  # pictures made from a backdrop's MCUs, for tests and benchmarks
        self.whole = 0  # pictures encoded whole

    def _base(self, base: Image.Image) -> tuple[bytes, _Parsed | None]:
        key = id(base)
        with self._lock:
            hit = self._bases.get(key)
            if hit is not None and hit[0] is base:
                self._bases.move_to_end(key)
                return hit[1], hit[2]
        data = encode_jpeg(base, self.quality, restart_blocks=1)
        parsed = _parse(data)
        with self._lock:
            self._bases[key] = (base, data, parsed)
            self._bases.move_to_end(key)
            while len(self._bases) > self.cache:
                self._bases.popitem(last=False)
        return data, parsed

    def encode(self, picture: Picture | Image.Image) -> bytes:
        """The picture's JPEG bytes (a plain ``PIL.Image`` is encoded as it is, with the same settings)."""
        if not isinstance(picture, Picture):
            return encode_jpeg(picture, self.quality, restart_blocks=1)
        data, parsed = self._base(picture.base)
        overlay = picture.overlay
        if overlay is None:
            return data
        out = self._splice(picture.base, overlay, parsed) if parsed is not None else None
        with self._lock:
            if out is None:
                self.whole += 1
            else:
                self.spliced += 1
        return out if out is not None else encode_jpeg(picture.image(), self.quality, restart_blocks=1)

    def _splice(self, base: Image.Image, overlay: Overlay, b: _Parsed) -> bytes | None:
        """The backdrop's MCUs with those under ``overlay``'s box encoded afresh; None if the rectangle's
        encoding does not fit the backdrop's (other tables or layout)."""
        w, h = base.size
        oh, ow = overlay.mask.shape
        c0, r0 = max(0, overlay.x) // b.mcu_w, max(0, overlay.y) // b.mcu_h
        c1 = min(b.cols, math.ceil(min(w, overlay.x + ow) / b.mcu_w))
        r1 = min(b.rows, math.ceil(min(h, overlay.y + oh) / b.mcu_h))
        if c1 <= c0 or r1 <= r0:
            return b.data
        x0, y0 = c0 * b.mcu_w, r0 * b.mcu_h
        rect = base.crop((x0, y0, w if c1 == b.cols else c1 * b.mcu_w, h if r1 == b.rows else r1 * b.mcu_h))
        overlay.paint(rect, dx=x0, dy=y0)
        s = _parse(encode_jpeg(rect, self.quality, restart_blocks=1))
        if s is None or s.key != b.key or (s.cols, s.rows, s.mcu_w, s.mcu_h) != (c1 - c0, r1 - r0, b.mcu_w, b.mcu_h):
            return None
        data, sd, ss, se, cw = b.data, s.data, s.starts, s.ends, c1 - c0
        pieces: list[bytes] = []
        prev = 0
        for r in range(r0, r1):
            g0 = r * b.cols + c0  # the first MCU replaced in this row
            j = (r - r0) * cw
            pieces.append(data[prev : b.starts[g0]])  # up to it, the markers between included
            for k in range(cw):
                pieces.append(sd[ss[j + k] : se[j + k]])
                pieces.append(_MARKERS[(g0 + k) & 7])
            pieces.pop()  # the marker after the row's last replaced MCU is the backdrop's own
            prev = b.ends[g0 + cw - 1]
        pieces.append(data[prev:])
        return b"".join(pieces)
