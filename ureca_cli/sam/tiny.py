"""SAM models with random weights, built from a config without the hub: a tiny one for tests and the real
SAM ViT-B size (``ureca_cli/configs/sam-vit-base.json``) for benchmarks.

``save_tiny_sam(folder)`` writes model (safetensors) and processor with ``save_pretrained``, so tests load it
through ``load_sam(folder)``, the same path as a downloaded checkpoint. ``family="sam2"`` builds a tiny
SAM 2 (Hiera backbone) the same way. The same seed gives the same weights, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _sam_config(image_size: int, patch: int, width: int, layers: int, init: float) -> Any:
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=layers,
                             num_attention_heads=2, image_size=image_size, patch_size=patch, window_size=4,
                             global_attn_indexes=[layers - 1], num_pos_feats=width // 2, mlp_dim=2 * width,
                             initializer_range=init)
    prompt = SamPromptEncoderConfig(hidden_size=width, image_size=image_size, patch_size=patch,
                                    mask_input_channels=8)
    decoder = SamMaskDecoderConfig(hidden_size=width, mlp_dim=2 * width, num_hidden_layers=2,
                                   num_attention_heads=2, iou_head_hidden_dim=width)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
                     initializer_range=init)


def _sam2_config(image_size: int, width: int, init: float) -> Any:
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    s = image_size
    backbone = Sam2HieraDetConfig(hidden_size=8, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
                                  embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
                                  window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                                  window_positional_embedding_background_size=[2, 2])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
                              fpn_hidden_size=width)
    prompt = Sam2PromptEncoderConfig(hidden_size=width, image_size=s, patch_size=16, mask_input_channels=8)
    decoder = Sam2MaskDecoderConfig(hidden_size=width, mlp_dim=2 * width, num_hidden_layers=2,
                                    num_attention_heads=2, iou_head_hidden_dim=width)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
                      initializer_range=init)


def processor_for(config: Any) -> Any:
    """The processor a SAM/SAM 2 config needs, at its input size: SAM resizes the longest side to the
    encoder's ``image_size`` and pads to a square (logits at a quarter of it); SAM 2 resizes to the square.
    At 1024 these are the processors of facebook/sam-vit-base and facebook/sam2.1-hiera-*."""
    if config.model_type == "sam":
        from transformers import SamImageProcessor, SamProcessor

        s = config.vision_config.image_size
        s = s[0] if isinstance(s, list | tuple) else s
        ip = SamImageProcessor(size={"longest_edge": s}, pad_size={"height": s, "width": s},
                               mask_size={"longest_edge": s // 4}, mask_pad_size={"height": s // 4, "width": s // 4})
        return SamProcessor(image_processor=ip)
    from transformers import Sam2ImageProcessor, Sam2Processor

    s = config.prompt_encoder_config.image_size
    ip = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    return Sam2Processor(image_processor=ip)


def tiny_sam(*, seed: int = 0, family: str = "sam", image_size: int = 64, width: int = 32,
             init: float = 0.2) -> tuple[Any, Any]:
    """(model, processor): a random-weight ``SamModel`` (2-layer ViT, ``image_size`` input, patch 8:
    logits at ``image_size / 2``) or ``Sam2Model`` (4-stage Hiera, patch 16), eval mode, fp32.

    Weights are drawn with std ``init``, ten times transformers' default: at 0.02 a tiny SAM's mask logits
    are about 1e-5, so float rounding flips pixels across the 0 threshold between two equal computations;
    at 0.2 they are about 0.2."""
    import torch

    if family == "sam":
        from transformers import SamModel as Model

        config = _sam_config(image_size, 8, width, 2, init=init)
    elif family == "sam2":
        from transformers import Sam2Model as Model

        config = _sam2_config(max(image_size, 64), width, init)
    else:
        raise ValueError(f"family {family!r}: choose sam or sam2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Model(config)
    return model.eval(), processor_for(config)


def save_tiny_sam(folder: str | Path, *, seed: int = 0, **kwargs: Any) -> Path:
    """Build ``tiny_sam(seed=seed, **kwargs)`` and save model (safetensors) and processor to ``folder``."""
    from ..loading import quiet_progress as _quiet_progress

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = tiny_sam(seed=seed, **kwargs)
    with _quiet_progress():
        model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def packaged_sam_config(name: str = "sam-vit-base") -> dict[str, Any]:
    """A SAM config shipped in ``ureca_cli/configs/`` (``sam-vit-base``: facebook/sam-vit-base's
    ``SamConfig``, ViT-B image encoder, 93.7M parameters)."""
    from importlib.resources import files

    path = files("ureca_cli").joinpath("configs", f"{name}.json")
    if not path.is_file():
        raise ValueError(f"no packaged SAM config {name!r} (have: sam-vit-base)")
    return json.loads(path.read_text())


def random_sam(name: str = "sam-vit-base", *, seed: int = 0, device: str | None = None,
               dtype: str = "auto") -> Any:
    """A ``Segmenter`` around random weights at the size of a packaged config, with the real processor
    (1024 input). For benchmarks: the compute and memory of the real model, without the hub."""
    import torch
    from transformers import SamConfig, SamModel

    from .model import Segmenter, pick_device, pick_dtype

    dev = pick_device(device)
    data = packaged_sam_config(name)
    # facebook/sam-vit-base's vision config says initializer_range 1e-10 (its weights are always loaded):
    # drawn at that std, random activations fall into subnormal floats, which the CPU computes hundreds of
    # times slower. The random encoder is drawn at the model's 0.02 instead; the architecture is unchanged.
    data["vision_config"] = {**data["vision_config"], "initializer_range": data.get("initializer_range", 0.02)}
    config = SamConfig(**{k: v for k, v in data.items() if k != "model_type"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config).to(pick_dtype(dtype, dev))
    return Segmenter(model, processor_for(config), name=f"random {name}", device=dev)
