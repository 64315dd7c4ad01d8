"""Names and layouts of the released checkpoint's tensors -> ours (see released.py for the whole picture).

`plan_tensor(key, shape, family)` says which of our tensors a released tensor becomes, and how:

    vision_model.embeddings.class_embedding / position_embedding / patch_embedding
        -> model.vision_tower.embeddings.cls_token / position_embeddings / patch_embeddings.projection
    vision_model.encoder.layers.i.{ls1,ls2, attn.proj, attn.{q,k}_norm, mlp.fc1/fc2, norm1, norm2}
        -> model.vision_tower.encoder.layer.i.{lambda_1,lambda_2, attention.projection_layer,
           attention.{q,k}_norm, mlp.fc1/fc2, layernorm_before, layernorm_after}
    vision_model.encoder.layers.i.attn.qkv  -> attention.q_proj / k_proj / v_proj (rows [q; k; v], thirds)
    mlp1.0 / mlp1.1 / mlp1.3                -> model.multi_modal_projector.layer_norm / linear_1 / linear_2
    Qwen2: language_model.model.X           -> model.language_model.X;  language_model.lm_head -> lm_head
    InternLM2 (-> Llama): tok_embeddings -> embed_tokens, attention.wo -> self_attn.o_proj,
        feed_forward.w1/w3/w2 -> mlp.gate_proj/up_proj/down_proj, attention_norm -> input_layernorm,
        ffn_norm -> post_attention_layernorm, output -> lm_head, and attention.wqkv -> self_attn.q/k/v_proj
        (rows grouped per key-value head: its heads/kv query heads, then its key, then its value)
    mask_encoder.0 / mask_encoder.2 / mask_linear -> (our MaskEncoder) conv1 / conv2 / proj

These are the names transformers' own InternVL conversion gives; the mask encoder's keys carry the prefix
`MASK_PREFIX` in a plan. Pure functions on names and shapes (torch only inside the `take` functions).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MASK_PREFIX = "mask_encoder."  # targets in our MaskEncoder carry this prefix in a plan


@dataclass(frozen=True)
class Target:
    """One of our tensors made from a released one: `key` (an InternVL state-dict key, or `mask_encoder.` +
    a MaskEncoder key), its shape, and `take` (released tensor -> ours; None: the tensor as it is)."""

    key: str
    shape: tuple[int, ...]
    take: Callable[[Any], Any] | None = None


_VISION = "model.vision_tower."
_LAYER = r"vision_model\.encoder\.layers\.(\d+)\."
_RENAMES_COMMON = [
    (r"vision_model\.embeddings\.class_embedding", _VISION + "embeddings.cls_token"),
    (r"vision_model\.embeddings\.position_embedding", _VISION + "embeddings.position_embeddings"),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", _VISION + r"embeddings.patch_embeddings.projection.\1"),
    (_LAYER + r"ls([12])", _VISION + r"encoder.layer.\1.lambda_\2"),
    (_LAYER + r"attn\.proj\.(weight|bias)", _VISION + r"encoder.layer.\1.attention.projection_layer.\2"),
    (_LAYER + r"attn\.([qk])_norm\.weight", _VISION + r"encoder.layer.\1.attention.\2_norm.weight"),
    (_LAYER + r"mlp\.(fc[12])\.(weight|bias)", _VISION + r"encoder.layer.\1.mlp.\2.\3"),
    (_LAYER + r"norm1\.(weight|bias)", _VISION + r"encoder.layer.\1.layernorm_before.\2"),
    (_LAYER + r"norm2\.(weight|bias)", _VISION + r"encoder.layer.\1.layernorm_after.\2"),
    (r"mlp1\.0\.(weight|bias)", r"model.multi_modal_projector.layer_norm.\1"),
    (r"mlp1\.1\.(weight|bias)", r"model.multi_modal_projector.linear_1.\1"),
    (r"mlp1\.3\.(weight|bias)", r"model.multi_modal_projector.linear_2.\1"),
    (r"mask_encoder\.0\.(weight|bias)", MASK_PREFIX + r"conv1.\1"),
    (r"mask_encoder\.2\.(weight|bias)", MASK_PREFIX + r"conv2.\1"),
    (r"mask_linear\.(weight|bias)", MASK_PREFIX + r"proj.\1"),
]
_RENAMES = {
    "qwen2": [
        (r"language_model\.model\.(.+)", r"model.language_model.\1"),
        (r"language_model\.lm_head\.weight", "lm_head.weight"),
    ],
    "internlm2": [  # InternLM2 -> Llama, as transformers' InternVL conversion renames it
        (r"language_model\.model\.tok_embeddings\.weight", "model.language_model.embed_tokens.weight"),
        (r"language_model\.model\.norm\.weight", "model.language_model.norm.weight"),
        (r"language_model\.output\.weight", "lm_head.weight"),
        (r"language_model\.model\.layers\.(\d+)\.attention\.wo\.(weight|bias)",
         r"model.language_model.layers.\1.self_attn.o_proj.\2"),
        (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w1\.weight",
         r"model.language_model.layers.\1.mlp.gate_proj.weight"),
        (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w3\.weight",
         r"model.language_model.layers.\1.mlp.up_proj.weight"),
        (r"language_model\.model\.layers\.(\d+)\.feed_forward\.w2\.weight",
         r"model.language_model.layers.\1.mlp.down_proj.weight"),
        (r"language_model\.model\.layers\.(\d+)\.attention_norm\.weight",
         r"model.language_model.layers.\1.input_layernorm.weight"),
        (r"language_model\.model\.layers\.(\d+)\.ffn_norm\.weight",
         r"model.language_model.layers.\1.post_attention_layernorm.weight"),
    ],
}
_VIT_QKV = re.compile(_LAYER + r"attn\.qkv\.(weight|bias)")
_WQKV = re.compile(r"language_model\.model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)")


class ShapeError(ValueError):
    """A released tensor whose shape cannot be what the config describes."""


def _split_vit_qkv(layer: str, kind: str, shape: tuple[int, ...]) -> list[Target]:
    """InternViT's qkv: rows [q; k; v], each a third."""
    if not shape or shape[0] % 3:
        raise ShapeError(f"{shape[0] if shape else '?'} rows are not three equal parts")
    third = shape[0] // 3
    out = []
    for n, name in enumerate(("q_proj", "k_proj", "v_proj")):
        out.append(Target(f"{_VISION}encoder.layer.{layer}.attention.{name}.{kind}", (third, *shape[1:]),
                          lambda t, n=n: t[n * third:(n + 1) * third].contiguous()))
    return out


