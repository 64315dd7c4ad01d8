"""Test doubles around the paper's released model code (``../shared/reference/URECA``, see its NOTES.md).

- ``released_code()``: imports the released ``ureca.model.internvl_chat`` with empty stand-ins for the three
  imports its inference never uses (detectron2's ``init_weights``, ``ureca.model.phi3``, ``mug_cap_arch_2``).
- ``readme_recipe()``: the released README's own preprocessing functions (``build_transform``,
  ``find_closest_aspect_ratio``, ``dynamic_preprocess``, ``load_image``), executed from the README's text.
- ``build_released(family, folder)``: a tiny random released model (InternViT + Qwen2 or InternLM2 + mask
  encoder) with a tokenizer trained on the fly (byte-level BPE for Qwen2, a sentencepiece BPE behind the released
  ``InternLM2Tokenizer`` for InternLM2), saved in the released layout (config.json, sharded safetensors,
  tokenizer files). The language model is initialised with std 0.3: with the default 0.02 a tiny model's
  greedy caption ignores its inputs and an equality test would prove nothing (NOTES.md).
- ``released_caption(...)``: the released inference end to end: the README's ``load_image``, its mask recipe
  (0/255 float image, ``dynamic_preprocess(if_mask=True)``, uint8), ``model.chat(...)`` greedy; returns the
  generated token ids. InternLM2's class has no working ``generate()`` under transformers 5, so its
  ``language_model.generate`` is stood in for by a greedy loop of full forward passes (checked against one
  teacher-forced forward pass).
"""

from __future__ import annotations

import io
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import SHARED

REF = SHARED / "reference" / "URECA"
REF_CODE = REF / "ureca_model"
TILE = 56
LM_STD = 0.3


def released_code():
    """The released ``ureca.model.internvl_chat`` package (skips the test when ../shared is absent)."""
    if not (REF_CODE / "ureca" / "model" / "internvl_chat").is_dir():
        pytest.skip("../shared/reference/URECA is absent")
    pytest.importorskip("timm")
    pytest.importorskip("einops")
    pytest.importorskip("sentencepiece")
    if "ureca.model.internvl_chat" not in sys.modules:
        def stub(name: str, **attrs: Any) -> None:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules.setdefault(name, module)

        class _Unused:
            pass

        for name in ("detectron2", "detectron2.modeling", "detectron2.modeling.backbone"):
            stub(name)
        stub("detectron2.modeling.backbone.regnet", init_weights=lambda *a, **k: None)
        stub("ureca.model.phi3")
        stub("ureca.model.phi3.modeling_phi3", Phi3ForCausalLM=_Unused)
        stub("ureca.model.phi3.configuration_phi3", Phi3Config=_Unused)
        stub("ureca.model.internvl_chat.mug_cap_arch_2", InternVLChatModel=_Unused)
        if str(REF_CODE) not in sys.path:
            sys.path.insert(0, str(REF_CODE))
    import ureca.model.internvl_chat as chat

    return chat


