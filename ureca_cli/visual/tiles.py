"""The size a picture is drawn at when nothing else is asked: what InternVL's dynamic tiling will use of it.

InternVL (the model the paper curates with; transformers' ``GotOcr2ImageProcessor`` with ``crop_to_patches``,
and the released ``dynamic_preprocess`` that vLLM and LMDeploy copy) shows a ``W x H`` picture as a grid of
``cols x rows`` tiles of ``tile`` pixels (448), ``min_tiles <= cols * rows <= max_tiles`` (1..12): the grid whose
ratio ``cols / rows`` is closest to ``W / H`` (on a tie, a grid with more tiles while the picture is large enough).
The picture is resized to exactly ``cols * tile x rows * tile`` pixels (plus a ``tile x tile`` thumbnail), so
any pixel beyond that is thrown away by the model's processor.

``TileBudget.fit(w, h)`` is therefore the smallest size, keeping the aspect ratio, whose width and height both
still cover the canvas of every grid the rule may pick for that aspect ratio (all tied grids, whichever way a
server breaks the tie), and for which the rule still has the same choice of grids: the model gets at least as
many pixels as its processor keeps, never fewer. A picture already that small or smaller is left alone (never
enlarged). For a 1500x2250 SA-1B photo (2:3, grid 2x3) that
is 896x1344; for 2000x1500 (4:3, grid 4x3) 1792x1344; for a region's 300x500 crop, the crop itself.

No Pillow, numpy or transformers here: the rule is arithmetic (``tests/test_visual_size.py`` checks it against
transformers' own grid function and the released one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InputError

INTERNVL_TILE = 448
INTERNVL_MAX_TILES = 12


@lru_cache(maxsize=64)
def _grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    return tuple((c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)
                 if min_tiles <= c * r <= max_tiles)


@dataclass(frozen=True)
class TileBudget:
    """A model that sees a picture as at most ``max_tiles`` tiles of ``tile`` x ``tile`` pixels (InternVL)."""

    tile: int = INTERNVL_TILE
    max_tiles: int = INTERNVL_MAX_TILES
    min_tiles: int = 1

    def __post_init__(self):
        if self.tile < 16:
            raise InputError(f"tile size {self.tile}: must be at least 16 pixels")
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise InputError(f"tiles {self.min_tiles}..{self.max_tiles}: need 1 <= min <= max")

    def grids(self, w: int, h: int) -> list[tuple[int, int]]:
        """Every ``(cols, rows)`` grid whose ratio is closest to ``w / h`` (ties all listed, fewest tiles first)."""
        aspect = w / h
        grids = _grids(self.min_tiles, self.max_tiles)
        best = min(abs(aspect - c / r) for c, r in grids)
        return sorted(((c, r) for c, r in grids if abs(aspect - c / r) == best), key=lambda g: g[0] * g[1])

    def canvas(self, w: int, h: int) -> tuple[int, int]:
        """``(W, H)`` pixels: the most the processor keeps of a ``w x h`` picture in each direction (the widest
        and the tallest of the tied grids)."""
        grids = self.grids(w, h)
        return max(c for c, _ in grids) * self.tile, max(r for _, r in grids) * self.tile

    def fit(self, w: int, h: int) -> tuple[int, int]:
        """``(w, h)`` scaled down (never up), keeping the aspect ratio, to the smallest size that still covers
        ``canvas(w, h)`` in both directions; unchanged when that is no smaller, or when the rounded size would
        lead the processor to other grids (a picture whose ratio lies halfway between two grids' ratios, such as
        2250x1000 between 2x1 and 5x2: any change of ratio breaks the tie, perhaps towards the smaller grid)."""
        cw, ch = self.canvas(w, h)
        s = max(cw / w, ch / h)
        if s >= 1:
            return w, h
        size = min(w, max(cw, math.ceil(w * s - 1e-9))), min(h, max(ch, math.ceil(h * s - 1e-9)))
        if self.grids(*size) != self.grids(w, h):
            return w, h
        return size

    def describe(self) -> str:
        """For records' provenance: ``"internvl tiles: 12 x 448"``."""
        return f"internvl tiles: {self.max_tiles} x {self.tile}"
