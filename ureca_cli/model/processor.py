"""Turn (image, mask, question, answer) into URECA model inputs, and batch them.

Images go through transformers' own `InternVLProcessor` (its chat template, its image tiling); masks are tiled
the same way by `tiling.tile_mask`. The prompt is the base's chat template applied to one user turn whose
content is the image, then `<mask>` + K x tiles `<MASK_CONTEXT>` + `</mask>`, a newline and the question;
with an answer, the answer tokens and the end-of-turn token follow, and only they carry labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import MASK_CONTEXT, MASK_END, MASK_START, MaskTokenIds, UrecaConfig
from .tiling import tile_mask

IGNORE_INDEX = -100


class UrecaProcessor:
    """Wraps an `InternVLProcessor` (`.hf`) whose tokenizer holds URECA's added tokens."""

    def __init__(self, hf_processor, config: UrecaConfig, token_ids: MaskTokenIds):
        self.hf = hf_processor
        self.config = config
        self.token_ids = token_ids
        tok = hf_processor.tokenizer
        end = "<|im_end|>" if "<|im_end|>" in tok.get_vocab() else tok.eos_token
        self.end_of_turn = end
        self.end_of_turn_id = tok.convert_tokens_to_ids(end)

    @property
    def tokenizer(self):
        return self.hf.tokenizer

    def _image_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "crop_to_patches": c.max_tiles > 1,
            "min_patches": c.min_tiles,
            "max_patches": c.max_tiles,
            "size": {"height": c.tile_size, "width": c.tile_size},
        }

    def mask_tiles(self, mask: np.ndarray) -> np.ndarray:
        """HxW mask (non-zero = region) -> (T, S, S) uint8 0/1 tiles, tiled like an image of the same size."""
        c = self.config
        return tile_mask(
            mask, c.tile_size, min_tiles=c.min_tiles, max_tiles=c.max_tiles,
            dynamic=c.dynamic_mask and c.max_tiles > 1,
        )

    def prompt(self, num_mask_tokens: int, question: str | None = None) -> str:
        """The chat prompt (ending with the assistant's turn header) with `num_mask_tokens` `<MASK_CONTEXT>`s."""
        question = question if question is not None else self.config.question
        region = f"{MASK_START}{MASK_CONTEXT * num_mask_tokens}{MASK_END}\n{question}"
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": region}]}]
        return self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def __call__(
        self, image, mask: np.ndarray, question: str | None = None, answer: str | None = None
    ) -> dict[str, torch.Tensor]:
        """One example.

        image: PIL image (converted to RGB), size W x H; mask: HxW array of the same size, non-zero = region.
        Returns input_ids (1, L) and attention_mask (1, L) int64, pixel_values (T, 3, S, S) float, mask_tiles
        (Tm, S, S) uint8 0/1 (Tm = T with dynamic masks, else 1), and with `answer` labels (1, L) (-100 except
        on the answer and end-of-turn tokens).
        """
        image = image.convert("RGB")
        mask = np.asarray(mask)
        if mask.shape[:2] != (image.height, image.width):
            raise ValueError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height} (WxH)"
            )
        tiles = self.mask_tiles(mask)
        text = self.prompt(self.config.num_mask_tokens * len(tiles), question)
        enc = self.hf(images=[image], text=[text], return_tensors="pt", **self._image_kwargs())
        if self.config.dynamic_mask and enc["pixel_values"].shape[0] != len(tiles) and self.config.max_tiles > 1:
            raise RuntimeError(
                f"mask tiling gave {len(tiles)} tiles but the image processor {enc['pixel_values'].shape[0]}"
            )
        out = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "pixel_values": enc["pixel_values"],
            "mask_tiles": torch.from_numpy(tiles),
        }
        if answer is not None:
            ans = self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.end_of_turn_id]
            ans_t = torch.tensor([ans], dtype=out["input_ids"].dtype)
            labels = torch.full_like(out["input_ids"], IGNORE_INDEX)
            out["input_ids"] = torch.cat([out["input_ids"], ans_t], dim=1)
            out["attention_mask"] = torch.cat([out["attention_mask"], torch.ones_like(ans_t)], dim=1)
            out["labels"] = torch.cat([labels, ans_t], dim=1)
        return out

    def collate(self, examples: list[dict[str, torch.Tensor]], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Batch examples from `__call__`: pad input_ids (pad token), attention_mask (0) and labels (-100) to the
        longest, on the right (training) or the left (generation); concatenate pixel_values and mask_tiles."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else self.end_of_turn_id
        longest = max(e["input_ids"].shape[1] for e in examples)
        has_labels = all("labels" in e for e in examples)
        if not has_labels and any("labels" in e for e in examples):
            raise ValueError("either every example has labels or none has")

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            fill = torch.full((1, longest - t.shape[1]), value, dtype=t.dtype)
            return torch.cat([t, fill] if padding_side == "right" else [fill, t], dim=1)

        batch = {
            "input_ids": torch.cat([pad(e["input_ids"], pad_id) for e in examples]),
            "attention_mask": torch.cat([pad(e["attention_mask"], 0) for e in examples]),
            "pixel_values": torch.cat([e["pixel_values"] for e in examples]),
            "mask_tiles": torch.cat([e["mask_tiles"] for e in examples]),
        }
        if has_labels:
            batch["labels"] = torch.cat([pad(e["labels"], IGNORE_INDEX) for e in examples])
        return batch
