"""Prompts for SAM: points and boxes in image pixels, grouped into regions, parsed and checked.

Frames: a point is ``(x, y)`` in pixels of the original image, ``0 <= x < W`` and ``0 <= y < H`` (pixel
``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``); its label is 1 (positive: on the region) or 0 (negative: not
on it). A box is XYWH in pixels, as our records and SA-1B write boxes; SAM takes it as XYXY
``(x, y, x + w, y + h)``, the inclusive corners SAM's own boxes were computed with (SA-1B convention).

Pure Python (no numpy, no torch), so the CLI can parse and check ``--point``/``--box`` without loading them.
Every problem is one ``InputError`` naming the option and its value, and the image when one is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError

Box = tuple[float, float, float, float]  # XYWH pixels


def _num(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Point:
    """One click: ``(x, y)`` in image pixels; ``label`` 1 = on the region, 0 = not on it."""

    x: float
    y: float
    label: int = 1

    def spec(self) -> str:
        """The ``--point`` value that gives this point (``412,300`` or ``500,310:0``)."""
        return f"{_num(self.x)},{_num(self.y)}" + ("" if self.label == 1 else f":{self.label}")


@dataclass(frozen=True)
class Region:
    """What SAM turns into one mask: points and/or a box (XYWH pixels). At least one prompt is needed."""

    points: tuple[Point, ...] = ()
    box: Box | None = None

    def kind(self) -> tuple[int, bool]:
        """(number of points, has a box): regions of one kind go through SAM's decoder in one call."""
        return len(self.points), self.box is not None

    def spec(self) -> str:
        """The command-line options that give this region (``--point 412,300 --point 500,310:0``)."""
        parts = [f"--point {p.spec()}" for p in self.points]
        if self.box is not None:
            parts.append(f"--box {box_spec(self.box)}")
        return " ".join(parts)

    def prompt(self) -> dict:
        """The prompt as JSON fields, for the record of its mask: ``points`` ``[[x, y, label], ...]`` (image
        pixels) and ``box`` ``[x, y, w, h]`` (XYWH pixels), each where the region has it."""
        out: dict = {}
        if self.points:
            out["points"] = [[p.x, p.y, p.label] for p in self.points]
        if self.box is not None:
            out["box"] = list(self.box)
        return out


def box_spec(box: Box) -> str:
    """The ``--box`` value that gives this box (``x,y,w,h``)."""
    return ",".join(_num(v) for v in box)


def _numbers(text: str, n: int, option: str, shape: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != n:
        raise InputError(f"{option} {text}: expected {shape}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{option} {text}: expected {shape}, numbers in pixels") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} {text}: coordinates must be finite numbers")
    return values


def parse_point(text: str, option: str = "--point") -> Point:
    """``"x,y"`` (positive) or ``"x,y:L"`` with L 1 (positive) or 0 (negative) -> ``Point``.

    The image bounds are checked later, by ``check_regions``, where the image size is known.
    """
    coords, sep, label_text = str(text).strip().partition(":")
    x, y = _numbers(coords, 2, option, "x,y or x,y:0 (a negative point)")
    label = 1
    if sep:
        if label_text.strip() not in ("0", "1"):
            raise InputError(f"{option} {text}: the label after ':' must be 1 (on the region) or 0 (not on it)")
        label = int(label_text)
    return Point(x, y, label)


def parse_box(text: str, option: str = "--box") -> Box:
    """``"x,y,w,h"`` (XYWH pixels) -> a box tuple; an empty box (w or h <= 0) is refused here."""
    x, y, w, h = _numbers(str(text).strip(), 4, option, "x,y,w,h")
    if w <= 0 or h <= 0:
        raise InputError(f"{option} {text}: empty box (width and height must be above 0)")
    return (x, y, w, h)


def regions_from_options(points: Sequence[str] = (), boxes: Sequence[str] = ()) -> list[Region]:
    """The regions ``ureca caption IMAGE --point ... --box ...`` describes, parsed (not yet checked against
    the image: ``check_regions``). Each ``--box`` is a region of its own, in the order given; all ``--point``
    options together make one more region, after the boxes: the positive and negative clicks on one object
    (``--point 412,300 --point 500,310:0``). A point is never attached to a box."""
    regions = [Region(box=parse_box(b)) for b in boxes]
    if points:
        regions.append(Region(points=tuple(parse_point(p) for p in points)))
    return regions


def check_regions(regions: Sequence[Region], width: int, height: int, where: str = "") -> None:
    """Check every region against a ``width x height`` image; the first problem raises ``InputError``.

    A region needs a point or a box; a point must lie in the image (``0 <= x < W``, ``0 <= y < H``) with
    label 0 or 1; a box must have ``w, h > 0`` and lie in the image (``x, y >= 0``, ``x + w <= W``,
    ``y + h <= H``). A region of points alone needs a positive one: negative points say only where the region
    is not, so they have nothing to attach to. ``where`` names the image in the message.
    """
    img = f"the {width}x{height} image" + (f" {where}" if where else "")
    if not regions:
        raise InputError(f"no region to segment in {img}: give --point X,Y or --box X,Y,W,H")
    for i, region in enumerate(regions):
        if not isinstance(region, Region):
            raise TypeError(f"region {i} is a {type(region).__name__}, expected a sam.Region")
        if not region.points and region.box is None:
            raise InputError(f"region {i + 1} of {img} has no prompt: give it --point X,Y or --box X,Y,W,H")
        for p in region.points:
            if p.label not in (0, 1):
                raise InputError(f"--point {p.spec()}: the label must be 1 (on the region) or 0 (not on it)")
            if not (math.isfinite(p.x) and math.isfinite(p.y)):
                raise InputError(f"--point {p.spec()}: coordinates must be finite numbers")
            if not (0 <= p.x < width and 0 <= p.y < height):
                raise InputError(f"--point {p.spec()}: outside {img} (x in [0, {width}), y in [0, {height}))")
        if region.points and region.box is None and not any(p.label == 1 for p in region.points):
            raise InputError(f"{region.spec()}: negative points with no region to attach to in {img}: add a positive "
                             "--point X,Y on the region (all --point options make one region; a --box is a "
                             "region of its own)")
        if region.box is not None:
            box = region.box
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise InputError(f"--box {box!r}: expected four finite numbers x,y,w,h")
            x, y, w, h = box
            if w <= 0 or h <= 0:
                raise InputError(f"--box {box_spec(box)}: empty box (width and height must be above 0)")
            if x < 0 or y < 0 or x + w > width or y + h > height:
                raise InputError(f"--box {box_spec(box)}: reaches outside {img} (needs x, y >= 0, "
                                 f"x + w <= {width}, y + h <= {height})")
