"""URECA checkpoints: a folder that one call (`load_checkpoint`) turns back into the model, strictly.

Layout of a checkpoint folder:

    ureca.json                 format, UrecaConfig, added-token ids, embedding rows, what else is present
    mask_encoder.safetensors   the mask encoder's state dict
    added_tokens.safetensors   `input`: (n, D) embedding rows of <mask>, </mask>, <MASK_CONTEXT> (in that
                               order); `output`: the lm_head rows, when the output embedding is untied
    adapter/                   optional peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
    base/                      only when the base has no id (config.base is None): the InternVL weights,
                               without LoRA, saved with save_pretrained
    tokenizer.json, tokenizer_config.json, processor_config.json, chat_template.jinja
                               the InternVLProcessor, its tokenizer holding the added tokens (with the released
                               preprocessing: the tokenizer alone)

Anything missing or not matching (a file, a key, a shape, a token id) is a `UrecaError` naming it.

`load_checkpoint` and `read_checkpoint_config` also take the paper's released checkpoint as it is (a folder
whose config.json says `internvl_chat`, see released.py), and a checkpoint whose base is such a folder (stage 2
trained from it keeps only the id).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from ..loading import check_safetensors, quiet_peft
from ..loading import quiet_progress as _quiet_progress
from .folders import check_model_folder
from .shards import load_state_strict

FORMAT = "ureca-checkpoint"
VERSION = 1
CONFIG_FILE = "ureca.json"
MASK_ENCODER_FILE = "mask_encoder.safetensors"
ADDED_TOKENS_FILE = "added_tokens.safetensors"
ADAPTER_DIR = "adapter"
BASE_DIR = "base"


def _clean_base_state_dict(internvl) -> dict[str, Any]:
    """The InternVL's own weights: LoRA weights dropped and peft's `.base_layer.` unwrapped."""
    state = {}
    for key, value in internvl.state_dict().items():
        if "lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    return state


def save_checkpoint(model, folder: str | Path, processor=None, *, embed_base: bool | None = None) -> Path:
    """Write `model` (a UrecaModel) and its processor (default `model.processor`) to `folder`.

    The base's weights are written (to base/) when `embed_base` is True, or by default when `config.base` is
    None; otherwise only the id is kept. A LoRA adapter, if the model has one, goes to adapter/.
    """
    import torch
    from safetensors.torch import save_file

    from .ureca import ADDED_TOKENS, _embedding_matrices

    processor = processor if processor is not None else model.processor
    if processor is None:
        raise ValueError("save_checkpoint needs the model's processor")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    embed = config.base is None if embed_base is None else embed_base
    internvl = model.internvl
    ids = model.token_ids.added()

    encoder_state = {k: v.detach().contiguous().cpu() for k, v in model.mask_encoder.state_dict().items()}
    save_file(encoder_state, str(folder / MASK_ENCODER_FILE), metadata={"format": FORMAT})
    rows = torch.tensor([ids[t] for t in ADDED_TOKENS])
    mats = _embedding_matrices(internvl)
    added = {"input": mats[0].weight.detach()[rows].contiguous().cpu()}
    if len(mats) > 1:
        added["output"] = mats[1].weight.detach()[rows].contiguous().cpu()
    save_file(added, str(folder / ADDED_TOKENS_FILE), metadata={"format": FORMAT})

    if model.has_lora:
        model.base.save_pretrained(str(folder / ADAPTER_DIR))
    if embed:
        with _quiet_progress():
            internvl.save_pretrained(str(folder / BASE_DIR), state_dict=_clean_base_state_dict(internvl))
    processor.hf.save_pretrained(str(folder))

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "added_tokens": ids,
        "vocab_rows": int(mats[0].weight.shape[0]),
        "hidden_size": int(mats[0].weight.shape[1]),
        "base_embedded": embed,
        "adapter": model.has_lora,
        "dtype": str(model.dtype).removeprefix("torch."),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def read_checkpoint_meta(folder: str | Path) -> dict[str, Any]:
    """ureca.json of a checkpoint folder, checked (UrecaError names the folder and what is wrong)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UrecaError(f"{folder}: checkpoint folder not found")
    path = folder / CONFIG_FILE
    if not path.is_file():
        from .released import describe_folder

        raise UrecaError(f"{folder}: not a URECA checkpoint (no {CONFIG_FILE}), nor the paper's released "
                         f"checkpoint (no config.json with model_type internvl_chat); {describe_folder(folder)}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UrecaError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UrecaError(f"{path}: not a URECA checkpoint config (format must be {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise UrecaError(f"{path}: checkpoint format version {meta.get('version')!r}, this ureca reads {VERSION}")
    for key in ("config", "added_tokens", "vocab_rows", "hidden_size", "base_embedded", "adapter"):
        if key not in meta:
            raise UrecaError(f"{path}: missing field {key!r}")
    return meta


def read_checkpoint_config(folder: str | Path) -> tuple[dict[str, Any], Any]:
    """(ureca.json, its UrecaConfig) of a checkpoint folder, both checked; for the paper's released checkpoint,
    the same read from its config (its base is the folder itself, base_embedded and adapter false)."""
    from .config import UrecaConfig
    from .released import is_released, released_meta, resolve_source

    folder = resolve_source(folder, "checkpoint") if not Path(folder).is_dir() else Path(folder)
    if not (folder / CONFIG_FILE).is_file() and is_released(folder):
        return released_meta(folder)
    meta = read_checkpoint_meta(folder)
    try:
        return meta, UrecaConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise UrecaError(f"{Path(folder) / CONFIG_FILE}: bad config ({e})") from None


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise UrecaError(f"{path.parent}: checkpoint is missing {path.name}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise UrecaError(f"{path}: unreadable safetensors file ({e})") from None


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _check_adapter_file(adapter_dir: Path) -> Path:
    """The adapter's safetensors file; a pickled adapter (adapter_model.bin) is refused before peft, which would
    fall back to unpickling it, sees the folder."""
    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        check_safetensors(adapter_dir, stem="adapter_model")
        raise UrecaError(f"{adapter_dir}: missing {ADAPTER_WEIGHTS}")
    return path


def _safetensors_keys(path: Path) -> set[str]:
    """The tensor names of a safetensors file, from its header (no tensor is read)."""
    from safetensors import safe_open

    if not path.is_file():
        raise UrecaError(f"{path.parent}: checkpoint is missing {path.name}")
    try:
        with safe_open(str(path), "pt") as f:
            return set(f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise UrecaError(f"{path}: unreadable safetensors file ({e})") from None


def _check_adapter_keys(peft_model, adapter_dir: Path) -> None:
    """Strictness for the LoRA adapter: the file's keys must be exactly the model's LoRA keys."""
    from peft import get_peft_model_state_dict

    saved = _safetensors_keys(_check_adapter_file(adapter_dir))
    own = set(get_peft_model_state_dict(peft_model))
    missing, unexpected = sorted(own - saved), sorted(saved - own)
    if missing or unexpected:
        raise UrecaError(f"{adapter_dir}: adapter does not match the model (missing keys: "
                         f"{', '.join(missing[:5]) or 'none'}; unexpected keys: {', '.join(unexpected[:5]) or 'none'})")


def load_checkpoint(folder: str | Path, *, device: str | None = None, dtype: str | None = None,
                    base: str | None = None, trainable: bool = False):
    """Load a URECA checkpoint folder, or the paper's released checkpoint (a folder, or a hub id fetched
    without code or pickles) -> UrecaModel (eval mode unless `trainable`; `.processor` set).

    device: "cpu", "cuda", "cuda:1", ... (default: where from_pretrained puts it, the CPU); dtype: "float32",
    "bfloat16", "float16", None for the dtype the model had when it was saved (ureca.json), or "auto" for the
    dtype the base's weight files are in: they are then read memory-mapped as they are (safetensors), never
    loaded in one dtype and cast to another, which takes 3-4 times as long for a 1B model (bench/caption.py);
    base: override the base id/folder (for a checkpoint whose base lives elsewhere on this machine); trainable:
    load the LoRA adapter trainable.
    """
    import torch
    from transformers import AutoProcessor, AutoTokenizer, InternVLForConditionalGeneration

    from .processor import UrecaProcessor
    from .released import is_released, load_internvl, load_released, resolve_source
    from .ureca import ADDED_TOKENS, MaskTokenIds, UrecaModel, _embedding_matrices

    folder = resolve_source(folder, "checkpoint") if not Path(folder).is_dir() else Path(folder)
    if not (folder / CONFIG_FILE).is_file() and is_released(folder):
        if base is not None:
            raise UrecaError(f"{folder}: the paper's released checkpoint holds its own base; leave out base")
        return load_released(folder, device=device, dtype=None if dtype == "auto" else dtype, trainable=trainable)
    meta, config = read_checkpoint_config(folder)
    for name in (MASK_ENCODER_FILE, ADDED_TOKENS_FILE, "tokenizer_config.json"):
        if not (folder / name).is_file():
            raise UrecaError(f"{folder}: checkpoint is missing {name}")
    if meta["adapter"] and not (folder / ADAPTER_DIR / "adapter_config.json").is_file():
        raise UrecaError(f"{folder}: checkpoint is missing {ADAPTER_DIR}/adapter_config.json")
    if meta["adapter"]:
        _check_adapter_file(folder / ADAPTER_DIR)

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype or meta.get("dtype", "float32"), None)
    if not isinstance(torch_dtype, torch.dtype) and torch_dtype != "auto":
        raise UrecaError(f"unknown dtype {dtype or meta.get('dtype')!r} (use float32, bfloat16 or float16)")
    if meta["base_embedded"] and base is None:
        if not (folder / BASE_DIR / "config.json").is_file():
            raise UrecaError(f"{folder}: checkpoint is missing {BASE_DIR}/config.json (the embedded base model)")
        source = str(folder / BASE_DIR)
    else:
        source = base or config.base
        if not source:
            raise UrecaError(f"{folder / CONFIG_FILE}: no base model id and no embedded base")
    base_is_released = is_released(source)  # stage 2 trained from the released checkpoint: its base is that folder
    if not base_is_released:
        try:
            check_model_folder(source, "the base", ("internvl",))
        except UrecaError as e:
            raise UrecaError(f"cannot load base model {source} ({e})") from None
    released = config.preprocessing == "released"
    try:
        hf_processor = (AutoTokenizer if released else AutoProcessor).from_pretrained(str(folder))
    except Exception as e:
        raise UrecaError(f"{folder}: cannot load the processor/tokenizer ({type(e).__name__}: {e})") from None
    if base_is_released:
        internvl = load_internvl(source, dtype=None if torch_dtype == "auto" else str(torch_dtype).removeprefix("torch."))[0]
    else:
        try:
            with _quiet_progress():
                internvl = InternVLForConditionalGeneration.from_pretrained(source, dtype=torch_dtype,
                                                                            use_safetensors=True)
        except Exception as e:
            raise UrecaError(f"cannot load base model {source} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]})") from None

    tok = hf_processor if released else hf_processor.tokenizer
    vocab = tok.get_vocab()
    for t, want in meta["added_tokens"].items():
        if vocab.get(t) != want:
            raise UrecaError(f"{folder}: tokenizer has {t} as id {vocab.get(t)}, {CONFIG_FILE} says {want}")
    rows = internvl.get_input_embeddings().weight.shape[0]
    if rows < meta["vocab_rows"]:
        internvl.resize_token_embeddings(meta["vocab_rows"], mean_resizing=False)
    elif rows > meta["vocab_rows"]:
        raise UrecaError(f"{folder}: base model {source} has {rows} embedding rows, checkpoint expects "
                         f"{meta['vocab_rows']}")
    ids = meta["added_tokens"]
    token_ids = MaskTokenIds(start=ids["<mask>"], end=ids["</mask>"], context=ids["<MASK_CONTEXT>"],
                             image=internvl.config.image_token_id)
    model = UrecaModel(internvl, config, token_ids)

    load_state_strict(model.mask_encoder, _load_safetensors(folder / MASK_ENCODER_FILE), folder / MASK_ENCODER_FILE)
    added = _load_safetensors(folder / ADDED_TOKENS_FILE)
    mats = _embedding_matrices(internvl)
    want = {"input"} | ({"output"} if len(mats) > 1 else set())
    if set(added) != want:
        raise UrecaError(f"{folder / ADDED_TOKENS_FILE}: has {sorted(added)}, the model needs {sorted(want)}")
    rows_idx = torch.tensor([ids[t] for t in ADDED_TOKENS])
    with torch.no_grad():
        for name, mat in zip(("input", "output"), mats, strict=False):
            value = added[name]
            if tuple(value.shape) != (len(ADDED_TOKENS), mat.weight.shape[1]):
                raise UrecaError(f"{folder / ADDED_TOKENS_FILE}: {name} has shape {tuple(value.shape)}, "
                                 f"expected {(len(ADDED_TOKENS), mat.weight.shape[1])}")
            mat.weight[rows_idx] = value.to(mat.weight.dtype)

    if meta["adapter"]:
        from peft import PeftModel

        try:
            # low_cpu_mem_usage: the LoRA weights are made empty and filled from the file, not made random and
            # overwritten; for inference the adapter takes the model's dtype (as merged weights would), where peft
            # would cast it to the base's dtype and back to float32 (r 128 on a 1B model: 15 of 20 s of a load)
            with quiet_peft():
                model.base = PeftModel.from_pretrained(internvl, str(folder / ADAPTER_DIR), is_trainable=trainable,
                                                       low_cpu_mem_usage=True, autocast_adapter_dtype=trainable)
        except Exception as e:
            raise UrecaError(f"{folder / ADAPTER_DIR}: cannot load the LoRA adapter ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]})") from None
        _check_adapter_keys(model.base, folder / ADAPTER_DIR)
    model.processor = UrecaProcessor(hf_processor, config, token_ids,
                                     image_seq_length=getattr(internvl.config, "image_seq_length", None))
    if device:
        model.to(device)
    if not trainable:
        model.eval()
    return model
