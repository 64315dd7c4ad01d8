"""Region embeddings with DINOv2 and the similar sets that uniqueness refinement works on.

Two ways to embed the regions of one image, both through transformers' ``Dinov2Model``:

- ``crop`` (the released pipeline's input): one forward pass per region, on the region's blurred-background
  crop, letterboxed to ``crop_size`` x ``crop_size``; the embedding is the final (layer-normed) CLS token.
- ``masked-pool``: one forward pass over the whole image (long side ``pool_side`` pixels, both sides a
  multiple of the patch size); each region's embedding is the mean of the patch tokens weighted by the
  fraction of the patch's pixels that the mask covers (the mask is downsampled to the patch grid by area).
  N regions cost one forward pass instead of N.

Embeddings are L2-normalised ``float32`` arrays of shape ``(N, D)``; cosine similarity is then a dot product.
A region whose mask is empty gets a zero vector and is similar to nothing.

The model is any ``Dinov2Model`` checkpoint (a hub id such as ``facebook/dinov2-base``, or a local folder), or
random weights built from a configuration: ``random:NAME`` names a configuration in ``ureca_cli/configs``
(``dinov2-vits14``, ``dinov2-base``, ``dinov2-tiny``), and a path to a ``.json`` file is read as one. Random
weights are for tests and benchmarks: their similarities mean nothing about what the regions show.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UrecaError, check_model_name, first_line
from ..model.folders import check_model_folder

FEATURE_MODES = ("crop", "masked-pool")
DTYPES = ("float32", "bfloat16", "float16")
# ImageNet statistics, as DINOv2 was trained with
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class FeatureConfig:
    """How regions are embedded."""

    model: str = "facebook/dinov2-base"
    mode: str = "crop"  # crop | masked-pool
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32  # crops per forward pass (crop mode)
    crop_size: int = 224  # side of the square a crop is letterboxed into (crop mode)
    pool_side: int = 518  # long side of the whole image in pixels (masked-pool mode)
    seed: int = 0  # for random weights

    def __post_init__(self):
        if self.mode not in FEATURE_MODES:
            raise UrecaError(f"--features {self.mode!r}: choose one of {', '.join(FEATURE_MODES)}")
        if self.dtype not in DTYPES:
            raise UrecaError(f"--features-dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.batch_size < 1:
            raise UrecaError(f"--features-batch {self.batch_size}: needs at least 1")
        if self.crop_size < 14:
            raise UrecaError(f"crop size {self.crop_size}: needs at least 14 pixels (one patch)")
        if self.pool_side < 14:
            raise UrecaError(f"--pool-side {self.pool_side}: needs at least 14 pixels (one patch)")
        if not self.model:
            raise UrecaError("--features-model: give a hub id, a local folder or random:NAME")


# --------------------------------------------------------------------------------------------- loading
def package_config(name: str) -> Path:
    """Path of a configuration shipped in ``ureca_cli/configs`` (``name`` without ``.json``)."""
    path = Path(str(resources.files("ureca_cli") / "configs" / f"{name}.json"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("dinov2*.json"))
        raise UrecaError(f"no model configuration {name!r} in the package (there are: {', '.join(shipped)})")
    return path


def random_config_path(spec: str) -> Path | None:
    """The configuration file that ``spec`` asks random weights for, or ``None`` for a checkpoint."""
    if spec.startswith("random:"):
        name = spec[len("random:"):]
        return Path(name) if name.endswith(".json") else package_config(name)
    if spec.endswith(".json"):
        return Path(spec)
    return None


def load_dinov2(spec: str, *, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Any:
    """A ``Dinov2Model`` in eval mode on ``device``: a checkpoint (hub id or folder) or random weights."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from ..stream import read_json_file

    torch_dtype = getattr(torch, dtype)
    cfg_path = random_config_path(spec)
    try:
        if cfg_path is not None:
            data = read_json_file(cfg_path)
            if not isinstance(data, dict) or data.get("model_type", "dinov2") != "dinov2":
                raise UrecaError(f"{cfg_path}: not a DINOv2 configuration (model_type should be dinov2)")
            config = Dinov2Config(**{k: v for k, v in data.items() if k != "model_type"})
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = Dinov2Model(config)
        else:
            check_model_name("--features-model", spec)
            try:
                check_model_folder(spec, "--features-model", ("dinov2",))
            except UrecaError as e:
                raise UrecaError(f"cannot load the DINOv2 model {spec!r}: {e}") from None
            model = Dinov2Model.from_pretrained(spec, use_safetensors=True)
    except UrecaError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers and safetensors raise many types for a bad folder
        first = first_line(e)
        how = "" if Path(spec).expanduser().is_dir() else (
            "; pass --features-model DIR, a local copy (a DINOv2 folder saved with save_pretrained)")
        raise UrecaError(f"cannot load the DINOv2 model {spec!r}: {first}{how}") from None
    try:
        model = model.to(device=device, dtype=torch_dtype)
    except (RuntimeError, AssertionError) as e:
        raise UrecaError(f"DINOv2 device {device!r} (--features-device, else --device): {str(e).splitlines()[0]}") from None
    model.eval()
    return model


