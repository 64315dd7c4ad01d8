"""The URECA model: InternVL + mask encoder with dynamic mask modeling; checkpoints; tiny test models.

Python API (torch and transformers are imported only when a name below is first used):

- `UrecaConfig(base=None|"OpenGVLab/InternVL3-1B-hf"|folder, num_mask_tokens=8 (4/8/16),
  mask_projector="linear"|"mlp", dynamic_mask=True, tile_size=448, min_tiles=1, max_tiles=12,
  question="Describe this region in the image.")`: frozen settings, saved in every checkpoint (`config.py`,
  which needs no torch; training composes its configuration from it).
- `build_ureca(internvl, hf_processor, config, seed=0) -> UrecaModel`: wrap an
  `InternVLForConditionalGeneration` and its `InternVLProcessor`; adds `<mask>`, `</mask>`, `<MASK_CONTEXT>` to
  the tokenizer and embeddings and creates the mask encoder. `model.processor` is the `UrecaProcessor`.
  `load_base(id_or_folder, config, dtype=)` does the same from a hub id or local `-hf` folder.
- `build_tiny_ureca(seed=0, num_mask_tokens=8, ...)`: the same around the tiny random InternVL (tests).
- `UrecaModel`: `forward(input_ids, attention_mask, pixel_values, mask_tiles, labels)` -> InternVL output with
  `.loss` (labels -100 = ignored) and `.logits`; `generate(...)` -> new token ids (B, N) (left-pad batches);
  `generate_shared(input_ids (1, L), pixel_values, [mask_tiles per region], batch_size=)` -> one token tensor per
  region, the image encoded and its prefix prefilled once; `embed(...)` -> inputs_embeds with the mask tokens at
  the `<MASK_CONTEXT>` positions; `add_lora(r=128, alpha=256, dropout=0.05)` wraps `.base` in peft LoRA on the
  language model only (`LORA_TARGET_REGEX`); `.internvl` is always the unwrapped InternVL; `.mask_encoder`.
  Stage 1 training: train `model.mask_encoder` only; stage 2: `model.add_lora(...)` and train the LoRA params.
- `UrecaProcessor`: `proc(image PIL, mask HxW 0/1, question=None, answer=None)` -> dict of input_ids (1, L),
  attention_mask, pixel_values (T, 3, S, S), mask_tiles (T, S, S) uint8 and, with an answer, labels (loss only on
  the answer tokens and the end-of-turn token); `proc.collate(examples, padding_side="right"|"left")` -> batch.
- `save_checkpoint(model, folder, processor=None, embed_base=None)` / `load_checkpoint(folder, device=, dtype=,
  base=, trainable=)`: the folder holds ureca.json (config), mask_encoder.safetensors, added_tokens.safetensors,
  the tokenizer/processor files, adapter/ (peft LoRA, when the model has one; loaded automatically) and base/
  (the InternVL weights, when config.base is None). Loading is strict: missing/unexpected keys are named.
- `tile_mask(mask, tile, min_tiles=, max_tiles=, dynamic=)` -> (T, S, S) uint8: the mask tiled exactly like
  InternVL tiles the image (same grid + thumbnail, nearest resize); `MaskEncoder`.
- `tiny_internvl(seed=0, image_size=56, ...)` -> (InternVLForConditionalGeneration, InternVLProcessor) and
  `save_tiny_internvl(folder, seed=0, ...)` -> folder that AutoProcessor / AutoModelForImageTextToText load
  offline and `transformers serve` serves.
- `packaged_config(name)` -> dict: "internvl3_1b" (the real InternVL3-1B-hf config) or "tiny";
  `random_internvl("internvl3_1b", seed=0)` -> (random-weight model at that size, processor) for benchmarks.
- The paper's released checkpoint (`SammyLim/URECA`, `model_type: internvl_chat`): `load_checkpoint` takes it as
  it is (`is_released(folder)`, `load_released(folder, device=, dtype=)`), with its inference
  (`UrecaConfig.preprocessing == "released"`); `convert_released(src, out)` writes it as a URECA checkpoint,
  shard by shard; `plan_tensor` / `map_state_dict` are the key mapping (released.py, released_keys.py,
  released_tokenizer.py, convert.py, shards.py).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "UrecaConfig": "config",
    "UrecaModel": "ureca",
    "MaskTokenIds": "config",
    "build_ureca": "ureca",
    "build_tiny_ureca": "ureca",
    "load_base": "ureca",
    "add_mask_tokens": "ureca",
    "LORA_TARGET_REGEX": "ureca",
    "DEFAULT_QUESTION": "config",
    "MASK_START": "config",
    "MASK_END": "config",
    "MASK_CONTEXT": "config",
    "UrecaProcessor": "processor",
    "IGNORE_INDEX": "processor",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "tile_mask": "tiling",
    "tile_grid": "tiling",
    "num_tiles": "tiling",
    "MaskEncoder": "mask_encoder",
    "tiny_internvl": "tiny",
    "save_tiny_internvl": "tiny",
    "packaged_config": "tiny",
    "random_internvl": "tiny",
    "is_released": "released",
    "load_released": "released",
    "plan_tensor": "released_keys",
    "map_state_dict": "released_keys",
    "convert_released": "convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ureca_cli.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
