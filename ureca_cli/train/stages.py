"""What each training stage trains: the model a run starts from, and what is frozen and trainable in it.

Stage 1 trains the mask encoder (convolutions and projection) and the embedding rows of the added tokens
(``<mask>``, ``</mask>``, ``<MASK_CONTEXT>``); every other weight is frozen. The added rows are trained as a
separate (n_added, D) parameter whose values a forward hook puts in place of those rows' embeddings (and
logits, for the output embedding), so no other row can move, not even by weight decay, and the optimizer
holds 3 x D values instead of the whole vocabulary; the rows are written back into the embedding matrices
before every save (``sync_added_rows``). Stage 2 wraps the language model in LoRA (peft, targets limited to the
language model) and trains the LoRA weights only. Vision tower and image projector stay frozen throughout.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from ..model.config import UrecaConfig
from .config import LoraConfig, TrainConfig


def build_stage1_model(cfg: TrainConfig, dtype: str):
    """A new URECA model (``cfg.model``) around its base ("tiny", or an InternVL -hf id/folder, loaded in
    ``dtype``) with a fresh mask encoder."""
    from ..model import build_tiny_ureca, load_base

    m = cfg.model
    if m.base == "tiny":
        return build_tiny_ureca(seed=cfg.seed, num_mask_tokens=m.num_mask_tokens, mask_projector=m.mask_projector,
                                dynamic_mask=m.dynamic_mask, max_tiles=m.max_tiles)
    try:
        return load_base(m.base, m, dtype=dtype, seed=cfg.seed)
    except UrecaError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers and safetensors raise many types for a bad folder
        first = (str(e).strip().splitlines() or [""])[0]
        raise UrecaError(f"--base {m.base}: cannot load ({type(e).__name__}: {first})") from None


def check_base(source: str) -> None:
    """``--base``, checked before any data is read: "tiny", a hub id, or a local folder holding an InternVL
    ``-hf`` model whose files are whole and whose weights are safetensors (``model.folders``: pickled weights
    are refused, never opened; a damaged file is named)."""
    from ..errors import check_model_name
    from ..model.folders import check_model_folder

    if source == "tiny":
        return
    check_model_name("--base", source)
    folder = Path(source).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UrecaError(f"--base {source}: not a folder (give an InternVL -hf model folder or hub id)")
    check_model_folder(folder, "--base", ("internvl",))  # a hub id: from_pretrained(use_safetensors=True)


def init_model(folder: Path) -> tuple[UrecaConfig, bool]:
    """(the ``UrecaConfig`` of the checkpoint in ``folder``, whether it has a LoRA adapter). Its ``base`` is the
    embedded base's folder where the checkpoint carries one (``load_checkpoint`` loads that)."""
    from ..model.checkpoint import BASE_DIR, read_checkpoint_config

    meta, config = read_checkpoint_config(folder)
    if meta["base_embedded"]:
        config = replace(config, base=str(Path(folder) / BASE_DIR))
    return config, bool(meta["adapter"])


def attach_added_rows(model) -> Any:
    """Give ``model`` (a UrecaModel) a submodule ``added_rows`` and hooks that use it; returns the submodule.

    ``added_rows.input``: (n, D) fp32 rows of the input embedding for the n added tokens (in ``ADDED_TOKENS``
    order); ``added_rows.output``: the same for the output embedding when it is a separate matrix, else None
    (tied: the input rows serve both). The hooks put these rows in place of the matrices' rows in the
    embedding output (B, L, D) and in the logits (B, L, V), so gradients reach them and nothing else.
    """
    import torch
    from torch import nn

    from ..model.ureca import ADDED_TOKENS, _embedding_matrices

    ids = model.token_ids.added()
    index = torch.tensor([ids[t] for t in ADDED_TOKENS])
    mats = _embedding_matrices(model.internvl)
    rows = nn.Module()
    rows.register_buffer("index", index, persistent=False)
    rows.input = nn.Parameter(mats[0].weight.detach()[index].clone().float())
    rows.output = nn.Parameter(mats[1].weight.detach()[index].clone().float()) if len(mats) > 1 else None
    lookup = torch.full((mats[0].weight.shape[0],), -1, dtype=torch.long)
    lookup[index] = torch.arange(len(index))
    rows.register_buffer("lookup", lookup, persistent=False)

    def on_input(module, args, out):
        slot = rows.lookup.to(args[0].device)[args[0]]
        hit = slot >= 0
        if not bool(hit.any()):
            return out
        new = rows.input.to(out.dtype)[slot.clamp(min=0)]
        return torch.where(hit.unsqueeze(-1), new, out)

    def on_output(module, args, out):
        table = rows.output if rows.output is not None else rows.input
        extra = args[0] @ table.to(args[0].dtype).t()
        return out.index_copy(-1, rows.index.to(out.device), extra.to(out.dtype))

    model.added_rows = rows
    rows.hooks = [mats[0].register_forward_hook(on_input)]
    out_emb = model.internvl.get_output_embeddings()
    if out_emb is not None:
        rows.hooks.append(out_emb.register_forward_hook(on_output))
    return rows


def sync_added_rows(model) -> None:
    """Copy the trained added rows into the embedding matrices (before a save: the checkpoint reads them there)."""
    import torch

    from ..model.ureca import _embedding_matrices

    rows = getattr(model, "added_rows", None)
    if rows is None:
        return
    mats = _embedding_matrices(model.internvl)
    with torch.no_grad():
        mats[0].weight[rows.index] = rows.input.to(mats[0].weight.dtype)
        if len(mats) > 1:
            src = rows.output if rows.output is not None else rows.input
            mats[1].weight[rows.index] = src.to(mats[1].weight.dtype)


def prepare_stage1(model) -> None:
    """Freeze everything but the mask encoder and the added tokens' rows (attached here)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.mask_encoder.float()
    for p in model.mask_encoder.parameters():
        p.requires_grad_(True)
    attach_added_rows(model)


def prepare_stage2(model, lora: LoraConfig) -> None:
    """Freeze everything, then add LoRA on the language model (its weights are the only trainable ones)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.add_lora(r=lora.r, alpha=lora.alpha, dropout=lora.dropout)
    bad = [n for n, p in model.named_parameters() if p.requires_grad and ("lora_" not in n or "language_model" not in n)]
    if bad:
        raise RuntimeError(f"stage 2 would train non-LoRA or non-language-model weights: {bad[:3]}")
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; frozen embedding rows that the added rows shadow are not double
    counted in ``trainable``."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    rows = getattr(model, "added_rows", None)
    if rows is not None:  # the shadow rows replace rows already counted in the embedding matrices
        total -= sum(p.numel() for p in rows.parameters())
    return trainable, total


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
