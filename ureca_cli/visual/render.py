"""A picture of one mask tree, for a person: the image with its regions outlined, beside a drawing of the tree.

Left panel: the image (dimmed a little), every main object and part outlined in the colour of its depth
(depth 1 = main objects) and labelled with a short number at a point inside it. Right panel: the tree as an
indented outline with elbow connectors, one row per region in depth-first order (main objects by area,
largest first, children likewise): the same number and colour, the role, the share of the image and the
annotation id. Dropped masks are counted in the header, not drawn. Pillow and numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import records as R
from ..images import load_image
from ..masks import decode

# depth 1, 2, 3, ... (repeats deeper down): distinct on photos and on white
PALETTE = [
    (255, 64, 64),
    (64, 160, 255),
    (255, 200, 0),
    (60, 220, 120),
    (220, 90, 255),
    (255, 140, 40),
    (0, 220, 220),
]
MAX_SIDE = 900  # the image panel's longer side at most this many pixels
MIN_SIDE = 480  # small images are enlarged to this, so outlines and labels stay readable


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def depth_colour(depth: int) -> tuple[int, int, int]:
    return PALETTE[(max(depth, 1) - 1) % len(PALETTE)]


def _outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Boundary pixels of an ``HxW`` bool mask (those with a 4-neighbour outside), thickened inwards."""
    edge = np.zeros_like(mask)
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        edge |= inner & ~shrunk
        inner = shrunk
    return edge


