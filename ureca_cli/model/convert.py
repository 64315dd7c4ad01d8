"""`ureca convert`: the paper's released checkpoint -> a URECA checkpoint, streamed shard by shard.

Everything is checked before a byte is written (config, tokenizer, every tensor's name and shape, see
`released.plan_checkpoint`). Then each released shard becomes one shard of `base/` (the InternVL weights under
transformers' names, `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` + `config.json`), its
tensors read one at a time with plain reads and written as they come (`shards.ShardWriter`), so memory holds one
tensor (and, for a fused qkv, its three parts), not a shard and never the model. The mask encoder's tensors and
the embedding rows of `<mask>`, `</mask>`, `<MASK_CONTEXT>` are kept aside (small) and written last with the
tokenizer and `ureca.json` (UrecaConfig with the released preprocessing; `converted_from` names the source).

The output is built in a hidden folder beside OUT and renamed to OUT at the end: a failure leaves nothing, and
OUT must not exist or be an empty folder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UrecaError
from .checkpoint import ADDED_TOKENS_FILE, BASE_DIR, CONFIG_FILE, FORMAT, MASK_ENCODER_FILE, VERSION
from .released import MASK_PREFIX

BASE_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class ConvertSummary:
    """What `convert_released` wrote: the family, shard count, bytes of base weights, largest released shard
    (bytes), seconds."""

    out: Path
    family: str
    shards: int
    tensors: int
    bytes_written: int
    largest_shard: int
    seconds: float


def check_out(out: Path) -> None:
    """OUT must not exist, or be an empty folder; anything else is refused before any work (nothing written)."""
    if out.exists():
        if not out.is_dir():
            raise UrecaError(f"{out}: exists and is not a folder (nothing written)")
        if any(out.iterdir()):
            raise UrecaError(f"{out}: exists and is not empty; choose a new folder (nothing written)")


def convert_released(src: str | Path, out: str | Path, *, log=None) -> ConvertSummary:
    """Convert the released checkpoint in `src` (a folder) to a URECA checkpoint in `out`. `log(message)` hears
    one line per shard. Returns a ConvertSummary; UrecaError (nothing written) for bad input."""
    import torch
    from safetensors.torch import save_file

    from .config import ADDED_TOKENS
    from .released import (
        expected_shapes,
        internvl_config,
        plan_checkpoint,
        read_released,
        released_tokens,
        ureca_config,
        weights_dtype,
    )
    from .released_tokenizer import load_released_tokenizer
    from .shards import ShardWriter, read_tensor

    start = time.perf_counter()
    src, out = Path(src), Path(out)
    check_out(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise UrecaError(f"{out}: inside the source folder {src}; choose a folder elsewhere (nothing written)")
    spec = read_released(src)
    tok = load_released_tokenizer(spec.folder, spec.family)
    ids = released_tokens(tok, spec.folder)
    config = internvl_config(spec, ids.image_context, ids.end_of_turn, ids.pad)
    shapes = expected_shapes(config, spec)
    plans = plan_checkpoint(spec, shapes)
    dtype = weights_dtype(plans)
    uconfig = ureca_config(spec)
    added_ids = {"<mask>": ids.mask_start, "</mask>": ids.mask_end, "<MASK_CONTEXT>": ids.mask_context}
    rows = torch.tensor([added_ids[t] for t in ADDED_TOKENS])
    embed_keys = {"model.language_model.embed_tokens.weight": "input", "lm_head.weight": "output"}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        base = tmp / BASE_DIR
        base.mkdir()
        mask_state, added, weight_map = {}, {}, {}
        with_base = [p for p in plans if any(not t.key.startswith(MASK_PREFIX) for _n, _i, ts in p.items for t in ts)]
        written = tensors = 0
        for number, plan in enumerate(with_base, start=1):
            name = f"model-{number:05d}-of-{len(with_base):05d}.safetensors"
            entries = [(t.key, info.torch_dtype, t.shape) for _n, info, targets in plan.items for t in targets
                       if not t.key.startswith(MASK_PREFIX)]
            with open(plan.path, "rb") as fh, ShardWriter(base / name, entries, {"format": "pt"}) as writer:
                for _name, info, targets in plan.items:
                    tensor = read_tensor(fh, info)
                    for t in targets:
                        value = t.take(tensor) if t.take else tensor
                        if t.key.startswith(MASK_PREFIX):
                            mask_state[t.key[len(MASK_PREFIX):]] = value.clone()
                            continue
                        writer.write(t.key, value)
                        weight_map[t.key] = name
                        tensors += 1
                        if t.key in embed_keys:
                            added[embed_keys[t.key]] = value[rows].clone()
                        del value
                    del tensor
                written += writer.nbytes
            if log:
                log(f"{plan.path.name} -> {BASE_DIR}/{name} ({len(entries)} tensors, {writer.nbytes / 2**20:.1f} MiB)")
        for plan in plans:  # shards that held only mask-encoder tensors
            if plan not in with_base:
                with open(plan.path, "rb") as fh:
                    for _name, info, targets in plan.items:
                        tensor = read_tensor(fh, info)
                        for t in targets:
                            mask_state[t.key[len(MASK_PREFIX):]] = (t.take(tensor) if t.take else tensor).clone()
        (base / BASE_INDEX).write_text(json.dumps({"metadata": {"total_size": written}, "weight_map": weight_map},
                                                  indent=2) + "\n")
        config.dtype = dtype
        config.architectures = ["InternVLForConditionalGeneration"]
        config.save_pretrained(str(base))
        from transformers import GenerationConfig

        GenerationConfig(eos_token_id=ids.end_of_turn, pad_token_id=ids.pad).save_pretrained(str(base))
        save_file({k: v.contiguous() for k, v in mask_state.items()}, str(tmp / MASK_ENCODER_FILE),
                  metadata={"format": FORMAT})
        save_file({k: v.contiguous() for k, v in added.items()}, str(tmp / ADDED_TOKENS_FILE),
                  metadata={"format": FORMAT})
        tok.save_pretrained(str(tmp))
        hidden = config.text_config.hidden_size
        meta = {
            "format": FORMAT, "version": VERSION, "config": uconfig.to_dict() | {"base": None},
            "added_tokens": added_ids, "vocab_rows": int(shapes["model.language_model.embed_tokens.weight"][0]),
            "hidden_size": int(hidden), "base_embedded": True, "adapter": False,
            "dtype": str(dtype).removeprefix("torch."),
            "converted_from": {"source": str(spec.folder.resolve()), "format": "internvl_chat",
                               "family": spec.family, "image_seq_length": spec.image_seq_length},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked); replaced by the finished folder
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConvertSummary(out, spec.family, len(plans), tensors, written,
                          max(p.header.size for p in plans), time.perf_counter() - start)
