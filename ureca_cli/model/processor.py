"""Turn (image, mask, question, answer) into URECA model inputs, and batch them.

Images go through transformers' own `InternVLProcessor` (its chat template, its image tiling); masks are tiled
the same way by `tiling.tile_mask`. The prompt is the base's chat template applied to one user turn whose
content is the image, then `<mask>` + K x tiles `<MASK_CONTEXT>` + `</mask>`, a newline and the question;
with an answer, the answer tokens and the end-of-turn token follow, and only they carry labels.

A model that came from the paper's released checkpoint (`config.preprocessing == "released"`) gets the
released inference instead, so that it captions as the released code does: the README's image tiling
(`tiling.released_pixel_values`), mask tiles of 0/255 with a bicubic thumbnail (`tiling.released_mask_tiles`),
and the `internvl2_5` prompt, `<|im_start|>system\n{system_message}<|im_end|>\n<|im_start|>user\n<image>\n<mask>\n
{question}<|im_end|>\n<|im_start|>assistant\n`, with `<image>` -> `<img>` + n x tiles `<IMG_CONTEXT>` + `</img>` and
`<mask>` -> `<mask>` + K x tiles `<MASK_CONTEXT>` + `</mask>`, tokenized with the tokenizer's own specials (the
InternLM2 tokenizer puts `<s>` first). There `hf` is the tokenizer alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import MASK_CONTEXT, MASK_END, MASK_START, MaskTokenIds, UrecaConfig
from .tiling import released_mask_tiles, released_pixel_values, tile_mask

IGNORE_INDEX = -100
IMAGE_START, IMAGE_END, IMAGE_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"


class UrecaProcessor:
    """Wraps an `InternVLProcessor` (`.hf`) whose tokenizer holds URECA's added tokens; with the released
    preprocessing, `.hf` is that tokenizer and `image_seq_length` (image tokens per tile) is required."""

    def __init__(self, hf_processor, config: UrecaConfig, token_ids: MaskTokenIds, image_seq_length: int | None = None):
        self.hf = hf_processor
        self.config = config
        self.token_ids = token_ids
        self.released = config.preprocessing == "released"
        if self.released and not image_seq_length:
            raise ValueError("the released preprocessing needs image_seq_length (image tokens per tile)")
        self.image_seq_length = image_seq_length
        tok = self.tokenizer
        end = "<|im_end|>" if "<|im_end|>" in tok.get_vocab() else tok.eos_token
        self.end_of_turn = end
        self.end_of_turn_id = tok.convert_tokens_to_ids(end)

    @property
    def tokenizer(self):
        return self.hf if self.released else self.hf.tokenizer

    def _image_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "crop_to_patches": c.max_tiles > 1,
            "min_patches": c.min_tiles,
            "max_patches": c.max_tiles,
            "size": {"height": c.tile_size, "width": c.tile_size},
        }

    def mask_tiles(self, mask: np.ndarray) -> np.ndarray:
        """HxW mask (non-zero = region) -> (T, S, S) uint8 tiles, tiled like an image of the same size: 0/1
        (ours), or with the released preprocessing 0/255 with the released thumbnail."""
        c = self.config
        if self.released:
            return released_mask_tiles(mask, c.tile_size, c.min_tiles, c.max_tiles)
        return tile_mask(
            mask, c.tile_size, min_tiles=c.min_tiles, max_tiles=c.max_tiles,
            dynamic=c.dynamic_mask and c.max_tiles > 1,
        )

    def prompt(self, num_mask_tokens: int | None, question: str | None = None, num_tiles: int | None = None) -> str:
        """The chat prompt (ending with the assistant's turn header) with `num_mask_tokens` `<MASK_CONTEXT>`s
        (None: no mask part). Ours leaves the image tokens to InternVLProcessor; the released one writes them
        out for `num_tiles` image tiles."""
        question = question if question is not None else self.config.question
        region = question if num_mask_tokens is None else \
            f"{MASK_START}{MASK_CONTEXT * num_mask_tokens}{MASK_END}\n{question}"
        if self.released:
            if not num_tiles:
                raise ValueError("the released prompt needs the number of image tiles")
            image = IMAGE_START + IMAGE_CONTEXT * (self.image_seq_length * num_tiles) + IMAGE_END
            system = self.config.system_message or ""
            return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{image}\n{region}<|im_end|>\n"
                    "<|im_start|>assistant\n")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": region}]}]
        return self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, image, tiles: np.ndarray | None, question: str | None) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and pixel_values of the prompt for `image` and mask tiles (or none)."""
        k = None if tiles is None else self.config.num_mask_tokens * len(tiles)
        if self.released:
            c = self.config
            pixel_values = released_pixel_values(image, c.tile_size, c.min_tiles, c.max_tiles)
            enc = self.tokenizer(self.prompt(k, question, num_tiles=len(pixel_values)), return_tensors="pt")
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                    "pixel_values": pixel_values}
        enc = self.hf(images=[image], text=[self.prompt(k, question)], return_tensors="pt", **self._image_kwargs())
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "pixel_values": enc["pixel_values"]}

    def __call__(
        self, image, mask: np.ndarray | None, question: str | None = None, answer: str | None = None
    ) -> dict[str, torch.Tensor]:
        """One example.

        image: PIL image (converted to RGB), size W x H; mask: HxW array of the same size, non-zero = region, or
        None for a prompt with the image and the question only (no mask part, `mask_tiles` of shape (0, S, S)).
        Returns input_ids (1, L) and attention_mask (1, L) int64, pixel_values (T, 3, S, S) float, mask_tiles
        (Tm, S, S) uint8 (0/1, or 0/255 released; Tm = T with dynamic masks, else 1), and with `answer` labels
        (1, L) (-100 except on the answer and end-of-turn tokens).
        """
        image = image.convert("RGB")
        if mask is None:
            size = self.config.tile_size
            out = {**self._encode(image, None, question), "mask_tiles": torch.zeros((0, size, size), dtype=torch.uint8)}
            return self._with_answer(out, answer)
        mask = np.asarray(mask)
        if mask.shape[:2] != (image.height, image.width):
            raise ValueError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height} (WxH)"
            )
        tiles = self.mask_tiles(mask)
        enc = self._encode(image, tiles, question)
        if self.config.dynamic_mask and enc["pixel_values"].shape[0] != len(tiles) and self.config.max_tiles > 1:
            raise RuntimeError(
                f"mask tiling gave {len(tiles)} tiles but the image processor {enc['pixel_values'].shape[0]}"
            )
        out = {**enc, "mask_tiles": torch.from_numpy(tiles)}
        return self._with_answer(out, answer)

    def _with_answer(self, out: dict[str, torch.Tensor], answer: str | None) -> dict[str, torch.Tensor]:
        """`out` with the answer tokens and the end-of-turn token appended, labelled (nothing else is)."""
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
