"""Prompt pictures as a shared backdrop plus a few changed pixels, and their JPEG encoding that re-encodes only
the rows those pixels touch.

Many prompts of one photo share a backdrop: a part's context picture is its main object's blurred-background
crop with the part's contour drawn on it, and every paragraph picture is the photo (at the size sent) with one
region contoured. ``Picture`` is such a prompt: ``base`` (an RGB ``PIL.Image``, shared, never modified) and an
``Overlay`` (pixels painted in one colour). ``Picture.image()`` paints it on a copy.

``JpegEncoder.encode(picture)`` gives the same bytes as encoding ``picture.image()`` as a baseline JPEG with a
restart marker after every row of MCUs (Pillow's ``restart_marker_rows=1``), but works less: each backdrop is
encoded once (and kept while in use), and a picture is its backdrop's encoded MCU rows with the rows the overlay
touches encoded afresh. That is exact because, with a restart marker per MCU row, each row's entropy-coded
segment depends only on its own pixels: the colour conversion, the 2x2 chroma averaging (inside an MCU row), the
DCT and the quantisation work block by block, the Huffman tables are the standard ones (no ``optimize``), and the
DC prediction restarts at every marker. The strip is checked to have been written with the backdrop's very
tables; if not (another libjpeg, a Pillow without restart markers), the picture is encoded whole.
"""

from __future__ import annotations

import io
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

QUALITY = 92
_RST = re.compile(rb"\xff[\xd0-\xd7]")


@dataclass(frozen=True, eq=False)
class Overlay:
    """Pixels painted in ``color``: ``mask`` ``h x w`` bool placed with its top-left corner at ``(x, y)``."""

    mask: np.ndarray
    x: int
    y: int
    color: tuple[int, int, int]

    def paint(self, image: Image.Image, dy: int = 0) -> None:
        """Paint onto ``image`` in place, ``dy`` rows up (``image`` is a strip starting at row ``dy``)."""
        h, w = self.mask.shape
        image.paste(self.color, (self.x, self.y - dy, self.x + w, self.y - dy + h),
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
        """The picture as an RGB image (``base`` itself when there is no overlay: do not modify it)."""
        if self.overlay is None:
            return self.base
        out = self.base.copy()
        self.overlay.paint(out)
        return out


def encode_jpeg(image: Image.Image, quality: int = QUALITY, restart_rows: int = 0) -> bytes:
    """A baseline JPEG of an RGB image; ``restart_rows``: a restart marker after every that many MCU rows."""
    buf = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if restart_rows:
        rgb.save(buf, format="JPEG", quality=quality, restart_marker_rows=restart_rows)
    else:
        rgb.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass(frozen=True)
class _Parsed:
    """A JPEG cut into its header (SOI up to the end of the SOS header), with the SOF height zeroed in ``key``,
    and its entropy-coded segments, one per MCU row of ``mcu_h`` pixels."""

    data: bytes
    header: bytes
    key: bytes
    segments: list[bytes]
    mcu_h: int


def _parse(data: bytes) -> _Parsed | None:
    """``data`` cut for splicing; ``None`` unless it is a baseline JPEG with one restart interval per MCU row."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    pos, height, vmax, width, restart, hpos = 2, None, 1, None, None, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if marker in (0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return None  # not baseline Huffman
        if marker == 0xC0:
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            hpos = pos + 5
            comps = body[5]
            vmax = max(body[6 + 3 * i + 1] & 0x0F for i in range(comps))
            hmax = max(body[6 + 3 * i + 1] >> 4 for i in range(comps))
        elif marker == 0xDD:
            restart = int.from_bytes(body[0:2], "big")
        elif marker == 0xDA:
            end = pos + 2 + length
            if height is None or width is None or hpos is None or not restart:
                return None
            mcu_h = 8 * vmax
            if restart != math.ceil(width / (8 * hmax)):
                return None  # not one interval per MCU row
            segments = _RST.split(data[end:-2])
            if len(segments) != math.ceil(height / mcu_h):
                return None
            header = data[:end]
            key = header[:hpos] + b"\0\0" + header[hpos + 2 :]
            return _Parsed(data, header, key, segments, mcu_h)
        pos += 2 + length
    return None


class JpegEncoder:
    """JPEG bytes of ``Picture``s, re-encoding only the MCU rows an overlay changes (see the module docstring).

    Backdrop encodings are kept for the ``cache`` most recently used backdrops. Thread-safe.
    """

    def __init__(self, quality: int = QUALITY, cache: int = 8):
        self.quality = quality
        self.cache = cache
        self._bases: OrderedDict[int, tuple[Image.Image, bytes, _Parsed | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.spliced = 0  # pictures made from a backdrop's rows, for tests and benchmarks
        self.whole = 0  # pictures encoded whole

    def _base(self, base: Image.Image) -> tuple[bytes, _Parsed | None]:
        key = id(base)
        with self._lock:
            hit = self._bases.get(key)
            if hit is not None and hit[0] is base:
                self._bases.move_to_end(key)
                return hit[1], hit[2]
        data = encode_jpeg(base, self.quality, restart_rows=1)
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
            return encode_jpeg(picture, self.quality, restart_rows=1)
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
        return out if out is not None else encode_jpeg(picture.image(), self.quality, restart_rows=1)

    def _splice(self, base: Image.Image, overlay: Overlay, parsed: _Parsed) -> bytes | None:
        """The backdrop's segments with the rows under ``overlay`` encoded afresh; None if the strip's tables
        differ from the backdrop's."""
        w, h = base.size
        m = parsed.mcu_h
        y0 = max(0, overlay.y) // m * m
        y1 = min(h, math.ceil((overlay.y + overlay.mask.shape[0]) / m) * m)
        if y1 <= y0:
            return parsed.data
        strip = base.crop((0, y0, w, y1))
        overlay.paint(strip, dy=y0)
        s = _parse(encode_jpeg(strip, self.quality, restart_rows=1))
        if s is None or s.key != parsed.key or s.mcu_h != m:
            return None
        first = y0 // m
        segments = parsed.segments[:first] + s.segments + parsed.segments[first + len(s.segments) :]
        parts: list[bytes] = [parsed.header]
        for i, seg in enumerate(segments):
            if i:
                parts.append(bytes((0xFF, 0xD0 + (i - 1) % 8)))
            parts.append(seg)
        parts.append(b"\xff\xd9")
        return b"".join(parts)

