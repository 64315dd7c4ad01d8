"""A synthetic region-captioning task that only a model reading the mask can solve.

Each scene is a light-grey image with two to four coloured shapes; some large shapes hold a smaller shape
inside them, and some shapes are small. Every shape is a region; its caption comes from a fixed grammar and
names the shape's colour, kind and position and what contains it or what it contains. Several shapes share
an image, so the image alone does not say which one to describe: only the mask does.

Grammar (every caption is exactly one of these forms, lower case, no final period)::

    caption  := ART COLOUR " " SHAPE " " PLACE [ RELATION ]
    ART      := "an " before orange, else "a "
    COLOUR   := red | green | blue | yellow | purple | orange
    SHAPE    := square | circle | triangle
    PLACE    := "at the top left" | "at the top" | "at the top right"
              | "on the left"    | "in the center" | "on the right"
              | "at the bottom left" | "at the bottom" | "at the bottom right"
    RELATION := " inside " ART COLOUR " " SHAPE        (the target lies inside that shape)
              | " containing " ART COLOUR " " SHAPE    (that shape lies inside the target)

PLACE is the cell of a 3x3 grid over the image that holds the centre of the shape's box. A scene caption
(the whole image, used to pre-train the ablation's base model) lists the outer shapes' captions, top to
bottom then left to right, joined by ``", "``. Captions are unique within a scene.

Output of ``write_dataset(out_dir, ...)`` (and of ``python -m ureca_cli.train.synthetic OUT``):

- ``images/<image_id>.png``: RGB images, ``W x H`` from ``SceneConfig.sizes``;
- ``train.jsonl``, ``test.jsonl``: region records (``records.py``): ``id`` = ``"<image_id>/<node id>"``,
  ``image_id``, ``image`` (absolute path), ``width``, ``height``, ``rle`` (COCO compressed RLE of the whole
  shape, an inner shape's pixels included, as SA-1B masks are), ``bbox`` (XYWH pixels), ``caption``, and
  ``attributes`` ``{colour, shape, position, relation, other, small, area_fraction}``;
- ``train_images.jsonl``, ``test_images.jsonl``: the same scenes as image records (nodes with ``parent``,
  ``children``, ``depth``, ``area``, ``bbox``, ``rle``, ``role``, ``caption``) plus ``scene_caption``.

Everything is deterministic given the seed.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import records as R
from ..errors import UrecaError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (140, 60, 175),
    "orange": (245, 140, 30),
}
SHAPES = ("square", "circle", "triangle")
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
PLACE_PHRASE = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
BACKGROUND = (205, 205, 205)
QUESTION_SCENE = "Describe the image."


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Sizes are ``(W, H)`` in pixels; fractions are of ``min(W, H)``."""

    sizes: tuple[tuple[int, int], ...] = ((448, 448), (672, 448), (448, 672))
    objects: tuple[int, int] = (2, 4)  # outer shapes per scene, inclusive range
    large: tuple[float, float] = (0.24, 0.34)  # side of a large shape's box
    small: tuple[float, float] = (0.06, 0.10)  # side of a small shape's box
    p_small: float = 0.35  # chance that an outer shape is small
    p_inner: float = 0.6  # chance that a large shape holds a shape inside it
    inner: tuple[float, float] = (0.32, 0.42)  # side of an inner shape, as a fraction of its container's side
    small_area: float = 0.01  # a region is "small" when its area is under this fraction of the image

    def __post_init__(self):
        if not self.sizes or any(w < 32 or h < 32 for w, h in self.sizes):
            raise UrecaError("SceneConfig.sizes: every size needs W, H >= 32")
        lo, hi = self.objects
        if not 1 <= lo <= hi <= 6:
            raise UrecaError("SceneConfig.objects: needs 1 <= min <= max <= 6")
        for name in ("large", "small", "inner"):
            a, b = getattr(self, name)
            if not 0 < a <= b < 1:
                raise UrecaError(f"SceneConfig.{name}: needs 0 < min <= max < 1")
        for name in ("p_small", "p_inner", "small_area"):
            if not 0 <= getattr(self, name) <= 1:
                raise UrecaError(f"SceneConfig.{name}: needs a value in [0, 1]")


