"""SAM through transformers: load a checkpoint (hub id or local folder, safetensors only) and run it in
three steps that callers compose: encode an image once, decode many prompts against that encoding, upscale
the low-resolution logits to the image.

Families: ``SamModel`` + ``SamProcessor`` (``model_type`` "sam": facebook/sam-vit-base/-large/-huge) and
``Sam2Model`` + ``Sam2Processor`` ("sam2": facebook/sam2.1-hiera-*), told apart by the checkpoint's
config. Both take prompts in the frame of the resized image the encoder saw: SAM resizes the longest side to
1024 (and pads), SAM 2 resizes to 1024x1024; ``Encoding.frame`` holds that size, and ``decode`` scales
pixel coordinates of the original image into it, as the processors' own ``_normalize_coordinates`` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UrecaError, check_model_name, first_line
from ..loading import hub_offline
from ..loading import quiet_progress as _quiet_progress
from .config import DEFAULT_SAM_MODEL, check_sam_dtype

MASK_THRESHOLD = 0.0  # SAM's: a pixel is on the mask where its logit is above 0
FAMILIES = ("sam", "sam2")
UPSCALE_CHUNK = 32  # masks upscaled at once: SAM's post-processing goes through a 1024x1024 float map each


def pick_device(device: str | None, option: str = "--device") -> str:
    """``device`` checked (``cpu``, ``cuda``, ``cuda:1``), or ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if not device or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise UrecaError(f"{option} {device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UrecaError(f"{option} {device}: CUDA is not available on this machine")
    return device


def pick_dtype(dtype: str, device: str, option: str = "--sam-dtype") -> Any:
    """A torch dtype: ``auto`` is float32 on the CPU and bfloat16 on a GPU."""
    import torch

    check_sam_dtype(dtype, option)
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def rgb_array(image: Any) -> Any:
    """A PIL image or an ``HxW``/``HxWx3``/``HxWx4`` uint8 array -> a C-contiguous, writable ``HxWx3 uint8``
    array (a copy only where needed)."""
    import numpy as np

    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {arr.shape}")
    return np.require(arr[:, :, :3], requirements=["C", "W"])


def load_rgb(path: str | Path, where: str | None = None) -> Any:
    """The photo at ``path`` (a file, or a reference into a tar shard) as an ``HxWx3 uint8`` array, read through
    the one image loader (``ureca_cli.images``); a missing or undecodable image is an ``InputError`` naming
    ``where``."""
    from ..images import load_image

    said = where is None or str(where) == str(path)  # the loader's message names the file itself: once is enough
    return rgb_array(load_image(path, where=None if said else str(where)))


@dataclass
class Encoding:
    """One image through SAM's image encoder: what every prompt on that image reuses.

    ``embeddings``: SAM: a ``1 x C x h x w`` tensor; SAM 2: a list of such tensors (its feature pyramid,
    finest first). ``size``: the image's ``(H, W)`` in pixels. ``frame``: ``(h, w)`` of the resized image the
    encoder saw, the frame of SAM's prompt coordinates (before padding).
    """

    embeddings: Any
    size: tuple[int, int]
    frame: tuple[int, int]


class Segmenter:
    """A loaded SAM or SAM 2 model with its processor, on one device, in eval mode with no gradients.

    ``encode`` -> ``decode`` -> ``upscale`` is the whole use; ``predict.segment_regions`` and
    ``amg.generate_masks`` are built on these three and on nothing else, so a stand-in object with the same
    three methods (tests/sam_doubles.py) drives them with chosen masks.
    """

    def __init__(self, model: Any, processor: Any, *, name: str = "", device: str = "cpu"):
        family = getattr(model.config, "model_type", None)
        if family not in FAMILIES:
            raise UrecaError(f"{name or 'model'}: a {family!r} model, not SAM or SAM 2")
        self.model = model.to(device).eval().requires_grad_(False)
        self.processor = processor
        self.family = family
        self.name = name
        self.device = device
        self.dtype = next(model.parameters()).dtype

    # ------------------------------------------------------------------------------------------- encode
    def encode(self, images: list) -> list[Encoding]:
        """Images (``HxWx3 uint8`` arrays or PIL RGB) -> one ``Encoding`` each, in one encoder call."""
        import torch

        ip = self.processor.image_processor
        batch = ip(images=[rgb_array(im) for im in images], return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            emb = self.model.get_image_embeddings(pixels)
        sizes = [tuple(int(v) for v in s) for s in batch["original_sizes"].tolist()]
        if self.family == "sam":
            frames = [tuple(int(v) for v in s) for s in batch["reshaped_input_sizes"].tolist()]
        else:  # SAM 2: resized to a square, no padding; prompts are scaled by the processor's target size
            t = int(self.processor.target_size)
            frames = [(t, t)] * len(sizes)
        out = []
        for i, (size, frame) in enumerate(zip(sizes, frames, strict=True)):
            e = emb[i : i + 1] if self.family == "sam" else [level[i : i + 1] for level in emb]
            out.append(Encoding(e, size, frame))
        return out

    # ------------------------------------------------------------------------------------------- decode
    def decode(self, enc: Encoding, points: Any = None, labels: Any = None, boxes: Any = None,
               multimask: bool = True) -> tuple[Any, Any]:
        """Prompts on one encoded image -> (low-resolution mask logits ``N x K x h x w`` float32, predicted
        IoU ``N x K`` float32), torch tensors on the model's device; K = 3 with ``multimask``, else 1.

        ``points``: ``N x P x 2`` (x, y) pixels of the original image, ``labels``: ``N x P`` (1, 0; -10 pads);
        ``boxes``: ``N x 4`` XYXY pixels. Every one of the N prompts has the same number of points and
        either all have a box or none, so no padding token enters SAM's decoder.
        """
        import torch

        sy = enc.frame[0] / enc.size[0]
        sx = enc.frame[1] / enc.size[1]
        kw: dict[str, Any] = {}
        if points is not None:
            p = torch.as_tensor(points, dtype=torch.float32) * torch.tensor([sx, sy])
            kw["input_points"] = p[None].to(self.device)
            kw["input_labels"] = torch.as_tensor(labels, dtype=torch.long)[None].to(self.device)
        if boxes is not None:
            b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([sx, sy, sx, sy])
            kw["input_boxes"] = b[None].to(self.device)
        with torch.inference_mode():
            out = self.model(image_embeddings=enc.embeddings, multimask_output=multimask, **kw)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    # ------------------------------------------------------------------------------------------ upscale
    def upscale(self, enc: Encoding, logits: Any) -> Any:
        """Low-resolution logits ``N x K x h x w`` -> ``N x K x H x W`` float32 logits at the image's size
        (the processor's ``post_process_masks``: padding removed, bilinear), in chunks to bound memory."""
        import torch

        ip = self.processor.image_processor
        parts = []
        for chunk in logits.split(UPSCALE_CHUNK):
            if self.family == "sam":
                up = ip.post_process_masks([chunk], [list(enc.size)], [list(enc.frame)], binarize=False)[0]
            else:
                up = ip.post_process_masks([chunk], [list(enc.size)], binarize=False)[0]
            parts.append(up.float())
        if not parts:
            return torch.zeros((0, logits.shape[1], *enc.size), device=logits.device)
        return torch.cat(parts)


def load_sam(name: str = DEFAULT_SAM_MODEL, *, device: str | None = None, dtype: str = "auto",
             option: str = "--sam-model") -> Segmenter:
    """A ``Segmenter`` from a hub id or a local folder (``save_pretrained`` of a SAM/SAM 2 model and its
    processor). Weights load from safetensors only; nothing runs remote code. A model that cannot be had
    (offline and not cached, a folder without a SAM model) is one ``UrecaError`` that names ``option``
    and what to do."""
    check_model_name(option, name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    local = Path(name).expanduser().is_dir()
    fix = (f"pass {option} DIR, a folder holding the model and its processor (save_pretrained, or "
           f"`hf download {name if not local else DEFAULT_SAM_MODEL} --local-dir DIR` where the hub is reachable)")
    from transformers import AutoConfig

    with _quiet_progress():
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as e:
            if local:
                raise UrecaError(f"{option} {name}: no SAM model in this folder ({first_line(e)})") from None
            if hub_offline():
                raise UrecaError(f"{option} {name}: not available offline (not in the local Hugging Face cache "
                                 f"and HF_HUB_OFFLINE is set); {fix}") from None
            raise UrecaError(f"{option} {name}: cannot load it ({first_line(e)}); {fix}") from None
        family = getattr(config, "model_type", None)
        if family not in FAMILIES:
            raise UrecaError(f"{option} {name}: a {family!r} model, not SAM (model_type sam) or SAM 2 (sam2)")
        if family == "sam":
            from transformers import SamModel as Model
            from transformers import SamProcessor as Processor
        else:
            from transformers import Sam2Model as Model
            from transformers import Sam2Processor as Processor
        try:
            processor = Processor.from_pretrained(name)
            model = Model.from_pretrained(name, use_safetensors=True, dtype=torch_dtype)
        except (OSError, ValueError) as e:
            where = "its files" if local else "it"
            raise UrecaError(f"{option} {name}: cannot load {where} ({first_line(e)}; weights are read from "
                             f"safetensors only); {fix}") from None
    return Segmenter(model, processor, name=str(name), device=dev)
