"""A hand-built checkpoint in the paper's released layout, without the released code (tests that run
everywhere): the released tensor names and shapes written out by hand for a tiny config, random values,
config.json as transformers 4 wrote it, two safetensors shards with an index, and a tokenizer (Qwen2: ureca's
tiny BPE; InternLM2: a sentencepiece BPE trained on the fly with a tokenizer_config.json as the released
InternLM2Tokenizer writes it)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

V_HID, V_FF, TILE, PATCH = 8, 16, 28, 14
L_HID, L_FF, HEADS, KV = 16, 32, 4, 2
HEAD_DIM = L_HID // HEADS
K = 4
ADDED = ["<img>", "</img>", "<IMG_CONTEXT>", "<mask>", "</mask>", "<MASK_CONTEXT>"]


def released_shapes(family: str, vocab: int) -> dict[str, tuple[int, ...]]:
    """The released tensors (name -> shape) of the tiny config: InternViT (1 layer), projector, the language
    model (1 layer) of `family`, mask encoder."""
    v = "vision_model."
    lay = v + "encoder.layers.0."
    qk_norm = family == "internlm2"  # InternViT-6B style (RMSNorm, qk norm, no qkv bias) on this one
    s: dict[str, tuple[int, ...]] = {
        v + "embeddings.class_embedding": (1, 1, V_HID),
        v + "embeddings.position_embedding": (1, (TILE // PATCH) ** 2 + 1, V_HID),
        v + "embeddings.patch_embedding.weight": (V_HID, 3, PATCH, PATCH),
        v + "embeddings.patch_embedding.bias": (V_HID,),
        lay + "ls1": (V_HID,), lay + "ls2": (V_HID,),
        lay + "attn.qkv.weight": (3 * V_HID, V_HID),
        lay + "attn.proj.weight": (V_HID, V_HID), lay + "attn.proj.bias": (V_HID,),
        lay + "mlp.fc1.weight": (V_FF, V_HID), lay + "mlp.fc1.bias": (V_FF,),
        lay + "mlp.fc2.weight": (V_HID, V_FF), lay + "mlp.fc2.bias": (V_HID,),
        lay + "norm1.weight": (V_HID,), lay + "norm2.weight": (V_HID,),
        "mlp1.0.weight": (4 * V_HID,), "mlp1.0.bias": (4 * V_HID,),
        "mlp1.1.weight": (L_HID, 4 * V_HID), "mlp1.1.bias": (L_HID,),
        "mlp1.3.weight": (L_HID, L_HID), "mlp1.3.bias": (L_HID,),
        "mask_encoder.0.weight": (K, 1, 3, 3), "mask_encoder.0.bias": (K,),
        "mask_encoder.2.weight": (K, K, 3, 3), "mask_encoder.2.bias": (K,),
        "mask_linear.weight": (L_HID, (TILE // 4) ** 2), "mask_linear.bias": (L_HID,),
    }
    if qk_norm:
        s[lay + "attn.q_norm.weight"] = (V_HID,)
        s[lay + "attn.k_norm.weight"] = (V_HID,)
    else:
        s[lay + "attn.qkv.bias"] = (3 * V_HID,)
        s[lay + "norm1.bias"] = (V_HID,)
        s[lay + "norm2.bias"] = (V_HID,)
    m = "language_model.model."
    if family == "qwen2":
        a = m + "layers.0.self_attn."
        s.update({
            m + "embed_tokens.weight": (vocab, L_HID),
            a + "q_proj.weight": (L_HID, L_HID), a + "q_proj.bias": (L_HID,),
            a + "k_proj.weight": (KV * HEAD_DIM, L_HID), a + "k_proj.bias": (KV * HEAD_DIM,),
            a + "v_proj.weight": (KV * HEAD_DIM, L_HID), a + "v_proj.bias": (KV * HEAD_DIM,),
            a + "o_proj.weight": (L_HID, L_HID),
            m + "layers.0.mlp.gate_proj.weight": (L_FF, L_HID), m + "layers.0.mlp.up_proj.weight": (L_FF, L_HID),
            m + "layers.0.mlp.down_proj.weight": (L_HID, L_FF),
            m + "layers.0.input_layernorm.weight": (L_HID,), m + "layers.0.post_attention_layernorm.weight": (L_HID,),
            m + "norm.weight": (L_HID,), "language_model.lm_head.weight": (vocab, L_HID),
        })
    else:
        lay = m + "layers.0."
        s.update({
            m + "tok_embeddings.weight": (vocab, L_HID),
            lay + "attention.wqkv.weight": ((HEADS + 2 * KV) * HEAD_DIM, L_HID),
            lay + "attention.wo.weight": (L_HID, L_HID),
            lay + "feed_forward.w1.weight": (L_FF, L_HID), lay + "feed_forward.w3.weight": (L_FF, L_HID),
            lay + "feed_forward.w2.weight": (L_HID, L_FF),
            lay + "attention_norm.weight": (L_HID,), lay + "ffn_norm.weight": (L_HID,),
            m + "norm.weight": (L_HID,), "language_model.output.weight": (vocab, L_HID),
        })
    return s


def released_config(family: str, vocab: int) -> dict:
    """config.json of the tiny released model, as transformers 4 wrote the released one."""
    qk_norm = family == "internlm2"
    llm = {"architectures": ["Qwen2ForCausalLM" if family == "qwen2" else "InternLM2ForCausalLM"],
           "model_type": family, "hidden_size": L_HID, "intermediate_size": L_FF, "num_hidden_layers": 1,
           "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": vocab, "hidden_act": "silu",
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
           "tie_word_embeddings": False, "torch_dtype": "float32"}
    if family == "internlm2":
        llm.update(bias=False, auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config"})
    vision = {"architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": V_HID,
              "intermediate_size": V_FF, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": TILE,
              "patch_size": PATCH, "qkv_bias": not qk_norm, "qk_normalization": qk_norm,
              "norm_type": "rms_norm" if qk_norm else "layer_norm", "layer_norm_eps": 1e-6, "hidden_act": "gelu",
              "use_flash_attn": True}
    return {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
            "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                         "AutoModel": "modeling_internvl_chat.InternVLChatModel"},
            "vision_config": vision, "llm_config": llm, "force_image_size": TILE, "downsample_ratio": 0.5,
            "ps_version": "v2", "select_layer": -1, "template": "internvl2_5", "dynamic_image_size": True,
            "use_thumbnail": True, "max_dynamic_patch": 12, "min_dynamic_patch": 1, "num_mask_token": K,
            "dynamic_mask_size": True, "use_backbone_lora": 0, "use_llm_lora": 0, "torch_dtype": "float32"}


def write_tokenizer(family: str, folder: Path) -> int:
    """Write the tokenizer files; returns the vocabulary size (the model's embedding rows)."""
    if family == "qwen2":
        from ureca_cli.model.tiny import tiny_tokenizer

        tok = tiny_tokenizer()
        tok.add_tokens(ADDED[3:], special_tokens=True)
        tok.save_pretrained(str(folder))
        return len(tok)
    import sentencepiece as spm

    from ureca_cli.model.tiny import _corpus

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buf, vocab_size=400, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=["<|im_start|>", "<|im_end|>"], unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2, num_threads=1)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())

    def entry(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}

    decoder = {"0": entry("<unk>"), "1": entry("<s>"), "2": entry("</s>"), "3": entry("<|im_start|>"),
               "4": entry("<|im_end|>")}
    decoder.update({str(400 + i): entry(t) for i, t in enumerate(ADDED)})
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": decoder, "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False}, indent=2))
    return 400 + len(ADDED)


def write_released(family: str, folder: Path, *, seed: int = 0, shards: int = 2) -> dict[str, np.ndarray]:
    """A tiny released checkpoint with random weights in `folder`; returns its state dict (numpy)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(family, folder)
    (folder / "config.json").write_text(json.dumps(released_config(family, vocab), indent=2))
    rng = np.random.default_rng(seed)
    state = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in released_shapes(family, vocab).items()}
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "modeling_internvl_chat.py").write_text("raise SystemExit('the checkpoint code was run')\n")
    return state
