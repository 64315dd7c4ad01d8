"""The paper's released checkpoint (`SammyLim/URECA` on the hub), read without its code.

The released model is an InternVL-2.5 fork: a folder whose `config.json` says `model_type: internvl_chat` and
`num_mask_token`, with safetensors weights named

    vision_model.*                 InternViT (fused `attn.qkv`, `ls1`/`ls2`, `norm1`/`norm2`, ...)
    mlp1.{0,1,3}.*                 the projector (LayerNorm, Linear, GELU, Linear)
    language_model.*               Qwen2 (1B/4B bases) or InternLM2 (8B base: fused `attention.wqkv`,
                                   `attention.wo`, `feed_forward.w1/w2/w3`, `attention_norm`, `ffn_norm`,
                                   `tok_embeddings`, `output`)
    mask_encoder.{0,2}.*, mask_linear.*   the mask encoder (conv, ReLU, conv, ReLU; linear)

`released_keys.plan_tensor` maps every released tensor onto ours, as transformers' own InternVL conversion names them: the
InternVL part onto `InternVLForConditionalGeneration` (`model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`, `lm_head`; InternViT's fused qkv split into q/k/v; InternLM2 becomes the Llama
architecture, its `wqkv` (per key-value head: the group's query heads, then the key, then the value) split into
q/k/v projections) and the mask encoder onto `MaskEncoder` (`conv1`, `conv2`, `proj`). `read_released` checks
the folder (config, shards, pickle files refused), `plan_checkpoint` checks every tensor's name and shape
against the model the config describes before anything is loaded or written, and `load_released` builds our
`UrecaModel` with the released preprocessing (`UrecaConfig.preprocessing = "released"`, see processor.py).
Nothing from the folder is executed or unpickled; `convert.py` writes the same mapping as a URECA checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from ..loading import PICKLE_SUFFIXES, pickle_files, refuse_pickle
from ..stream import read_json_file
from .released_keys import MASK_PREFIX, ShapeError, Target, map_state_dict, plan_tensor
from .shards import Header, TensorInfo, read_header

__all__ = ["MASK_PREFIX", "ReleasedSpec", "Target", "is_released", "load_released", "map_state_dict",
           "plan_checkpoint", "plan_tensor", "read_released", "resolve_source"]

MODEL_TYPE = "internvl_chat"
FAMILIES = {"Qwen2ForCausalLM": "qwen2", "InternLM2ForCausalLM": "internlm2"}
TEMPLATES = ("internvl2_5", "mug-cap")  # the released conversation.py: the same ChatML layout and system message
#: the `internvl2_5` template's system message (the released conversation.py)
SYSTEM_MESSAGE = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言"
                  "模型。")
README_MAX_TILES = 12  # the released README's load_image(max_num=12) and dynamic_preprocess(mask, max_num=12)
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


# ------------------------------------------------------------------------------------------ the folder

def is_released(folder: str | Path) -> bool:
    """True when `folder` holds a config.json whose model_type is `internvl_chat` (the released layout)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("model_type") == MODEL_TYPE