@dataclass
class Shape:
    """One drawn shape: its box (x0, y0, side, in pixels), kind, colour and place in the scene's tree."""

    id: int
    kind: str
    colour: str
    x0: float
    y0: float
    side: float
    parent: int | None = None
    children: list[int] = field(default_factory=list)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    def polygon(self) -> list[tuple[float, float]] | None:
        x0, y0, s = self.x0, self.y0, self.side
        if self.kind == "triangle":
            return [(x0 + s / 2, y0), (x0 + s, y0 + s), (x0, y0 + s)]
        if self.kind == "square":
            return [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]
        return None

    def draw(self, draw: Any, fill: Any) -> None:
        poly = self.polygon()
        if poly is None:
            draw.ellipse([self.x0, self.y0, self.x0 + self.side, self.y0 + self.side], fill=fill)
        else:
            draw.polygon(poly, fill=fill)

    def inner_centre(self) -> tuple[float, float]:
        """Centre of the largest circle inside the shape (where an inner shape goes)."""
        cx, cy = self.centre
        if self.kind == "triangle":  # incircle of the isosceles triangle with base = height = side
            r = self.side / (1 + math.sqrt(5))
            return cx, self.y0 + self.side - r
        return cx, cy


def position_of(cx: float, cy: float, width: int, height: int) -> str:
    """The 3x3 grid cell (``"top left"`` ... ``"bottom right"``) that holds the point (x, y) in pixels."""
    col = min(2, int(3 * cx / width))
    row = min(2, int(3 * cy / height))
    return POSITIONS[row][col]


def _near_grid_line(cx: float, cy: float, width: int, height: int, margin: float = 0.03) -> bool:
    fx, fy = cx / width, cy / height
    return any(abs(f - t) < margin for f in (fx, fy) for t in (1 / 3, 2 / 3))


def _place_outer(rng: np.random.Generator, cfg: SceneConfig, width: int, height: int) -> list[Shape]:
    base = min(width, height)
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    shapes: list[Shape] = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(n):
        small = rng.random() < cfg.p_small
        lo, hi = cfg.small if small else cfg.large
        side = float(rng.uniform(lo, hi)) * base
        for _try in range(60):
            x0 = float(rng.uniform(2, width - side - 2))
            y0 = float(rng.uniform(2, height - side - 2))
            if _near_grid_line(x0 + side / 2, y0 + side / 2, width, height):
                continue
            gap = 0.03 * base
            if all(
                x0 + side + gap < bx or bx + bs + gap < x0 or y0 + side + gap < by or by + bs + gap < y0
                for bx, by, bs, _ in boxes
            ):
                break
        else:
            continue
        boxes.append((x0, y0, side, 0.0))
        shapes.append(Shape(len(shapes), str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), x0, y0, side))
    return shapes


def _add_inner(rng: np.random.Generator, cfg: SceneConfig, shapes: list[Shape], width: int, height: int) -> None:
    base = min(width, height)
    for outer in list(shapes):
        if outer.side < cfg.large[0] * base * 0.99 or rng.random() >= cfg.p_inner:
            continue
        side = float(rng.uniform(*cfg.inner)) * outer.side
        cx, cy = outer.inner_centre()
        colour = str(rng.choice([c for c in COLOURS if c != outer.colour]))
        inner = Shape(len(shapes), str(rng.choice(SHAPES)), colour, cx - side / 2, cy - side / 2, side, parent=outer.id)
        outer.children.append(inner.id)
        shapes.append(inner)


def _noun(shape: Shape) -> str:
    article = "an" if shape.colour[0] in "aeiou" else "a"
    return f"{article} {shape.colour} {shape.kind}"


def caption_of(shape: Shape, shapes: list[Shape], width: int, height: int) -> str:
    """The grammar's caption of ``shape`` in its scene (see the module docstring)."""
    place = PLACE_PHRASE[position_of(*shape.centre, width, height)]
    text = f"{_noun(shape)} {place}"
    if shape.parent is not None:
        text += f" inside {_noun(shapes[shape.parent])}"
    elif shape.children:
        text += f" containing {_noun(shapes[shape.children[0]])}"
    return text


