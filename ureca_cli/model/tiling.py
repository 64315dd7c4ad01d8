"""Dynamic mask modeling: cut a binary mask into the same tiles InternVL cuts its image into.

InternVL's image processor (transformers' `GotOcr2ImageProcessor` with `crop_to_patches=True`) picks a grid of
`cols x rows` tiles whose aspect ratio is closest to the image's (between `min_tiles` and `max_tiles` tiles),
resizes the image to `(rows * S, cols * S)`, cuts it row by row into S x S tiles, and, when there is more than
one tile, appends a thumbnail (the whole image resized to S x S). `tile_mask` does exactly that to a mask, with
transformers' own grid function, so mask tile i always covers image tile i; resizing is nearest neighbour
(pixel centres), so every tile, the thumbnail included, holds only 0 and 1.

The paper's released inference prepares images and masks its own way (its README's `load_image` and
`dynamic_preprocess`): `released_pixel_values` and `released_mask_tiles` reproduce it for models that came from
the released checkpoint (UrecaConfig.preprocessing "released").
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


# ------------------------------------------------------------------------------------------ released recipe
#: ImageNet mean and std, as the released README's `build_transform` normalises (after scaling to 0..1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def released_grid(width: int, height: int, tile: int, min_tiles: int = 1, max_tiles: int = 12) -> tuple[int, int]:
    """(cols, rows) that the released README's `dynamic_preprocess` picks for a `width` x `height` image.

    The candidate grids are taken in order of tile count (a set sorted by i * j, built as the README builds it,
    so grids with the same count keep the same order); the one whose aspect ratio is closest wins, and on a tie
    a later one wins when the image's area exceeds half the grid's pixel area. Differs from transformers'
    `get_optimal_tiled_canvas` on such ties, hence its own function.
    """
    aspect = width / height
    candidates = set(
        (i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    )
    best, best_diff = (1, 1), float("inf")
    area = width * height
    for i, j in sorted(candidates, key=lambda r: r[0] * r[1]):
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best, best_diff = (i, j), diff
        elif diff == best_diff and area > 0.5 * tile * tile * i * j:
            best = (i, j)
    return best


def _released_tiles(picture, tile: int, min_tiles: int, max_tiles: int, grid_resample, thumb_resample) -> list:
    """PIL tiles of `picture` as the released `dynamic_preprocess`: the picture resized to the grid, cut row by
    row, then (more than one tile) the whole picture resized to tile x tile."""
    cols, rows = released_grid(picture.width, picture.height, tile, min_tiles, max_tiles)
    canvas = picture.resize((cols * tile, rows * tile), grid_resample)
    tiles = [canvas.crop(((k % cols) * tile, (k // cols) * tile, (k % cols + 1) * tile, (k // cols + 1) * tile))
             for k in range(cols * rows)]
    if len(tiles) != 1:
        tiles.append(picture.resize((tile, tile), thumb_resample))
    return tiles


def released_pixel_values(image, tile: int, min_tiles: int = 1, max_tiles: int = 12):
    """RGB PIL image -> (T, 3, tile, tile) float32 tensor as the released README's `load_image`: bicubic resize
    to the grid and to the thumbnail, scaled to 0..1, normalised with ImageNet's mean and std."""
    import torch
    from PIL import Image

    image = image.convert("RGB")
    bicubic = Image.Resampling.BICUBIC
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
    out = []
    for t in _released_tiles(image, tile, min_tiles, max_tiles, bicubic, bicubic):
        x = torch.from_numpy(np.array(t, np.uint8, copy=True)).view(tile, tile, 3).permute(2, 0, 1).contiguous()
        out.append(x.to(torch.float32).div(255).sub_(mean).div_(std))
    return torch.stack(out)


def released_mask_tiles(mask: np.ndarray, tile: int, min_tiles: int = 1, max_tiles: int = 12) -> np.ndarray:
    """HxW mask (non-zero = inside) -> (T, tile, tile) uint8 as the released README prepares a mask.

    The mask becomes a float image of 0/255, cut on the image's grid with nearest resizing (tiles of 0/255),
    and its thumbnail is a bicubic resize of the float image: values between 0 and 255 at the border, and the
    bicubic overshoot (a little below 0 and above 255) wraps round when the README casts to uint8, as it does
    on x86 (-10.8 -> 246, 275.2 -> 19). The cast is done here explicitly (truncate, then modulo 256), so the
    result is the same on every machine. Tile order and count equal `released_pixel_values`' for an image of the
    mask's size.
    """
    from PIL import Image

    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    picture = Image.fromarray((np.asarray(mask) != 0).astype(np.float64) * 255)  # mode "F" (float32)
    tiles = _released_tiles(picture, tile, min_tiles, max_tiles, Image.Resampling.NEAREST,
                            Image.Resampling.BICUBIC)
    values = np.stack([np.asarray(t, dtype=np.float32) for t in tiles])
    return (np.trunc(values).astype(np.int64) & 0xFF).astype(np.uint8)
