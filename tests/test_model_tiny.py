"""The tiny random InternVL: builds offline, saves to a folder that the Auto classes load, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_tiny_internvl_saves_loads_and_generates(tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ureca_cli.model.tiny import save_tiny_internvl

    a = save_tiny_internvl(tmp_path / "a", seed=3)
    b = save_tiny_internvl(tmp_path / "b", seed=3)
    for f in sorted(a.iterdir()):
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    processor = AutoProcessor.from_pretrained(a)
    model = AutoModelForImageTextToText.from_pretrained(a).eval()
    assert type(processor).__name__ == "InternVLProcessor"
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 200, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    n_tiles = inputs["pixel_values"].shape[0]
    assert n_tiles > 1  # a wide image is cropped into a grid plus a thumbnail
    n_image_tokens = int((inputs["input_ids"] == processor.tokenizer.context_image_token_id).sum())
    assert n_image_tokens == n_tiles * processor.image_seq_length
    with torch.no_grad():
        out1 = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        out2 = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(out1, out2)


def test_different_seeds_give_different_weights():
    import torch

    from ureca_cli.model.tiny import tiny_internvl

    m0, _ = tiny_internvl(seed=0)
    m1, _ = tiny_internvl(seed=1)
    w0 = m0.get_input_embeddings().weight
    w1 = m1.get_input_embeddings().weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)
