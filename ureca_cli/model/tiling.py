"""Dynamic mask modeling: cut a binary mask into the same tiles InternVL cuts its image into.

InternVL's image processor (transformers' `GotOcr2ImageProcessor` with `crop_to_patches=True`) picks a grid of
`cols x rows` tiles whose aspect ratio is closest to the image's (between `min_tiles` and `max_tiles` tiles),
resizes the image to `(rows * S, cols * S)`, cuts it row by row into S x S tiles, and, when there is more than
one tile, appends a thumbnail (the whole image resized to S x S). `tile_mask` does exactly that to a mask, with
transformers' own grid function, so mask tile i always covers image tile i; resizing is nearest neighbour
(pixel centres), so every tile, the thumbnail included, holds only 0 and 1.
"""

from __future__ import annotations

import numpy as np

from ..masks.rle import resize_nearest


def tile_grid(height: int, width: int, tile: int, min_tiles: int = 1, max_tiles: int = 12) -> tuple[int, int]:
    """(cols, rows) of InternVL's tiling of a `height` x `width` image into `tile` x `tile` tiles.

    Uses transformers' `get_optimal_tiled_canvas`, the function the image processor itself calls.
    """
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    if max_tiles <= 1:
        return 1, 1
    cols, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
    return int(cols), int(rows)


def num_tiles(height: int, width: int, tile: int, min_tiles: int = 1, max_tiles: int = 12,
              dynamic: bool = True) -> int:
    """How many tiles (the thumbnail included) InternVL makes of a `height` x `width` image; 1 if not dynamic."""
    if not dynamic:
        return 1
    cols, rows = tile_grid(height, width, tile, min_tiles, max_tiles)
    return cols * rows + (1 if cols * rows > 1 else 0)


def tile_mask(
    mask: np.ndarray,
    tile: int,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    dynamic: bool = True,
    use_thumbnail: bool = True,
) -> np.ndarray:
    """Tile an HxW mask (any dtype; non-zero = inside) like InternVL tiles an HxW image.

    Returns an array (T, tile, tile) uint8 of 0/1: the grid's tiles row by row, then the thumbnail when the grid
    has more than one tile (T = cols * rows + 1), or T = 1. With `dynamic=False` it is the single resized mask
    (T = 1) of the paper's ablation.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    height, width = binary.shape
    if not dynamic:
        return resize_nearest(binary, tile, tile)[None].copy()
    cols, rows = tile_grid(height, width, tile, min_tiles, max_tiles)
    canvas = resize_nearest(binary, rows * tile, cols * tile)
    tiles = [canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(resize_nearest(binary, tile, tile))
    return np.ascontiguousarray(np.stack(tiles, axis=0))