def make_scene(seed: int, cfg: SceneConfig = SceneConfig()) -> tuple[int, int, list[Shape]]:
    """``(W, H, shapes)`` of scene ``seed``: outer shapes first, then inner ones; captions unique."""
    rng = np.random.default_rng([seed, 0x5EC])
    for _ in range(100):
        width, height = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        shapes = _place_outer(rng, cfg, width, height)
        if len(shapes) < cfg.objects[0]:
            continue
        _add_inner(rng, cfg, shapes, width, height)
        caps = [caption_of(s, shapes, width, height) for s in shapes]
        if len(set(caps)) == len(caps):
            return width, height, shapes
    raise UrecaError(f"scene {seed}: could not place the shapes; use fewer or smaller objects")


def render(width: int, height: int, shapes: list[Shape]) -> tuple[Any, list[np.ndarray]]:
    """The scene as an RGB ``PIL.Image`` and one ``HxW uint8`` 0/1 mask per shape (inner pixels included)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in shapes:  # outer shapes come first, so inner ones are drawn on top
        s.draw(draw, COLOURS[s.colour])
    masks = []
    for s in shapes:
        m = Image.new("L", (width, height), 0)
        s.draw(ImageDraw.Draw(m), 1)
        masks.append(np.asarray(m, dtype=np.uint8))
    return img, masks


def scene_records(seed: int, image_path: Path, cfg: SceneConfig = SceneConfig()) -> tuple[dict, list[dict]]:
    """Draw scene ``seed`` to ``image_path`` (PNG) and return its image record and region records."""
    from .. import masks as M

    width, height, shapes = make_scene(seed, cfg)
    img, bitmaps = render(width, height, shapes)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(image_path)
    image_id = image_path.stem
    nodes, regions = [], []
    for s, bm in zip(shapes, bitmaps, strict=True):
        area = int(bm.sum())
        box = M.pixel_box(bm)
        caption = caption_of(s, shapes, width, height)
        other = shapes[s.parent] if s.parent is not None else (shapes[s.children[0]] if s.children else None)
        attrs = {
            "colour": s.colour,
            "shape": s.kind,
            "position": position_of(*s.centre, width, height),
            "relation": "inside" if s.parent is not None else ("containing" if s.children else None),
            "other": f"{other.colour} {other.kind}" if other is not None else None,
            "small": area < cfg.small_area * width * height,
            "area_fraction": round(area / (width * height), 5),
        }
        node = {
            R.ID: s.id,
            R.PARENT: s.parent,
            R.CHILDREN: list(s.children),
            R.DEPTH: 1 if s.parent is None else 2,
            R.AREA: area,
            R.BBOX: list(box) if box else [0, 0, 0, 0],
            R.RLE: M.encode(bm),
            R.ROLE: R.ROLE_MAIN if s.parent is None else R.ROLE_PART,
            R.CAPTION: caption,
            "attributes": attrs,
        }
        nodes.append(node)
    outer = sorted((s for s in shapes if s.parent is None), key=lambda s: (s.centre[1], s.centre[0]))
    rec = {
        R.IMAGE_ID: image_id,
        R.IMAGE: str(image_path.resolve()),
        R.WIDTH: width,
        R.HEIGHT: height,
        R.NODES: nodes,
        "scene_caption": ", ".join(caption_of(s, shapes, width, height) for s in outer),
        R.SCHEMA: R.SCHEMA_VERSION,
        R.SOURCE: "synthetic",
    }
    for node in nodes:
        regions.append(R.to_region_record(rec, node, attributes=node["attributes"]))
    return rec, regions


def write_dataset(out_dir: str | Path, *, train: int = 200, test: int = 40, seed: int = 0,
                  cfg: SceneConfig = SceneConfig()) -> dict[str, Path]:
    """Write ``train`` + ``test`` scenes under ``out_dir`` (layout in the module docstring); return the paths.

    Scene ``i`` of the whole set uses seed ``seed * 1_000_003 + i``; the test scenes follow the train ones,
    so no image is on both sides.
    """
    from ..stream import dumps

    if train < 0 or test < 0 or train + test == 0:
        raise UrecaError("synthetic: needs train >= 0, test >= 0 and at least one scene")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    start = 0
    for split, n in (("train", train), ("test", test)):
        reg_path, img_path = out / f"{split}.jsonl", out / f"{split}_images.jsonl"
        with reg_path.open("wb") as reg_fh, img_path.open("wb") as img_fh:
            for i in range(start, start + n):
                rec, regions = scene_records(seed * 1_000_003 + i, out / "images" / f"syn{seed}_{i:05d}.png", cfg)
                img_fh.write(dumps(rec))
                for r in regions:
                    reg_fh.write(dumps(r))
        start += n
        paths[split], paths[f"{split}_images"] = reg_path, img_path
    return paths


# --------------------------------------------------------------------------------- reading captions back
_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_PLACE_RE = "|".join(sorted(PLACE_PHRASE.values(), key=len, reverse=True))
_HEAD = re.compile(rf"\b({_COLOUR_RE})\s+({_SHAPE_RE})\b")
_PLACE = re.compile(rf"\b({_PLACE_RE})\b")
_PHRASE_TO_POS = {v: k for k, v in PLACE_PHRASE.items()}


def parse_caption(text: str) -> dict[str, str | None]:
    """The target's ``colour``, ``shape`` and ``position`` as a caption in the grammar states them.

    The first ``COLOUR SHAPE`` pair is the target (a relation's shape comes after it); a field the caption
    does not state is ``None``. Works on free text too, so a half-right caption still gets partial credit.
    """
    text = text.lower()
    head = _HEAD.search(text)
    place = _PLACE.search(text)
    return {
        "colour": head.group(1) if head else None,
        "shape": head.group(2) if head else None,
        "position": _PHRASE_TO_POS[place.group(1)] if place else None,
    }


def attribute_accuracy(preds: dict[str, str], refs: list[dict]) -> dict[str, float]:
    """Accuracy (0-100) of the colour, shape and position a caption names, overall and on small regions.

    ``preds`` maps region id to caption; ``refs`` are synthetic region records (with ``attributes``). Returns
    ``{"colour", "shape", "position", "all"}`` and the same keys with a ``small_`` prefix; ``all`` counts a
    region right only when all three are right. Regions with no prediction count as wrong.
    """
    keys = ("colour", "shape", "position")
    hits: dict[str, list[float]] = {k: [] for k in (*keys, "all")}
    small: dict[str, list[float]] = {k: [] for k in (*keys, "all")}
    for ref in refs:
        attrs = ref["attributes"]
        got = parse_caption(preds.get(ref[R.ID], ""))
        right = {k: float(got[k] == attrs[k]) for k in keys}
        right["all"] = float(all(right.values()))
        for k, v in right.items():
            hits[k].append(v)
            if attrs.get("small"):
                small[k].append(v)
    out = {k: 100 * float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    out.update({f"small_{k}": 100 * float(np.mean(v)) if v else float("nan") for k, v in small.items()})
    out["n"], out["n_small"] = len(hits["all"]), len(small["all"])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m ureca_cli.train.synthetic OUT [--train N] [--test N] [--seed S] [--size WxH ...]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m ureca_cli.train.synthetic", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write images/, train.jsonl, test.jsonl and *_images.jsonl into")
    ap.add_argument("--train", type=int, default=200, help="scenes in the training split (default 200)")
    ap.add_argument("--test", type=int, default=40, help="scenes in the held-out split (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", action="append", help="image size WxH (repeat for several; default 448x448, "
                    "672x448, 448x672)")
    args = ap.parse_args(argv)
    try:
        sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in args.size) if args.size else None
        cfg = SceneConfig(sizes=sizes) if sizes else SceneConfig()  # type: ignore[arg-type]
        paths = write_dataset(args.out, train=args.train, test=args.test, seed=args.seed, cfg=cfg)
    except (UrecaError, ValueError) as e:
        print(f"synthetic: error: {e}", file=sys.stderr, flush=True)
        return 2
    for name, p in paths.items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