def readme_recipe() -> types.SimpleNamespace:
    """The preprocessing functions of the released README, run from its text (imports supplied here)."""
    import torch
    import torchvision.transforms as T
    from PIL import Image
    from torchvision.transforms.functional import InterpolationMode

    text = (REF_CODE / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    start = code.index("IMAGENET_MEAN")
    end = code.index("import torch\nfrom transformers import AutoTokenizer, AutoModel")
    namespace: dict[str, Any] = {"np": np, "torch": torch, "T": T, "Image": Image,
                                 "InterpolationMode": InterpolationMode}
    exec(compile(code[start:end], str(REF_CODE / "README.md"), "exec"), namespace)  # noqa: S102 - reference text
    return types.SimpleNamespace(**{k: namespace[k] for k in ("build_transform", "find_closest_aspect_ratio",
                                                               "dynamic_preprocess", "load_image")})


def readme_mask_values(mask01: np.ndarray, tile: int = TILE):
    """The README's dynamic mask recipe (``if mask_dynamic:``) in float32 on the CPU, for tiles of ``tile``."""
    import torch
    from PIL import Image

    recipe = readme_recipe()
    mask = Image.fromarray(mask01.astype(dtype=np.float64) * 255)
    masks = recipe.dynamic_preprocess(mask, max_num=12, image_size=tile, use_thumbnail=True, if_mask=True)
    return torch.tensor(np.array([np.array(m).astype(np.uint8) for m in masks])).unsqueeze(1).to(torch.float32)


# ------------------------------------------------------------------------------------------ tokenizers
ADDED = ["<img>", "</img>", "<IMG_CONTEXT>", "<mask>", "</mask>", "<MASK_CONTEXT>"]


def internlm2_tokenizer(folder: Path):
    """The released InternLM2Tokenizer around a sentencepiece BPE trained on the fly, with InternLM2's chat
    tokens as user-defined pieces (listed as added tokens, as the real tokenizer_config.json lists them) and
    InternVL's and URECA's tokens added after the vocabulary; saved into ``folder``."""
    import sentencepiece as spm

    from ureca_cli.model.tiny import _corpus

    released_code()
    from ureca.model.internlm2.tokenization_internlm2 import InternLM2Tokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buf, vocab_size=400, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, user_defined_symbols=["<|im_start|>", "<|im_end|>"], unk_id=0,
        bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    tok = InternLM2Tokenizer(str(folder / "tokenizer.model"))
    tok.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tok.add_tokens(ADDED, special_tokens=True)
    tok.save_pretrained(str(folder))
    return tok


def qwen2_tokenizer(folder: Path):
    """A Qwen2 byte-level BPE trained on the fly (ureca's tiny tokenizer) with URECA's tokens; saved."""
    from ureca_cli.model.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.add_tokens(ADDED[3:], special_tokens=True)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return tok


# ------------------------------------------------------------------------------------------ models
def released_config(family: str, vocab_size: int, *, num_mask_token: int = 8):
    chat = released_code()
    qk_norm = family == "internlm2"  # cover both InternViT variants: 300M (LayerNorm) and 6B (RMSNorm + qk norm)
    vision = dict(architectures=["InternVisionModel"], hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, image_size=TILE, patch_size=14, qkv_bias=not qk_norm,
                  norm_type="rms_norm" if qk_norm else "layer_norm", qk_normalization=qk_norm,
                  initializer_factor=0.1)
    llm = dict(architectures=["Qwen2ForCausalLM" if family == "qwen2" else "InternLM2ForCausalLM"], hidden_size=64,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
               vocab_size=vocab_size, max_position_embeddings=4096, rope_theta=10000.0)
    if family == "internlm2":
        llm["bias"] = False
    config = chat.InternVLChatConfig(vision_config=vision, llm_config=llm, template="internvl2_5",
                                     force_image_size=TILE, downsample_ratio=0.5, ps_version="v2",
                                     num_mask_token=num_mask_token, select_layer=-1, dynamic_image_size=True,
                                     use_thumbnail=True, max_dynamic_patch=12, dynamic_mask_size=True)
    if family == "internlm2":
        config.llm_config.rope_scaling = None  # transformers 5 fills in a default the old code cannot read
    return config


def build_released(family: str, folder: Path, *, seed: int = 0, shards: int = 3):
    """(released model (eval, fp32), its tokenizer as chat() uses it): a tiny random released model saved in
    ``folder`` in the released layout, the weights split over several safetensors shards."""
    import torch

    chat = released_code()
    folder.mkdir(parents=True, exist_ok=True)
    tok = internlm2_tokenizer(folder) if family == "internlm2" else qwen2_tokenizer(folder)
    config = released_config(family, len(tok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = chat.InternVLChatModel(config, use_flash_attn=False)
        with torch.no_grad():
            for p in model.language_model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, LM_STD)
            for m in model.mask_encoder:  # non-zero biases, so a wrong conv mapping shows
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.normal_(0.0, 0.1)
    model.eval()
    save_released(model, folder, shards=shards)
    return model, tok


def save_released(model, folder: Path, *, shards: int = 3) -> None:
    """Write the released layout as transformers 4 wrote it: config.json (``llm_config`` with ``rope_theta`` /
    ``rope_scaling``, not transformers 5's ``rope_parameters``) and the state dict split over ``shards``
    safetensors files with ``model.safetensors.index.json``. (transformers 5's save_pretrained cannot save the
    released class: its ``_tied_weights_keys`` is a list.)"""
    import json

    from safetensors.torch import save_file

    config = model.config.to_dict()
    llm = config["llm_config"]
    rope = llm.pop("rope_parameters", None) or {}
    llm["rope_theta"] = rope.get("rope_theta", llm.get("rope_theta", 10000.0))
    llm["rope_scaling"] = None
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    parts = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


# ------------------------------------------------------------------------------------------ inference
def _greedy_loop(model):
    """A stand-in for ``language_model.generate`` (greedy, no cache): full forward passes, argmax of the last
    position, until the end-of-turn token or ``max_new_tokens``; returns the new token ids (1, N)."""
    import torch

    lm = model.language_model

    def generate(inputs_embeds, attention_mask=None, eos_token_id=None, max_new_tokens=20, **_kw):
        embeds, new = inputs_embeds, []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = lm(inputs_embeds=embeds).logits
                nxt = int(logits[0, -1].argmax())
                new.append(nxt)
                if nxt == eos_token_id:
                    break
                embeds = torch.cat([embeds, lm.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
            if len(new) > 1:  # the loop agrees with one teacher-forced pass over the whole sequence
                logits = lm(inputs_embeds=embeds).logits[0, inputs_embeds.shape[1] - 1:-1].argmax(-1)
                assert logits.tolist() == new[:len(logits)]
        return torch.tensor([new])

    return generate


def released_caption(model, tok, family: str, image_path: Path, mask01: np.ndarray, *, max_new_tokens: int = 20,
                     question: str = "Describe this region in the image.") -> dict[str, Any]:
    """The released inference: README's load_image and mask recipe, then ``model.chat`` (greedy). Returns
    {"ids": generated ids (list, as generate returned them), "text": chat()'s answer, "input_ids",
    "pixel_values", "mask_values": what chat() passed to generate}."""
    import torch

    recipe = readme_recipe()
    pixel_values = recipe.load_image(str(image_path), input_size=TILE, max_num=12)
    mask_values = readme_mask_values(mask01)
    seen: dict[str, Any] = {}
    real_generate, real_decode = model.generate, tok.batch_decode

    def spy_generate(**kwargs):
        seen.update(input_ids=kwargs["input_ids"], pixel_values=kwargs["pixel_values"],
                    mask_values=kwargs["mask_values"])
        return real_generate(**kwargs)

    def spy_decode(ids, **kwargs):
        seen["ids"] = ids[0].tolist()
        return real_decode(ids, **kwargs)

    model.generate = spy_generate
    tok.batch_decode = spy_decode
    if family == "internlm2":
        model.language_model.generate = _greedy_loop(model)
    try:
        with torch.no_grad():
            seen["text"] = model.chat(tok, pixel_values, mask_values, f"<image>\n<mask>\n{question}",
                                      dict(max_new_tokens=max_new_tokens, do_sample=False))
    finally:
        del model.generate, tok.batch_decode
        if family == "internlm2":
            del model.language_model.generate
    return seen


def released_logits(model, input_ids, pixel_values, mask_tiles, tok):
    """The released forward's logits for our prepared inputs (mask tiles (T, S, S) -> (T, 1, S, S) float)."""
    import torch

    model.img_context_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    model.mask_context_token_id = tok.convert_tokens_to_ids("<MASK_CONTEXT>")
    with torch.no_grad():
        out = model(pixel_values=pixel_values.float(), input_ids=input_ids,
                    image_flags=torch.ones(pixel_values.shape[0], 1, dtype=torch.long),
                    mask_values=mask_tiles.unsqueeze(1).float())
    return out.logits
