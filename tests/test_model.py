"""URECA model on the tiny random InternVL: mask tokens, tiling, conditioning, checkpoints, generation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from ureca_cli.errors import UrecaError  # noqa: E402
from ureca_cli.model import (  # noqa: E402
    MASK_CONTEXT,
    MASK_END,
    MASK_START,
    build_tiny_ureca,
    load_checkpoint,
    save_checkpoint,
    tile_mask,
)

TILE = 56


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def model():
    return build_tiny_ureca(seed=0)


def _logits(model, ex):
    with torch.no_grad():
        return model(**{k: v for k, v in ex.items() if k != "labels"}).logits


@pytest.mark.parametrize("k", [4, 8, 16])
def test_mask_tokens_sit_at_mask_context_k_per_tile(k):
    model = build_tiny_ureca(seed=1, num_mask_tokens=k)
    proc, ids = model.processor, model.token_ids
    for h, w in [(56, 56), (40, 200), (200, 40), (90, 130), (300, 500)]:
        ex = proc(_image(h, w), _mask(h, w, (w // 4, h // 4, w // 2, h // 2)))
        tiles = ex["pixel_values"].shape[0]
        assert ex["mask_tiles"].shape == (tiles, TILE, TILE)
        seq = ex["input_ids"][0]
        ctx = (seq == ids.context).nonzero().flatten()
        assert len(ctx) == k * tiles
        start = int((seq == ids.start).nonzero())
        end = int((seq == ids.end).nonzero())
        assert ctx.tolist() == list(range(start + 1, end))  # contiguous between <mask> and </mask>
        assert int((seq == ids.image).nonzero().max()) < start  # after the image tokens
        assert proc.tokenizer.decode(seq[end + 1:]).startswith("\nDescribe this region in the image.")
        with torch.no_grad():
            emb = model.embed(ex["input_ids"], pixel_values=ex["pixel_values"], mask_tiles=ex["mask_tiles"])
            feats = model.mask_features(ex["mask_tiles"]).reshape(-1, emb.shape[-1])
        assert torch.equal(emb[0, ctx], feats)
    text = proc.prompt(3)
    assert f"{MASK_START}{MASK_CONTEXT * 3}{MASK_END}" in text


def test_no_dynamic_mask_gives_k_tokens():
    model = build_tiny_ureca(seed=0, dynamic_mask=False)
    ex = model.processor(_image(90, 200), _mask(90, 200, (10, 10, 50, 50)))
    assert ex["pixel_values"].shape[0] > 1
    assert ex["mask_tiles"].shape == (1, TILE, TILE)
    assert int((ex["input_ids"] == model.token_ids.context).sum()) == 8


def test_mask_tiled_like_image(model):
    proc = model.processor
    mean = torch.tensor(proc.hf.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(proc.hf.image_processor.image_std).view(3, 1, 1)
    rng = np.random.default_rng(0)
    for h, w in [(112, 168), (100, 230), (300, 70)]:
        # a blocky mask: 8x8 cells, so bicubic and nearest resizing agree away from cell edges
        cells = rng.integers(0, 2, (8, 8), dtype=np.uint8)
        mask = cells[(np.arange(h) * 8 // h)[:, None], (np.arange(w) * 8 // w)[None, :]]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0] = mask * 255
        ex = proc(Image.fromarray(rgb), mask)
        red = (ex["pixel_values"] * std + mean)[:, 0] > 0.5
        tiles = ex["mask_tiles"].bool()
        assert red.shape == tiles.shape
        assert set(np.unique(ex["mask_tiles"].numpy())) <= {0, 1}
        agree = (red == tiles).float().mean(dim=(1, 2))
        assert bool((agree > 0.97).all()), agree
        if (h, w) == (112, 168):  # the grid is 3x2 tiles of exactly 56: no resize, exact equality
            assert torch.equal(red[:-1], tiles[:-1])


def test_tile_mask_nearest_and_thumbnail():
    m = _mask(90, 200, (0, 0, 100, 45))
    tiles = tile_mask(m, TILE, max_tiles=12)
    assert tiles.dtype == np.uint8 and set(np.unique(tiles)) == {0, 1}
    assert tiles.shape[0] > 2  # grid + thumbnail
    thumb = tiles[-1]
    assert thumb[: TILE // 2 - 1, : TILE // 2 - 1].all() and not thumb[TILE // 2 + 1:, :].any()
    assert tile_mask(m, TILE, dynamic=False).shape == (1, TILE, TILE)
    assert tile_mask(_mask(56, 56, (0, 0, 10, 10)), TILE).shape == (1, TILE, TILE)  # one tile, no thumbnail


def test_mask_changes_logits_and_only_through_mask_tokens():
    model = build_tiny_ureca(seed=2)
    proc = model.processor
    img = _image(90, 200)
    a = proc(img, _mask(90, 200, (10, 10, 60, 60)))
    b = proc(img, _mask(90, 200, (120, 30, 190, 85)))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert not torch.allclose(_logits(model, a), _logits(model, b))
    with torch.no_grad():  # zero the encoder's output: the mask no longer reaches the model
        model.mask_encoder.proj.weight.zero_()
        model.mask_encoder.proj.bias.zero_()
    assert torch.equal(_logits(model, a), _logits(model, b))


def test_labels_only_on_answer_and_gradients_reach_mask_encoder(model):
    proc = model.processor
    ex = proc(_image(60, 80), _mask(60, 80, (5, 5, 40, 40)), answer="a red dog on the grass")
    labels = ex["labels"][0]
    answer_ids = proc.tokenizer("a red dog on the grass", add_special_tokens=False)["input_ids"]
    kept = labels[labels != -100].tolist()
    assert kept == answer_ids + [proc.end_of_turn_id]
    assert labels[-len(kept):].tolist() == kept
    model.zero_grad()
    out = model(**ex)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.mask_encoder.conv1.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_collate_pads_and_concatenates(model):
    proc = model.processor
    exs = [proc(_image(h, w), _mask(h, w, (1, 1, 20, 20)), answer=ans)
           for (h, w), ans in [((56, 56), "a dog"), ((90, 200), "a red car on the road")]]
    for side in ("right", "left"):
        batch = proc.collate(exs, padding_side=side)
        longest = max(e["input_ids"].shape[1] for e in exs)
        assert batch["input_ids"].shape == (2, longest) == batch["labels"].shape
        assert batch["pixel_values"].shape[0] == sum(e["pixel_values"].shape[0] for e in exs)
        assert batch["mask_tiles"].shape[0] == batch["pixel_values"].shape[0]
        pad_col = -1 if side == "right" else 0
        assert batch["attention_mask"][0, pad_col] == 0 and batch["labels"][0, pad_col] == -100
    with torch.no_grad():
        assert torch.isfinite(model(**proc.collate(exs)).loss)


def test_generation_greedy_deterministic_and_shared_equals_single():
    model = build_tiny_ureca(seed=0)
    with torch.no_grad():  # a random tiny model barely listens to its mask; make it, so regions get own captions
        model.mask_encoder.proj.weight.mul_(30)
    proc = model.processor
    img = _image(90, 200, seed=5)
    boxes = [(10, 10, 60, 60), (120, 30, 190, 85), (0, 0, 200, 90), (80, 40, 100, 50)]
    masks = [_mask(90, 200, b) for b in boxes]
    single = []
    for m in masks:
        ex = proc(img, m)
        g1 = model.generate(**ex, max_new_tokens=6, do_sample=False)
        g2 = model.generate(**ex, max_new_tokens=6, do_sample=False)
        assert torch.equal(g1, g2)
        single.append(g1[0].tolist())
    assert len({tuple(s) for s in single}) >= 3  # the regions' captions differ, so a mix-up would show
    ex = proc(img, masks[0])
    shared = model.generate_shared(ex["input_ids"], ex["pixel_values"], [proc(img, m)["mask_tiles"] for m in masks],
                                   batch_size=3, max_new_tokens=6, do_sample=False)
    assert [s.tolist() for s in shared] == single


def _no_checkpointing_warning(caught: list) -> None:
    """transformers' FutureWarning on `is_gradient_checkpointing`, which peft reads each time it wraps a model,
    was printed by every train (stage 2) and every caption with an adapter."""
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in caught]


def test_save_load_identical_logits_with_lora(tmp_path):
    import warnings

    model = build_tiny_ureca(seed=3, mask_projector="mlp", num_mask_tokens=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.add_lora(r=4, alpha=8, dropout=0.0)
    _no_checkpointing_warning(caught)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter matter
        for name, p in model.base.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    assert not any("vision_tower" in n and "lora" in n for n, _ in model.base.named_parameters())
    ex = model.processor(_image(70, 150), _mask(70, 150, (10, 5, 90, 60)))
    before = _logits(model, ex)
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert {"ureca.json", "mask_encoder.safetensors", "added_tokens.safetensors", "adapter", "base",
            "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_checkpoint(folder)
    _no_checkpointing_warning(caught)
    assert loaded.has_lora and loaded.config == model.config
    assert torch.equal(_logits(loaded, loaded.processor(_image(70, 150), _mask(70, 150, (10, 5, 90, 60)))), before)


def test_checkpoint_errors_name_the_problem(tmp_path):
    model = build_tiny_ureca(seed=4)
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert torch.equal(_logits(load_checkpoint(folder), model.processor(_image(56, 56), _mask(56, 56, (0, 0, 9, 9)))),
                       _logits(model, model.processor(_image(56, 56), _mask(56, 56, (0, 0, 9, 9)))))
    meta = json.loads((folder / "ureca.json").read_text())

    meta_k4 = json.loads(json.dumps(meta))
    meta_k4["config"]["num_mask_tokens"] = 4
    (folder / "ureca.json").write_text(json.dumps(meta_k4))
    with pytest.raises(UrecaError, match=r"mask_encoder\.safetensors.*shape mismatch.*conv1\.weight"):
        load_checkpoint(folder)
    (folder / "ureca.json").write_text(json.dumps(meta))

    (folder / "mask_encoder.safetensors").rename(folder / "moved.safetensors")
    with pytest.raises(UrecaError, match="missing mask_encoder.safetensors"):
        load_checkpoint(folder)
    (folder / "moved.safetensors").rename(folder / "mask_encoder.safetensors")

    from safetensors.torch import save_file
    state = {k: v.clone() for k, v in model.mask_encoder.state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "mask_encoder.safetensors"))
    with pytest.raises(UrecaError, match=r"unexpected keys: extra\.weight"):
        load_checkpoint(folder)
    del state["extra.weight"], state["conv2.bias"]
    save_file(state, str(folder / "mask_encoder.safetensors"))
    with pytest.raises(UrecaError, match=r"missing keys: conv2\.bias"):
        load_checkpoint(folder)

    (folder / "ureca.json").unlink()
    with pytest.raises(UrecaError, match="not a URECA checkpoint"):
        load_checkpoint(folder)
    with pytest.raises(UrecaError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_prefill_shared_equals_full_forward(model):
    proc = model.processor
    img = _image(90, 200, seed=6)
    masks = [_mask(90, 200, b) for b in [(10, 10, 60, 60), (120, 30, 190, 85), (0, 0, 200, 90)]]
    exs = [proc(img, m) for m in masks]
    shared = model.prefill_shared(exs[0]["input_ids"], exs[0]["pixel_values"], [e["mask_tiles"] for e in exs],
                                  batch_size=2)
    single = torch.cat([_logits(model, e)[:, -1] for e in exs])
    assert shared.shape == single.shape
    assert torch.allclose(shared, single, atol=1e-5, rtol=1e-4)


def test_left_padded_batch_generates_like_single():
    model = build_tiny_ureca(seed=0)
    with torch.no_grad():
        model.mask_encoder.proj.weight.mul_(30)
    proc = model.processor
    exs = [proc(_image(56, 56, 1), _mask(56, 56, (0, 0, 20, 20))), proc(_image(90, 200, 2), _mask(90, 200, (10, 10, 80, 60)))]
    assert exs[0]["input_ids"].shape[1] != exs[1]["input_ids"].shape[1]
    single = [model.generate(**e, max_new_tokens=5, do_sample=False)[0].tolist() for e in exs]
    batch = model.generate(**proc.collate(exs, padding_side="left"), max_new_tokens=5, do_sample=False)
    assert batch.tolist() == single


def test_checkpoint_of_a_base_with_an_id_keeps_only_the_id(tmp_path):
    from ureca_cli.model import load_base, save_tiny_internvl

    base_dir = save_tiny_internvl(tmp_path / "internvl-tiny", seed=7)
    model = load_base(str(base_dir), dtype="float32")
    assert model.config.base == str(base_dir.resolve()) and model.config.tile_size == TILE
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert not (folder / "base").exists()
    ex = model.processor(_image(60, 90), _mask(60, 90, (3, 3, 40, 50)))
    loaded = load_checkpoint(folder)
    assert torch.equal(_logits(loaded, ex), _logits(model, ex))
    (base_dir / "model.safetensors").unlink()
    with pytest.raises(UrecaError, match="cannot load base model"):
        load_checkpoint(folder)


def test_auto_dtype_reads_the_weights_as_stored(tmp_path):
    """`load_checkpoint(dtype="auto")` reads the base in the dtype its files hold (memory-mapped, no cast), where
    None follows ureca.json's dtype (a trained checkpoint says float32 over a bfloat16 base: a load and a cast of
    every weight, most of a single caption's start-up at 1B size, bench/caption.py)."""
    from safetensors import safe_open

    model = build_tiny_ureca(seed=5).to(torch.bfloat16)
    model.add_lora(r=4, alpha=8, dropout=0.0)  # peft keeps the LoRA weights in float32, and saves them so
    folder = save_checkpoint(model, tmp_path / "ckpt")
    meta = json.loads((folder / "ureca.json").read_text())
    meta["dtype"] = "float32"  # as train writes it: the model trained in float32 over bfloat16 files
    (folder / "ureca.json").write_text(json.dumps(meta))
    with safe_open(str(folder / "base" / "model.safetensors"), "pt") as f:
        assert f.get_slice(next(iter(f.keys()))).get_dtype() == "BF16"
    auto = load_checkpoint(folder, dtype="auto")
    assert auto.dtype == torch.bfloat16 and auto.mask_encoder.conv1.weight.dtype == torch.bfloat16
    assert load_checkpoint(folder).dtype == torch.float32  # None: ureca.json's dtype, as before
    saved = model.state_dict()
    loaded = auto.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if "lora_" not in k)  # untouched
    lora = [k for k in saved if "lora_" in k]
    assert lora and all(saved[k].dtype == torch.float32 and loaded[k].dtype == torch.bfloat16 for k in lora)
    assert all(torch.equal(loaded[k], saved[k].to(torch.bfloat16)) for k in lora)  # inference: the model's dtype
    trainable = load_checkpoint(folder, dtype="auto", trainable=True).state_dict()  # training: float32, as saved
    assert all(torch.equal(trainable[k], saved[k]) for k in lora)