def describe_folder(folder: Path) -> str:
    """What a folder holds, in a few words, for the message that it is neither layout."""
    if not folder.is_dir():
        return "no such folder"
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "an empty folder"
    parts = []
    if "config.json" in names:
        try:
            kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
            parts.append(f"config.json with model_type {kind!r}")
        except (OSError, ValueError, AttributeError):
            parts.append("an unreadable config.json")
    weights = [n for n in names if n.endswith(".safetensors")]
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if weights:
        parts.append(f"{len(weights)} .safetensors file(s)")
    if pickles:
        parts.append(f"pickle weights ({', '.join(pickles[:3])})")
    others = [n for n in names if n != "config.json" and n not in weights and n not in pickles]
    if others:
        parts.append(", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else ""))
    return "found " + "; ".join(parts)


@dataclass(frozen=True)
class ReleasedSpec:
    """A checked released folder: its config and weight files."""

    folder: Path
    family: str  # "qwen2" | "internlm2"
    raw: dict[str, Any]  # config.json
    shards: tuple[Path, ...]
    index: dict[str, str] = field(default_factory=dict)  # tensor -> shard file name (from the index, if any)

    @property
    def vision(self) -> dict[str, Any]:
        return self.raw["vision_config"]

    @property
    def llm(self) -> dict[str, Any]:
        return self.raw["llm_config"]

    @property
    def tile_size(self) -> int:
        return int(self.raw.get("force_image_size") or self.vision.get("image_size", 224))

    @property
    def patch_size(self) -> int:
        return int(self.vision.get("patch_size", 14))

    @property
    def downsample_ratio(self) -> float:
        return float(self.raw.get("downsample_ratio", 0.5))

    @property
    def image_seq_length(self) -> int:
        return int((self.tile_size // self.patch_size) ** 2 * self.downsample_ratio ** 2)

    @property
    def num_mask_tokens(self) -> int:
        return int(self.raw["num_mask_token"])

    @property
    def system_message(self) -> str:
        return self.raw.get("system_message") or SYSTEM_MESSAGE

    def attention_shape(self) -> tuple[int, int, int]:
        """(heads, key-value heads, head dim) of the language model."""
        heads = int(self.llm.get("num_attention_heads", 32))
        kv = int(self.llm.get("num_key_value_heads") or heads)
        head_dim = int(self.llm.get("head_dim") or int(self.llm.get("hidden_size", 4096)) // heads)
        return heads, kv, head_dim


def read_released(folder: str | Path) -> ReleasedSpec:
    """Check a released folder: config.json (internvl_chat with num_mask_token, a Qwen2 or InternLM2 language
    model, InternViT with pixel shuffle v2, template internvl2_5) and its safetensors weights (all shards
    present; pickle checkpoints refused, never loaded). UrecaError names the file and the problem."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UrecaError(f"{folder}: not a URECA checkpoint (no ureca.json), nor the paper's released checkpoint "
                         f"(no config.json); {describe_folder(folder)}")
    raw = read_json_file(cfg_path)
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        raise UrecaError(f"{cfg_path}: model_type {kind!r}, not {MODEL_TYPE!r}: not a URECA checkpoint (no "
                         f"ureca.json), nor the paper's released checkpoint; {describe_folder(folder)}")
    if not isinstance(raw.get("num_mask_token"), int) or raw["num_mask_token"] < 1:
        raise UrecaError(f"{cfg_path}: no num_mask_token: an InternVL chat checkpoint without URECA's mask encoder")
    for key in ("vision_config", "llm_config"):
        if not isinstance(raw.get(key), dict):
            raise UrecaError(f"{cfg_path}: missing {key}")
    archs = raw["llm_config"].get("architectures") or [None]
    if archs[0] not in FAMILIES:
        raise UrecaError(f"{cfg_path}: llm_config.architectures {archs[0]!r}; ureca reads the released "
                         f"{' and '.join(FAMILIES)} bases")
    if raw.get("ps_version", "v1") != "v2":
        raise UrecaError(f"{cfg_path}: ps_version {raw.get('ps_version', 'v1')!r}; ureca reads InternVL-2.5's "
                         "pixel shuffle v2")
    template = raw.get("template")
    if template not in TEMPLATES:
        raise UrecaError(f"{cfg_path}: template {template!r}; ureca reproduces {' and '.join(TEMPLATES)}")
    if raw.get("use_backbone_lora") or raw.get("use_llm_lora"):
        raise UrecaError(f"{cfg_path}: LoRA not merged (use_backbone_lora/use_llm_lora set); the released model "
                         "has it merged")
    spec = ReleasedSpec(folder, FAMILIES[archs[0]], raw, ())
    if spec.tile_size % spec.patch_size or spec.tile_size % 4:
        raise UrecaError(f"{cfg_path}: image size {spec.tile_size} is not a multiple of patch size "
                         f"{spec.patch_size} and of 4")
    shards, index = weight_files(folder)
    return ReleasedSpec(folder, spec.family, raw, shards, index)


def weight_files(folder: Path) -> tuple[tuple[Path, ...], dict[str, str]]:
    """The safetensors shards of a model folder (from the index, or the single file), each present; pickle
    files are refused. UrecaError names the file at fault."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        data = read_json_file(index_path)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise UrecaError(f"{index_path}: no weight_map")
        names = sorted(set(weight_map.values()))
        for name in names:
            if not isinstance(name, str) or "/" in name or "\\" in name or not name.endswith(".safetensors"):
                raise UrecaError(f"{index_path}: weight_map names {name!r}, not a safetensors file in this folder")
            if not (folder / name).is_file():
                raise UrecaError(f"{folder / name}: missing shard (listed in {INDEX_FILE})")
        return tuple(folder / n for n in names), {str(k): str(v) for k, v in weight_map.items()}
    if (folder / SINGLE_FILE).is_file():
        return (folder / SINGLE_FILE,), {}
    pickles = pickle_files(folder)
    if pickles:
        raise refuse_pickle(folder / pickles[0])
    raise UrecaError(f"{folder}: no {SINGLE_FILE} and no {INDEX_FILE}; {describe_folder(folder)}")


# ------------------------------------------------------------------------------------------ configs
def _rope(llm: dict[str, Any]) -> dict[str, Any]:
    """transformers' rope_parameters from either a v4 config (rope_theta + rope_scaling) or a v5 one."""
    params = llm.get("rope_parameters")
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return dict(params)
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": float(llm.get("rope_theta", 10000.0))}
    scaling = llm.get("rope_scaling")
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type") or scaling.get("type") or "default"
        out.update({k: v for k, v in scaling.items() if k not in ("type", "rope_type")})
        out["rope_type"] = kind
    return out


_QWEN2_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "use_sliding_window",
               "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id",
               "pad_token_id", "initializer_range")
_INTERNLM2_DEFAULTS = {"vocab_size": 103168, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                       "num_attention_heads": 32, "hidden_act": "silu", "max_position_embeddings": 2048,
                       "rms_norm_eps": 1e-6, "bias": True}  # InternLM2Config's defaults
_VISION_DEFAULTS = {"hidden_size": 3200, "intermediate_size": 12800, "num_hidden_layers": 48,
                    "num_attention_heads": 25, "patch_size": 14, "hidden_act": "gelu", "norm_type": "rms_norm",
                    "layer_norm_eps": 1e-6, "qkv_bias": False, "qk_normalization": True}  # InternVisionConfig's


def internvl_config(spec: ReleasedSpec, image_token_id: int, eos_token_id: int | None = None,
                    pad_token_id: int | None = None):
    """transformers' `InternVLConfig` of the model the released config describes."""
    from transformers import InternVLConfig, InternVLVisionConfig, LlamaConfig, Qwen2Config

    v = {**_VISION_DEFAULTS, **spec.vision}
    vision = InternVLVisionConfig(
        hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
        num_hidden_layers=v["num_hidden_layers"], num_attention_heads=v["num_attention_heads"],
        image_size=spec.tile_size, patch_size=spec.patch_size, hidden_act=v["hidden_act"], norm_type=v["norm_type"],
        layer_norm_eps=v["layer_norm_eps"], attention_bias=bool(v["qkv_bias"]), use_qk_norm=bool(v["qk_normalization"]),
        use_absolute_position_embeddings=True, attention_dropout=0.0, projection_dropout=0.0,
        hidden_dropout_prob=0.0,
    )
    llm = spec.llm
    ids = {"eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    if spec.family == "qwen2":
        kwargs = {k: llm[k] for k in _QWEN2_KEYS if k in llm}
        kwargs.update({k: val for k, val in ids.items() if val is not None})
        text = Qwen2Config(**kwargs, rope_parameters=_rope(llm), tie_word_embeddings=False)
    else:
        m = {**_INTERNLM2_DEFAULTS, **llm}
        heads, kv, head_dim = spec.attention_shape()
        text = LlamaConfig(
            vocab_size=m["vocab_size"], hidden_size=m["hidden_size"], intermediate_size=m["intermediate_size"],
            num_hidden_layers=m["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv,
            head_dim=head_dim, hidden_act=m["hidden_act"], max_position_embeddings=m["max_position_embeddings"],
            rms_norm_eps=m["rms_norm_eps"], attention_bias=bool(m["bias"]), mlp_bias=False,
            rope_parameters=_rope(llm), tie_word_embeddings=False,
            bos_token_id=llm.get("bos_token_id", 1), eos_token_id=eos_token_id or llm.get("eos_token_id", 2),
            pad_token_id=pad_token_id if pad_token_id is not None else llm.get("pad_token_id", 0),
        )
    return InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id,
        image_seq_length=spec.image_seq_length, downsample_ratio=spec.downsample_ratio,
        projector_hidden_act="gelu", vision_feature_layer=int(spec.raw.get("select_layer", -1)),
        vision_feature_select_strategy="default", tie_word_embeddings=False,
    )


def ureca_config(spec: ReleasedSpec):
    """Our UrecaConfig of the released model: its mask tokens (linear projector, dynamic masks), the README's
    tiling (1 to 12 tiles), the released preprocessing and system message; `base` is the folder itself."""
    from .config import UrecaConfig

    return UrecaConfig(base=str(spec.folder.resolve()), num_mask_tokens=spec.num_mask_tokens,
                       mask_projector="linear", dynamic_mask=True, tile_size=spec.tile_size, min_tiles=1,
                       max_tiles=README_MAX_TILES, preprocessing="released", system_message=spec.system_message)


# ------------------------------------------------------------------------------------------ the plan
@dataclass
class ShardPlan:
    """The released tensors of one shard and what each becomes."""

    header: Header
    items: list[tuple[str, TensorInfo, list[Target]]]

    @property
    def path(self) -> Path:
        return self.header.path


def expected_shapes(config, spec: ReleasedSpec) -> dict[str, tuple[int, ...]]:
    """Our tensors' shapes for `config` (an InternVLConfig; built on the meta device, no memory) and the mask
    encoder's, prefixed `mask_encoder.`."""
    import torch
    from transformers import InternVLForConditionalGeneration

    from .mask_encoder import MaskEncoder

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
        encoder = MaskEncoder(spec.tile_size, config.text_config.hidden_size, spec.num_mask_tokens, "linear")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes.update({MASK_PREFIX + k: tuple(v.shape) for k, v in encoder.state_dict().items()})
    return shapes


def plan_checkpoint(spec: ReleasedSpec, shapes: dict[str, tuple[int, ...]]) -> list[ShardPlan]:
    """Read every shard's header and map every tensor; UrecaError (naming the shard and the tensor) for a name
    that is no part of the released model, a shape the config does not describe, a tensor listed in the index
    but absent from its shard, a tensor found twice, or a tensor of the model that no shard holds."""
    plans, seen = [], {}
    for path in spec.shards:
        header = read_header(path)
        items = []
        for name, info in header.tensors.items():
            try:
                targets = plan_tensor(name, info.shape, spec.family, spec.attention_shape())
            except KeyError:
                raise UrecaError(f"{path}: tensor {name!r} is no part of the model config.json describes (a "
                                 f"released {spec.family} model)") from None
            except ShapeError as e:
                raise UrecaError(f"{path}: tensor {name!r} has shape {list(info.shape)}: {e}") from None
            for t in targets:
                want = shapes.get(t.key)
                if want is None:
                    raise UrecaError(f"{path}: tensor {name!r} is no part of the model config.json describes "
                                     f"(it would be {t.key})")
                if tuple(t.shape) != tuple(want):
                    raise UrecaError(f"{path}: tensor {name!r} has shape {list(info.shape)}, config.json describes "
                                     f"{list(want)} for it" if len(targets) == 1 else
                                     f"{path}: tensor {name!r} has shape {list(info.shape)}: its part {t.key} is "
                                     f"{list(t.shape)}, config.json describes {list(want)}")
                if t.key in seen:
                    raise UrecaError(f"{path}: tensor {name!r} is also in {seen[t.key]}")
                seen[t.key] = path.name
            items.append((name, info, targets))
        plans.append(ShardPlan(header, items))
    for name, shard in spec.index.items():
        held = next((p for p in plans if p.path.name == shard), None)
        if held is not None and name not in held.header.tensors:
            raise UrecaError(f"{spec.folder / shard}: {INDEX_FILE} lists tensor {name!r} in it, which it does not hold")
    missing = sorted(set(shapes) - set(seen))
    if missing:
        raise UrecaError(f"{spec.folder}: the weights lack {len(missing)} tensor(s) of the model config.json "
                         f"describes: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return plans


def weights_dtype(plans: list[ShardPlan]):
    """The torch dtype most of the released bytes are in (the dtype the model was saved in)."""
    from collections import Counter

    import torch

    from .shards import DTYPES

    count: Counter = Counter()
    for p in plans:
        for _name, info, _t in p.items:
            count[info.dtype] += info.nbytes
    return getattr(torch, DTYPES[count.most_common(1)[0][0]][0]) if count else torch.float32


# ------------------------------------------------------------------------------------------ tokens
@dataclass(frozen=True)
class ReleasedTokens:
    """Ids of the tokens the released inference uses."""

    mask_start: int
    mask_end: int
    mask_context: int
    image_context: int
    end_of_turn: int
    pad: int | None


def released_tokens(tokenizer, folder: Path) -> ReleasedTokens:
    from .config import MASK_CONTEXT, MASK_END, MASK_START

    vocab = tokenizer.get_vocab()
    need = (MASK_START, MASK_END, MASK_CONTEXT, "<IMG_CONTEXT>", "<|im_end|>")
    missing = [t for t in need if t not in vocab]
    if missing:
        raise UrecaError(f"{folder}: the tokenizer lacks {', '.join(missing)} (the released model's added tokens)")
    return ReleasedTokens(*(vocab[t] for t in need), pad=tokenizer.pad_token_id)


def released_meta(folder: str | Path) -> tuple[dict[str, Any], Any]:
    """(ureca.json-like dict, UrecaConfig) of a released folder, from its files only (no weights read): what
    `checkpoint.read_checkpoint_config` gives for it. The base is the folder itself; no adapter."""
    from .config import ADDED_TOKENS
    from .released_tokenizer import added_token_ids

    spec = read_released(folder)
    ids = added_token_ids(spec.folder)
    meta = {"format": MODEL_TYPE, "config": ureca_config(spec).to_dict(), "base_embedded": False, "adapter": False,
            "added_tokens": {t: ids[t] for t in ADDED_TOKENS if t in ids}, "family": spec.family}
    return meta, ureca_config(spec)


# ------------------------------------------------------------------------------------------ loading
def load_internvl(folder: str | Path, dtype: str | None = None):
    """The InternVL part of a released folder as an `InternVLForConditionalGeneration` (eval mode, CPU), with
    (tokenizer, spec, ReleasedTokens, the MaskEncoder state dict). dtype: "float32", "bfloat16", ... or None for
    the dtype of the released weights."""
    import torch
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    from ..loading import quiet_progress as _quiet_progress
    from .released_tokenizer import load_released_tokenizer
    from .shards import read_tensor

    spec = read_released(folder)
    tok = load_released_tokenizer(spec.folder, spec.family)
    ids = released_tokens(tok, spec.folder)
    config = internvl_config(spec, ids.image_context, ids.end_of_turn, ids.pad)
    plans = plan_checkpoint(spec, expected_shapes(config, spec))
    torch_dtype = getattr(torch, dtype) if dtype else weights_dtype(plans)
    if not isinstance(torch_dtype, torch.dtype):
        raise UrecaError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)")
    base, mask = {}, {}
    for plan in plans:
        with open(plan.path, "rb") as fh:
            for _name, info, targets in plan.items:
                tensor = read_tensor(fh, info)
                for t in targets:
                    value = (t.take(tensor) if t.take else tensor).to(torch_dtype)
                    if t.key.startswith(MASK_PREFIX):
                        mask[t.key[len(MASK_PREFIX):]] = value
                    else:
                        base[t.key] = value
                del tensor
    try:
        with _quiet_progress():
            internvl = InternVLForConditionalGeneration.from_pretrained(None, config=config, state_dict=base,
                                                                        dtype=torch_dtype)
    except Exception as e:  # noqa: BLE001 - keys and shapes were checked; anything left is reported in one line
        raise UrecaError(f"{spec.folder}: cannot build the model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    internvl.generation_config = GenerationConfig(eos_token_id=ids.end_of_turn, pad_token_id=ids.pad)
    internvl.eval()
    return internvl, tok, spec, ids, mask


def load_released(folder: str | Path, *, device: str | None = None, dtype: str | None = None,
                  trainable: bool = False):
    """A released folder -> UrecaModel with the released preprocessing (`.processor` set; eval mode unless
    `trainable`). Same arguments as `load_checkpoint`."""
    from .processor import UrecaProcessor
    from .shards import load_state_strict
    from .ureca import MaskTokenIds, UrecaModel

    internvl, tok, spec, ids, mask = load_internvl(folder, dtype)
    config = ureca_config(spec)
    token_ids = MaskTokenIds(start=ids.mask_start, end=ids.mask_end, context=ids.mask_context,
                             image=ids.image_context)
    model = UrecaModel(internvl, config, token_ids)
    load_state_strict(model.mask_encoder, mask, spec.folder)
    model.processor = UrecaProcessor(tok, config, token_ids, image_seq_length=spec.image_seq_length)
    if device:
        model.to(device)
    if not trainable:
        model.eval()
    return model


# ------------------------------------------------------------------------------------------ the hub
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_source(name: str | Path, flag: str = "--model") -> Path:
    """A local folder as it is; a hub id ("owner/name") that is not a local path -> the folder of its snapshot,
    fetching only configs, safetensors and tokenizer files (never code, never pickles). UrecaError otherwise."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    text = str(name)
    if path.exists():
        raise UrecaError(f"{flag} {text}: not a folder")
    if not _REPO_ID.fullmatch(text) or text.startswith((".", "/", "~")):
        raise UrecaError(f"{flag} {text}: folder not found")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt",
                                                        "*.jinja"])
    except Exception as e:  # noqa: BLE001 - the hub client raises many types (offline, not found, auth)
        raise UrecaError(f"{flag} {text}: folder not found, nor on the hub ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    return Path(local)