def _anchor_candidates(mask: np.ndarray, limit: int = 400) -> list[tuple[int, int]]:
    """Points (x, y) inside the mask, nearest its centroid first (at most ``limit``), for a label."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return []
    d = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    step = max(1, ys.size // (limit * 4))  # thin large masks, keep the order by distance
    keep = np.argsort(d[::step], kind="stable")[:limit] * step
    return [(int(xs[k]), int(ys[k])) for k in keep]


def _overlaps(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    return any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken)


def tree_rows(rec: dict) -> list[dict]:
    """Kept nodes (main and part) in depth-first order, main objects and children by area, largest first."""
    nodes = {n[R.ID]: n for n in rec[R.NODES]}
    kept = {R.ROLE_MAIN, R.ROLE_PART}

    def by_area(ids: list) -> list:
        return sorted((i for i in ids if nodes[i].get(R.ROLE) in kept), key=lambda i: -nodes[i][R.AREA])

    rows: list[dict] = []

    def visit(node_id: Any) -> None:
        rows.append(nodes[node_id])
        for c in by_area(nodes[node_id].get(R.CHILDREN, [])):
            visit(c)

    for main in by_area([n[R.ID] for n in rec[R.NODES] if n.get(R.ROLE) == R.ROLE_MAIN]):
        visit(main)
    return rows


def render_tree(rec: dict, out: str | Path) -> Path:
    """Write the PNG of one image record's tree to ``out`` and return its path."""
    from PIL import Image, ImageDraw

    out = Path(out)
    width, height = rec[R.WIDTH], rec[R.HEIGHT]
    scale = min(MAX_SIDE / max(width, height), max(1.0, MIN_SIDE / max(width, height)))
    pw, ph = max(1, round(width * scale)), max(1, round(height * scale))
    photo = load_image(rec[R.IMAGE], where=str(rec[R.IMAGE_ID])).resize((pw, ph), Image.Resampling.LANCZOS)
    base = np.asarray(photo, dtype=np.float32) * 0.75 + 32  # dimmed, so outlines stand out
    canvas = base.astype(np.uint8)

    rows = tree_rows(rec)
    bitmaps: dict[Any, np.ndarray] = {}
    for node in rows:
        bitmap = decode(node[R.RLE], f"node {node[R.ID]}")
        bitmaps[node[R.ID]] = np.asarray(Image.fromarray(bitmap * 255).resize((pw, ph), Image.Resampling.NEAREST)) > 127
    for node in sorted(rows, key=lambda n: n[R.DEPTH]):  # deeper outlines on top
        canvas[_outline(bitmaps[node[R.ID]])] = depth_colour(node[R.DEPTH])

    panel = Image.fromarray(canvas)
    draw = ImageDraw.Draw(panel)
    font = _font(max(11, ph // 45))
    taken: list[tuple[int, int, int, int]] = []
    for k, node in enumerate(rows, 1):  # a label goes where the region shows outside its kept children
        own = bitmaps[node[R.ID]].copy()
        for c in node.get(R.CHILDREN, []):
            if c in bitmaps:
                own &= ~bitmaps[c]
        candidates = _anchor_candidates(own) or _anchor_candidates(bitmaps[node[R.ID]])
        if not candidates:
            continue
        text, colour = str(k), depth_colour(node[R.DEPTH])
        for x, y in candidates:
            left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
            box = (left - 3, top - 2, right + 3, bottom + 2)
            if not _overlaps(box, taken):
                break
        else:  # crowded: the point nearest the centroid
            x, y = candidates[0]
            left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
            box = (left - 3, top - 2, right + 3, bottom + 2)
        taken.append(box)
        draw.rectangle(box, fill=(20, 20, 20), outline=colour, width=2)
        draw.text((x, y), text, fill=(255, 255, 255), font=font, anchor="mm")

    tree_panel = _draw_tree_panel(rec, rows, ph)
    full = Image.new("RGB", (pw + tree_panel.width, max(ph, tree_panel.height)), (255, 255, 255))
    full.paste(panel, (0, 0))
    full.paste(tree_panel, (pw, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    full.save(out)
    return out


def _draw_tree_panel(rec: dict, rows: list[dict], panel_height: int) -> Any:
    from PIL import Image, ImageDraw

    counts = {role: sum(n.get(R.ROLE) == role for n in rec[R.NODES]) for role in R.ROLES}
    settings = rec.get("tree", {})
    header = [
        f"{rec[R.IMAGE_ID]}: {len(rec[R.NODES])} masks",
        f"{counts[R.ROLE_MAIN]} main, {counts[R.ROLE_PART]} parts, {counts[R.ROLE_DROPPED]} dropped",
        f"rule {settings.get('parent_rule', '?')}, threshold {settings.get('threshold', '?')}",
    ]
    row_h = int(np.clip((panel_height - 90) / max(len(rows), 1), 16, 26))
    font = _font(row_h - 4)
    head_font = _font(15)
    indent = 22
    max_depth = max((n[R.DEPTH] for n in rows), default=1)
    width = 40 + indent * max_depth + 300
    height = max(panel_height, 20 + 18 * len(header) + 26 + row_h * len(rows) + 10)
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    y = 10
    for line in header:
        draw.text((12, y), line, fill=(20, 20, 20), font=head_font)
        y += 18
    x = 12  # legend: one swatch per depth
    for d in range(1, max_depth + 1):
        draw.rectangle((x, y + 4, x + 12, y + 16), fill=depth_colour(d))
        draw.text((x + 16, y + 2), f"depth {d}", fill=(60, 60, 60), font=head_font)
        x += 80
    y += 26
    if not rows:
        draw.text((12, y), "no main objects", fill=(160, 0, 0), font=head_font)
        return img
    where: dict[Any, tuple[int, int]] = {}  # node id -> (x, y) of its swatch's centre
    for k, node in enumerate(rows, 1):
        cx = 20 + indent * (node[R.DEPTH] - 1)
        cy = y + row_h // 2
        parent = node.get(R.PARENT)
        if parent in where:  # elbow from the parent's swatch down and across
            px, py = where[parent]
            draw.line((px, py + 7, px, cy), fill=(150, 150, 150), width=1)
            draw.line((px, cy, cx - 7, cy), fill=(150, 150, 150), width=1)
        colour = depth_colour(node[R.DEPTH])
        draw.rectangle((cx - 7, cy - 7, cx + 7, cy + 7), fill=colour, outline=(40, 40, 40))
        share = 100.0 * node[R.AREA] / (rec[R.WIDTH] * rec[R.HEIGHT])
        text = f"{k}  {node[R.ROLE]}  {share:.1f}%  id {node[R.ID]}"
        draw.text((cx + 12, cy), text, fill=(20, 20, 20), font=font, anchor="lm")
        where[node[R.ID]] = (cx, cy)
        y += row_h
    return img