# ------------------------------------------------------------------------------------------- embedding
def _normalise(pixels: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` -> ``3xHxW float32`` normalised with the ImageNet statistics."""
    x = pixels.astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def letterbox(image: Any, size: int) -> np.ndarray:
    """A PIL image fitted into a ``size`` x ``size`` square, aspect kept, padded with the mean colour.

    Returns ``size x size x 3 uint8``. Unlike a centre crop, the whole region stays in view.
    """
    from PIL import Image

    img = image.convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), tuple(int(round(v * 255)) for v in MEAN))
    canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas)


def patch_grid(height: int, width: int, long_side: int, patch: int) -> tuple[int, int]:
    """Patch rows and columns for an image scaled so its long side is about ``long_side`` pixels.

    Never more patches than pixels along a side, so every patch covers at least one source pixel.
    """
    scale = long_side / max(height, width)
    gh = max(1, min(height, round(height * scale / patch)))
    gw = max(1, min(width, round(width * scale / patch)))
    return gh, gw


def patch_weights(bitmap: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Area of an ``HxW`` 0/1 mask inside each cell of a ``gh x gw`` patch grid, as a fraction of the mask.

    Pixel row ``y`` falls in patch row ``floor((y + 0.5) * gh / H)`` (pixel centres, as a resize maps them),
    columns alike; returns ``(gh * gw,) float32`` summing to 1, or all zeros for an empty mask. Only the box
    of the mask's pixels is summed, so a small region on a large photo costs little.
    """
    h, w = bitmap.shape
    gh, gw = grid
    cells = np.zeros((gh, gw), dtype=np.float64)
    rows = np.flatnonzero(bitmap.any(axis=1))
    if rows.size == 0:
        return np.zeros(gh * gw, dtype=np.float32)
    cols = np.flatnonzero(bitmap.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    sub = bitmap[y0:y1, x0:x1]
    ri = ((np.arange(y0, y1) + 0.5) * gh / h).astype(np.intp)  # patch row of each pixel row
    ci = ((np.arange(x0, x1) + 0.5) * gw / w).astype(np.intp)
    rs = np.flatnonzero(np.r_[True, ri[1:] != ri[:-1]])  # first pixel row of each patch row
    cs = np.flatnonzero(np.r_[True, ci[1:] != ci[:-1]])
    sums = np.add.reduceat(np.add.reduceat(sub, rs, axis=0, dtype=np.int64), cs, axis=1, dtype=np.int64)
    cells[np.ix_(ri[rs], ci[cs])] = sums
    total = cells.sum()
    return (cells / total).reshape(-1).astype(np.float32)


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


class RegionEmbedder:
    """Embeds regions with one DINOv2 model; safe to share between threads (one forward pass at a time)."""

    def __init__(self, cfg: FeatureConfig, model: Any | None = None):
        self.cfg = cfg
        self._model = model
        self._lock = threading.Lock()  # one forward pass at a time
        self._load_lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The DINOv2 model, loaded on first use."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = load_dinov2(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype,
                                              seed=self.cfg.seed)
        return self._model

    @property
    def patch_size(self) -> int:
        p = self.model.config.patch_size
        return int(p[0] if isinstance(p, list | tuple) else p)

    def _forward(self, batch: np.ndarray) -> Any:
        """``Bx3xHxW float32`` normalised pixels -> the model's last hidden state ``(B, 1 + patches, D)``."""
        import torch

        model = self.model
        param = next(model.parameters())
        with self._lock, torch.inference_mode():
            x = torch.from_numpy(batch).to(device=param.device, dtype=param.dtype)
            return model(pixel_values=x).last_hidden_state.float().cpu()

    def embed_crops(self, crops: list[Any]) -> np.ndarray:
        """PIL crops -> ``(N, D) float32`` L2-normalised CLS embeddings, in batches of ``batch_size``."""
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        out = []
        size = self.cfg.crop_size
        for start in range(0, len(crops), self.cfg.batch_size):
            chunk = crops[start:start + self.cfg.batch_size]
            batch = np.stack([_normalise(letterbox(c, size)) for c in chunk])
            out.append(self._forward(batch)[:, 0].numpy())
        return _l2(np.concatenate(out))

    def embed_masked(self, image: Any, bitmaps: Iterable[np.ndarray]) -> np.ndarray:
        """Whole PIL image + ``HxW`` 0/1 masks (image frame) -> ``(N, D) float32`` L2-normalised embeddings.

        One forward pass; each embedding pools the patch tokens with the mask's area per patch as weights.
        ``bitmaps`` may be a generator: each mask is reduced to the patch grid as it comes, so only one
        full-size mask is held at a time.
        """
        from PIL import Image

        img = image.convert("RGB")
        w, h = img.size
        p = self.patch_size
        gh, gw = patch_grid(h, w, self.cfg.pool_side, p)
        pixels = np.asarray(img.resize((gw * p, gh * p), Image.BICUBIC))
        tokens = self._forward(_normalise(pixels)[None])[0, 1:].numpy()  # (gh*gw, D)
        if tokens.shape[0] != gh * gw:  # models with register tokens put them after CLS
            tokens = tokens[-gh * gw:]
        rows = [patch_weights(b, (gh, gw)) for b in bitmaps]
        if not rows:
            return np.zeros((0, tokens.shape[1]), dtype=np.float32)
        weights = np.stack(rows)  # (N, gh*gw)
        return _l2(weights @ tokens)


# ---------------------------------------------------------------------------------------- similarities
def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """``(N, D)`` L2-normalised embeddings -> ``(N, N) float32`` cosine similarities."""
    if emb.size == 0:
        return np.zeros((len(emb), len(emb)), dtype=np.float32)
    return np.clip(emb @ emb.T, -1.0, 1.0).astype(np.float32)


def similar_sets(sim: np.ndarray, threshold: float, max_similar: int | None) -> list[list[tuple[int, float]]]:
    """For each row ``i``: the other indices ``j`` with ``sim[i, j] > threshold``, most similar first
    (ties by index), at most ``max_similar`` of them (``None``: no cap). Scores are Python floats."""
    out: list[list[tuple[int, float]]] = []
    n = sim.shape[0]
    for i in range(n):
        row = [(j, float(sim[i, j])) for j in range(n) if j != i and sim[i, j] > threshold]
        row.sort(key=lambda t: (-t[1], t[0]))
        out.append(row if max_similar is None else row[:max_similar])
    return out