def _split_wqkv(layer: str, kind: str, shape: tuple[int, ...], heads: int, kv: int, head_dim: int) -> list[Target]:
    """InternLM2's wqkv: for each key-value head h, rows [its `heads / kv` query heads; its key; its value],
    each head `head_dim` rows -> Llama's q_proj (query heads in order), k_proj, v_proj."""
    groups = heads // kv
    if heads % kv or not shape or shape[0] != kv * (groups + 2) * head_dim:
        raise ShapeError(f"{shape[0] if shape else '?'} rows, expected (heads {heads} + 2 x key-value heads {kv}) x "
                         f"head dim {head_dim} = {(heads + 2 * kv) * head_dim}")
    rest = tuple(shape[1:])
    prefix = f"model.language_model.layers.{layer}.self_attn."

    def part(lo: int, hi: int) -> Callable[[Any], Any]:
        return lambda t: t.reshape(kv, groups + 2, head_dim, *rest)[:, lo:hi].reshape(-1, *rest).contiguous()

    return [Target(prefix + f"q_proj.{kind}", (heads * head_dim, *rest), part(0, groups)),
            Target(prefix + f"k_proj.{kind}", (kv * head_dim, *rest), part(groups, groups + 1)),
            Target(prefix + f"v_proj.{kind}", (kv * head_dim, *rest), part(groups + 1, groups + 2))]


def plan_tensor(key: str, shape: tuple[int, ...], family: str,
                attention: tuple[int, int, int] | None = None) -> list[Target]:
    """Our tensor(s) made from the released tensor `key` of `shape`. family: "qwen2" or "internlm2";
    attention: (heads, key-value heads, head dim), needed for InternLM2's wqkv. Raises KeyError for a name that
    is no part of the released model, ShapeError for a fused tensor that cannot split."""
    shape = tuple(shape)
    m = _VIT_QKV.fullmatch(key)
    if m:
        return _split_vit_qkv(m.group(1), m.group(2), shape)
    if family == "internlm2":
        m = _WQKV.fullmatch(key)
        if m:
            if attention is None:
                raise ValueError("InternLM2's wqkv needs the attention shape")
            return _split_wqkv(m.group(1), m.group(2), shape, *attention)
    for pattern, replacement in _RENAMES_COMMON + _RENAMES[family]:
        if re.fullmatch(pattern, key):
            return [Target(re.sub(f"^{pattern}$", replacement, key), shape)]
    raise KeyError(key)


def map_state_dict(state: dict[str, Any], family: str,
                   attention: tuple[int, int, int] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A released state dict (name -> tensor) -> (InternVL state dict, MaskEncoder state dict)."""
    base, mask = {}, {}
    for key, tensor in state.items():
        for t in plan_tensor(key, tuple(tensor.shape), family, attention):
            value = t.take(tensor) if t.take else tensor
            if t.key.startswith(MASK_PREFIX):
                mask[t.key[len(MASK_PREFIX):]] = value
            else:
                base[t.key] = value
    return base, mask
