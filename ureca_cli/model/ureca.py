"""The URECA model: an InternVL (transformers' `InternVLForConditionalGeneration`) plus a mask encoder.

The sequence is InternVL's chat prompt with the image tokens, then `<mask>` + K x tiles `<MASK_CONTEXT>` +
`</mask>`, then the question. `UrecaModel.embed` builds the input embeddings: token embeddings, the projected
vision features at the image-token positions (as InternVL does) and the mask encoder's tokens at the
`<MASK_CONTEXT>` positions, in order (tile-major: tile 0's K tokens, then tile 1's, ...). Both the loss
(`forward`) and generation (`generate`, `generate_shared`) run the language model on those embeddings, so the
mask reaches the model only through the mask tokens.

LoRA: `add_lora()` wraps the base in a peft `PeftModel` whose targets are limited to the language model
(the vision tower has q_proj/v_proj too); `model.internvl` always gives the unwrapped InternVL.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn

from .config import (  # noqa: F401 - re-exported: model.ureca names them too
    ADDED_TOKENS,
    DEFAULT_QUESTION,
    MASK_CONTEXT,
    MASK_END,
    MASK_START,
    MaskTokenIds,
    UrecaConfig,
)
from .mask_encoder import MaskEncoder

#: peft target regex: the language model's attention and MLP projections, never the vision tower's.
LORA_TARGET_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def add_mask_tokens(internvl, tokenizer) -> MaskTokenIds:
    """Add `<mask>`, `</mask>`, `<MASK_CONTEXT>` to `tokenizer` (special, never split) and make room for them in
    the model's embeddings. Rows of tokens new to the tokenizer start as the mean of the embedding matrix
    (input and, if untied, output). Returns their ids. Idempotent."""
    vocab = tokenizer.get_vocab()
    new = [t for t in ADDED_TOKENS if t not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    rows = internvl.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        internvl.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS}
    if new:
        with torch.no_grad():
            for emb in _embedding_matrices(internvl):
                mean = emb.weight[: min(rows, emb.weight.shape[0])].float().mean(0).to(emb.weight.dtype)
                for t in new:
                    emb.weight[ids[t]] = mean
    image_id = internvl.config.image_token_id
    return MaskTokenIds(start=ids[MASK_START], end=ids[MASK_END], context=ids[MASK_CONTEXT], image=image_id)


def _embedding_matrices(internvl) -> list[nn.Module]:
    """The input embedding and, when it is a separate matrix, the output embedding (lm_head)."""
    inp = internvl.get_input_embeddings()
    out = internvl.get_output_embeddings()
    mats = [inp]
    if out is not None and out.weight.data_ptr() != inp.weight.data_ptr():
        mats.append(out)
    return mats


def _cache_of(output):
    """The KV cache of a model output (`cache` in recent transformers, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class UrecaModel(nn.Module):
    """InternVL + mask encoder. Build with `build_ureca` or `load_checkpoint`, not directly.

    Attributes: `base` (the InternVL, or a peft `PeftModel` around it), `mask_encoder`, `config` (UrecaConfig),
    `token_ids` (MaskTokenIds), `processor` (the UrecaProcessor it was built with, or None).
    """

    def __init__(self, base, config: UrecaConfig, token_ids: MaskTokenIds, processor=None):
        super().__init__()
        self.base = base
        self.config = config
        self.token_ids = token_ids
        self.processor = processor
        vision_size = base.config.vision_config.image_size
        vision_size = vision_size[0] if isinstance(vision_size, (list, tuple)) else vision_size
        if vision_size != config.tile_size:
            raise ValueError(f"tile_size {config.tile_size} differs from the vision tower's input size {vision_size}")
        ref = base.get_input_embeddings().weight
        self.mask_encoder = MaskEncoder(
            config.tile_size, base.config.text_config.hidden_size, config.num_mask_tokens, config.mask_projector
        ).to(device=ref.device, dtype=ref.dtype)

    # -- parts ----------------------------------------------------------------------------------------------
    @property
    def internvl(self):
        """The `InternVLForConditionalGeneration` (LoRA layers, if any, are injected in it)."""
        get = getattr(self.base, "get_base_model", None)
        return get() if callable(get) else self.base

    @property
    def has_lora(self) -> bool:
        return hasattr(self.base, "peft_config")

    @property
    def device(self) -> torch.device:
        return self.internvl.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.internvl.get_input_embeddings().weight.dtype

    def add_lora(self, r: int = 128, alpha: int = 256, dropout: float = 0.05, **kwargs: Any):
        """Wrap the base in a peft LoRA on the language model only (paper: r 128, alpha 256, dropout 0.05).
        Returns the `peft.LoraConfig` used."""
        from peft import LoraConfig, get_peft_model

        if self.has_lora:
            raise ValueError("this model already has a LoRA adapter")
        from ..loading import quiet_peft

        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGET_REGEX, **kwargs)
        with quiet_peft():
            self.base = get_peft_model(self.base, cfg)
        return cfg

    # -- embeddings -----------------------------------------------------------------------------------------
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (T, 3, S, S) from InternVL's processor -> projected vision features (T, n, D)."""
        m = self.internvl
        out = m.model.get_image_features(pixel_values=pixel_values.to(self.device, self.dtype), return_dict=True)
        return out.pooler_output

    def mask_features(self, mask_tiles: torch.Tensor) -> torch.Tensor:
        """mask_tiles (T, S, S) 0/1 (uint8 or float) -> mask tokens (T, K, D)."""
        return self.mask_encoder(mask_tiles.to(self.device))

    def embed(
        self,
        input_ids: torch.Tensor,
        *,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        mask_tiles: torch.Tensor | None = None,
        mask_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, L) -> inputs_embeds (B, L, D) with image features at the image-token positions and mask
        tokens at the `<MASK_CONTEXT>` positions, both filled in reading order across the batch. Pass
        `image_features` (from `image_features()`) to reuse an image encoding, else `pixel_values`."""
        input_ids = input_ids.to(self.device)
        emb = self.internvl.get_input_embeddings()(input_ids)
        hidden = emb.shape[-1]
        image_pos = input_ids == self.token_ids.image
        if image_pos.any():
            if image_features is None:
                if pixel_values is None:
                    raise ValueError("the input has image tokens but neither pixel_values nor image_features")
                image_features = self.image_features(pixel_values)
            feats = image_features.reshape(-1, hidden)
            if feats.shape[0] != int(image_pos.sum()):
                raise ValueError(f"{int(image_pos.sum())} image tokens but {feats.shape[0]} image features")
            emb = emb.masked_scatter(image_pos.unsqueeze(-1), feats.to(emb.dtype))
        ctx_pos = input_ids == self.token_ids.context
        if ctx_pos.any():
            if mask_features is None:
                if mask_tiles is None:
                    raise ValueError("the input has <MASK_CONTEXT> tokens but no mask_tiles")
                mask_features = self.mask_features(mask_tiles)
            feats = mask_features.reshape(-1, hidden)
            if feats.shape[0] != int(ctx_pos.sum()):
                raise ValueError(f"{int(ctx_pos.sum())} <MASK_CONTEXT> tokens but {feats.shape[0]} mask tokens")
            emb = emb.masked_scatter(ctx_pos.unsqueeze(-1), feats.to(emb.dtype))
        return emb

    # -- loss and generation --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mask_tiles: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """The InternVL forward on URECA's embeddings; returns its output (`.loss` when `labels` (B, L) are given,
        -100 = ignored; `.logits` (B, L, V))."""
        emb = self.embed(input_ids, pixel_values=pixel_values, image_features=image_features, mask_tiles=mask_tiles)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if labels is not None:
            labels = labels.to(self.device)
        return self.internvl(inputs_embeds=emb, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        mask_tiles: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate from a (left-padded) batch; returns only the new tokens (B, N)."""
        emb = self.embed(input_ids, pixel_values=pixel_values, image_features=image_features, mask_tiles=mask_tiles)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long)
        return self.internvl.generate(
            inputs_embeds=emb, attention_mask=attention_mask.to(self.device), **generate_kwargs
        )

    @torch.no_grad()
    def prefill_prefix(self, input_ids: torch.Tensor, pixel_values: torch.Tensor):
        """Encode the image once and run the language model over the prompt up to `<mask>`.

        input_ids (1, L) -> (prefix_length P, prefix embeddings (1, P, D), KV cache of the prefix). Every region
        of the image shares this prefix, since the mask tokens come after the image tokens.
        """
        ids = input_ids.to(self.device)
        starts = (ids[0] == self.token_ids.start).nonzero()
        if ids.shape[0] != 1 or len(starts) != 1:
            raise ValueError("prefill_prefix needs one sequence with one <mask>")
        p = int(starts[0])
        emb = self.embed(ids[:, :p], pixel_values=pixel_values)
        out = self.internvl(inputs_embeds=emb, use_cache=True, logits_to_keep=1)
        return p, emb, _cache_of(out)

    def _shared_batches(self, input_ids, pixel_values, mask_tiles, batch_size):
        """Yield (batch size b, full embeddings (b, L, D), a copy of the prefix KV cache for b rows) per chunk
        of regions; the image is encoded and the prefix prefilled once."""
        p, prefix_emb, cache = self.prefill_prefix(input_ids, pixel_values)
        suffix_ids = input_ids.to(self.device)[:, p:]
        for i in range(0, len(mask_tiles), batch_size):
            chunk = mask_tiles[i:i + batch_size]
            b = len(chunk)
            suffix = self.embed(suffix_ids.expand(b, -1), mask_tiles=torch.cat([t.to(self.device) for t in chunk]))
            full = torch.cat([prefix_emb.expand(b, -1, -1), suffix], dim=1)
            batch_cache = copy.deepcopy(cache)
            if b > 1:
                batch_cache.batch_repeat_interleave(b)
            yield b, full, batch_cache

    def _cache_kwarg(self) -> str:
        params = inspect.signature(self.internvl.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @torch.no_grad()
    def generate_shared(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        mask_tiles: list[torch.Tensor],
        *,
        batch_size: int = 8,
        **generate_kwargs: Any,
    ) -> list[torch.Tensor]:
        """Caption many regions of ONE image: encode the image and prefill the shared prefix once, then generate
        every region's suffix (`<mask>` ... question ... assistant) in batches from a copy of that KV cache.

        input_ids (1, L): the prompt (equal for all regions: only mask *features* differ); mask_tiles: one
        (T, S, S) tensor per region. Returns one 1-D tensor of new tokens per region (padding after EOS kept).
        """
        results: list[torch.Tensor] = []
        for b, full, batch_cache in self._shared_batches(input_ids, pixel_values, mask_tiles, batch_size):
            out = self.internvl.generate(
                inputs_embeds=full,
                attention_mask=torch.ones(full.shape[:2], dtype=torch.long, device=self.device),
                **{self._cache_kwarg(): batch_cache},
                **generate_kwargs,
            )
            results.extend(out[j] for j in range(b))
        return results

    @torch.no_grad()
    def prefill_shared(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, mask_tiles: list[torch.Tensor], *,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Prefill only (no generation) of many regions of ONE image with the shared image encoding: returns the
        next-token logits after the prompt, (R, V). Equals `forward(...).logits[:, -1]` region by region."""
        p = int((input_ids[0] == self.token_ids.start).nonzero()[0])
        logits = []
        for _b, full, batch_cache in self._shared_batches(input_ids, pixel_values, mask_tiles, batch_size):
            out = self.internvl(inputs_embeds=full[:, p:], logits_to_keep=1, use_cache=True,
                                **{self._cache_kwarg(): batch_cache})
            logits.append(out.logits[:, -1])
        return torch.cat(logits)


def build_ureca(base, processor, config: UrecaConfig, *, seed: int | None = 0) -> UrecaModel:
    """A new URECA model around `base` (an `InternVLForConditionalGeneration`) and its `InternVLProcessor`:
    adds the mask tokens to the tokenizer and embeddings and creates a mask encoder (seeded with `seed`).
    Returns the model; `model.processor` is the matching `UrecaProcessor`."""
    from .processor import UrecaProcessor

    token_ids = add_mask_tokens(base, processor.tokenizer)
    if seed is None:
        model = UrecaModel(base, config, token_ids)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = UrecaModel(base, config, token_ids)
    model.processor = UrecaProcessor(processor, config, token_ids)
    return model


def build_tiny_ureca(*, seed: int = 0, num_mask_tokens: int = 8, mask_projector: str = "linear",
                     dynamic_mask: bool = True, max_tiles: int = 12, **tiny_kwargs: Any) -> UrecaModel:
    """A URECA model around `tiny_internvl(seed=seed, **tiny_kwargs)` (random weights; base embedded when saved)."""
    from .tiny import tiny_internvl

    base, processor = tiny_internvl(seed=seed, max_tiles=max_tiles, **tiny_kwargs)
    size = base.config.vision_config.image_size
    config = UrecaConfig(
        base=None,
        num_mask_tokens=num_mask_tokens,
        mask_projector=mask_projector,
        dynamic_mask=dynamic_mask,
        tile_size=size[0] if isinstance(size, (list, tuple)) else size,
        max_tiles=max_tiles,
    )
    model = build_ureca(base, processor, config, seed=seed)
    model.eval()
    return model


def load_base(source: str, config: UrecaConfig | None = None, *, dtype: str | None = None,
              device: str | None = None, seed: int | None = 0) -> UrecaModel:
    """A new URECA model around an InternVL `-hf` checkpoint (hub id, or local folder; offline it must be in
    the cache). `config.base` is set to `source` and `tile_size` to the vision tower's input size."""
    from dataclasses import replace
    from pathlib import Path

    from transformers import AutoProcessor, InternVLForConditionalGeneration

    from ..loading import check_safetensors

    check_safetensors(source)
    processor = AutoProcessor.from_pretrained(source)
    base = InternVLForConditionalGeneration.from_pretrained(
        source, dtype=getattr(torch, dtype) if dtype else "auto", use_safetensors=True
    )
    size = base.config.vision_config.image_size
    if Path(source).is_dir():  # a local folder: keep it findable from any working directory
        source = str(Path(source).resolve())
    config = replace(config or UrecaConfig(), base=source, tile_size=size[0] if isinstance(size, (list, tuple))
                     else size)
    model = build_ureca(base, processor, config, seed=seed)
    if device:
        model.to(device)
    return model
