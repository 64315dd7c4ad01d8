"""The paper's released checkpoint: key mapping, loading, `ureca convert`, bad input (everywhere), and equality
with the released code itself (logits, and `ureca caption` vs `model.chat`; skipped without ../shared)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from tests import released_fixtures as F  # noqa: E402
from tests.checks import one_error_line  # noqa: E402
from ureca_cli.errors import UrecaError  # noqa: E402
from ureca_cli.model import load_checkpoint, save_checkpoint  # noqa: E402
from ureca_cli.model.checkpoint import read_checkpoint_config  # noqa: E402
from ureca_cli.model.released import (  # noqa: E402
    internvl_config,
    map_state_dict,
    plan_tensor,
    read_released,
)
from ureca_cli.model.ureca import UrecaModel  # noqa: E402

FAMILIES = ["qwen2", "internlm2"]


def _family_deps(family: str) -> None:
    if family == "internlm2":
        pytest.importorskip("sentencepiece")


def _one_line_error(result, *needles: str) -> str:
    line = one_error_line(result, *needles)
    assert "unexpected" not in result.stderr, line
    return line


def _image_and_mask(tmp: Path, w: int, h: int, seed: int = 1) -> tuple[Path, Path, np.ndarray]:
    """A structured RGB image (gradients + noise) and a rectangular region, written as PNG files."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx * 3 + yy * 5) % 256], -1)
    arr = np.clip(arr + rng.integers(-40, 40, arr.shape), 0, 255).astype(np.uint8)
    image, mask_png = tmp / f"img_{w}x{h}.png", tmp / f"mask_{w}x{h}.png"
    Image.fromarray(arr).save(image)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 5:h * 3 // 4, w // 4:w * 2 // 3] = 1
    Image.fromarray(mask * 255).save(mask_png)
    return image, mask_png, mask


# ------------------------------------------------------------------------------------------ key mapping
def test_wqkv_and_vit_qkv_split_rows_by_hand():
    """InternLM2's wqkv holds, per key-value head, its query heads, its key, its value; Llama wants all query
    heads, then all keys, then all values. Rows numbered 0..31 (4 heads, 2 kv heads, head dim 4)."""
    rows = torch.arange(32.0)[:, None].expand(32, 3).contiguous()
    parts = {t.key.rsplit(".", 2)[-2]: t.take(rows) for t in
             plan_tensor("language_model.model.layers.0.attention.wqkv.weight", (32, 3), "internlm2", (4, 2, 4))}
    # kv head 0: rows 0-7 = q0 q1 (0-7), k0 (8-11), v0 (12-15); kv head 1: rows 16-31 likewise
    assert parts["q_proj"][:, 0].tolist() == list(range(0, 8)) + list(range(16, 24))
    assert parts["k_proj"][:, 0].tolist() == list(range(8, 12)) + list(range(24, 28))
    assert parts["v_proj"][:, 0].tolist() == list(range(12, 16)) + list(range(28, 32))
    bias = {t.key.rsplit(".", 2)[-2]: t.take(torch.arange(32.0)) for t in
            plan_tensor("language_model.model.layers.3.attention.wqkv.bias", (32,), "internlm2", (4, 2, 4))}
    assert bias["k_proj"].tolist() == [8, 9, 10, 11, 24, 25, 26, 27]
    vit = plan_tensor("vision_model.encoder.layers.2.attn.qkv.weight", (12, 4), "qwen2")
    assert [t.key for t in vit] == [f"model.vision_tower.encoder.layer.2.attention.{n}_proj.weight" for n in "qkv"]
    assert vit[1].take(torch.arange(12.0)[:, None].expand(12, 4))[:, 0].tolist() == [4, 5, 6, 7]
    with pytest.raises(KeyError):
        plan_tensor("vision_model.encoder.layers.0.attn.extra.weight", (3,), "qwen2")


@pytest.mark.parametrize("family", FAMILIES)
def test_key_mapping_of_a_hand_built_state_dict(family, tmp_path):
    """Every released tensor of a hand-written tiny model lands on exactly one of ours (or its q/k/v parts), the
    result loads strictly into transformers' InternVL and our MaskEncoder, and values travel unchanged."""
    from transformers import InternVLForConditionalGeneration

    from ureca_cli.model.mask_encoder import MaskEncoder

    _family_deps(family)
    state = {k: torch.from_numpy(v) for k, v in F.write_released(family, tmp_path / "rel").items()}
    spec = read_released(tmp_path / "rel")
    base, mask = map_state_dict(state, family, spec.attention_shape())
    model = InternVLForConditionalGeneration(internvl_config(spec, image_token_id=5))
    model.load_state_dict(base, strict=True)
    encoder = MaskEncoder(F.TILE, F.L_HID, F.K, "linear")
    encoder.load_state_dict(mask, strict=True)
    lm = "language_model.model."
    emb = "tok_embeddings" if family == "internlm2" else "embed_tokens"
    head = "language_model.output.weight" if family == "internlm2" else "language_model.lm_head.weight"
    assert torch.equal(model.lm_head.weight, state[head])
    assert torch.equal(model.model.language_model.embed_tokens.weight, state[lm + emb + ".weight"])
    assert torch.equal(model.model.multi_modal_projector.linear_2.weight, state["mlp1.3.weight"])
    assert torch.equal(model.model.vision_tower.embeddings.cls_token, state["vision_model.embeddings.class_embedding"])
    assert torch.equal(model.model.vision_tower.encoder.layer[0].lambda_2, state["vision_model.encoder.layers.0.ls2"])
    assert torch.equal(encoder.conv2.bias, state["mask_encoder.2.bias"])
    assert torch.equal(encoder.proj.weight, state["mask_linear.weight"])
    if family == "internlm2":
        layer = model.model.language_model.layers[0]
        assert torch.equal(layer.mlp.gate_proj.weight, state[lm + "layers.0.feed_forward.w1.weight"])
        assert torch.equal(layer.mlp.down_proj.weight, state[lm + "layers.0.feed_forward.w2.weight"])
        assert torch.equal(layer.self_attn.o_proj.weight, state[lm + "layers.0.attention.wo.weight"])
        assert torch.equal(model.model.vision_tower.encoder.layer[0].attention.k_norm.weight,
                           state["vision_model.encoder.layers.0.attn.k_norm.weight"])


@pytest.mark.parametrize("family", FAMILIES)
def test_hand_built_folder_loads_converts_and_trains_on(family, tmp_path, cli):
    """load_checkpoint takes the released folder as it is (released preprocessing recorded); `ureca convert`
    gives the same model (same logits), never runs the folder's code; a checkpoint saved from the loaded
    model (what stage 2 writes, base kept as the folder's id) loads back identically."""
    _family_deps(family)
    rel = tmp_path / "rel"
    F.write_released(family, rel)
    model = load_checkpoint(rel, dtype="float32")
    assert model.config.preprocessing == "released" and model.config.num_mask_tokens == F.K
    meta, config = read_checkpoint_config(rel)
    assert config.base == str(rel.resolve()) and not meta["adapter"] and config.preprocessing == "released"
    image_path, _m, mask = _image_and_mask(tmp_path, 70, 40)
    image = Image.open(image_path)
    ex = model.processor(image, mask)
    # aspect 1.75: 2x1 and 3x2 are equally close; the README takes the later one when the image is large enough
    assert ex["pixel_values"].shape[0] == ex["mask_tiles"].shape[0] == 7
    assert set(np.unique(ex["mask_tiles"][:2].numpy())) == {0, 255}
    with torch.no_grad():
        logits = model(**ex).logits

    out = tmp_path / "conv"
    result = cli("convert", rel, out)
    assert result.exit_code == 0, result.stderr
    assert "converted" in result.stderr and not list(tmp_path.glob(".conv.partial-*"))
    assert sorted(p.name for p in (out / "base").glob("*.safetensors")) == \
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    meta = json.loads((out / "ureca.json").read_text())
    assert meta["config"]["preprocessing"] == "released" and meta["base_embedded"]
    converted = load_checkpoint(out, dtype="float32")
    ex2 = converted.processor(image, mask)
    assert all(torch.equal(ex[k], ex2[k]) for k in ex)
    with torch.no_grad():
        assert torch.equal(converted(**ex2).logits, logits)

    model.add_lora(r=2, alpha=4)
    model.eval()  # new LoRA layers start in training mode (dropout)
    with torch.no_grad():
        for name, p in model.base.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        tuned = model(**ex).logits
    save_checkpoint(model, tmp_path / "stage2")
    assert not (tmp_path / "stage2" / "base").exists()  # the released folder is the base
    again = load_checkpoint(tmp_path / "stage2", dtype="float32")
    assert again.config.preprocessing == "released"
    with torch.no_grad():
        assert torch.allclose(again(**again.processor(image, mask)).logits, tuned, atol=1e-5)


def test_train_stage2_from_the_released_folder(tmp_path, cli):
    """`ureca train --stage 2 --init <released folder>`: LoRA on the released model with the released
    preprocessing; the result keeps the folder as its base and captions."""
    from ureca_cli.train.synthetic import SceneConfig, write_dataset

    rel = tmp_path / "rel"
    F.write_released("qwen2", rel)
    data = write_dataset(tmp_path / "syn", train=2, test=1, seed=3, cfg=SceneConfig(sizes=((70, 40),), objects=(2, 2)))
    out = tmp_path / "s2"
    result = cli("train", data["train"], "--stage", "2", "--init", rel, "--out", out, "--max-steps", "1",
                 "--global-batch", "2", "--batch-size", "2", "--lora-r", "4", "--lora-alpha", "8", "--cpu",
                 "--no-validate")
    assert result.exit_code == 0, result.stderr
    used = json.loads((out / "train_config.json").read_text())
    assert used["base"] == str(rel.resolve()) and used["mask_tokens"] == F.K
    model = load_checkpoint(out, dtype="float32")
    assert model.has_lora and model.config.preprocessing == "released"
    image, mask_png, _m = _image_and_mask(tmp_path, 70, 40)
    result = cli("caption", image, "--mask", mask_png, "--model", out, "--max-new-tokens", "4")
    assert result.exit_code == 0, result.stderr


def test_released_prompt_layout(tmp_path):
    """The released prompt: internvl2_5 with its system message, <img> + n x tiles <IMG_CONTEXT> + </img>, then
    <mask> + K x tiles <MASK_CONTEXT> + </mask> and the question."""
    F.write_released("qwen2", tmp_path / "rel")
    model = load_checkpoint(tmp_path / "rel", dtype="float32")
    proc = model.processor
    text = proc.prompt(F.K * 3, "What is it?", num_tiles=3)
    n = proc.image_seq_length
    assert n == (F.TILE // F.PATCH) ** 2 // 4
    assert text == ("<|im_start|>system\n" + proc.config.system_message + "<|im_end|>\n<|im_start|>user\n<img>"
                    + "<IMG_CONTEXT>" * (n * 3) + "</img>\n<mask>" + "<MASK_CONTEXT>" * (F.K * 3)
                    + "</mask>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n")
    assert proc.config.system_message.startswith("你是书生·万象")
    assert proc.end_of_turn == "<|im_end|>"


# ------------------------------------------------------------------------------------------ bad input
def _rewrite_shard(path: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


@pytest.mark.parametrize("command", ["caption", "convert"])
def test_bad_released_folders_are_one_line_errors(command, tmp_path, cli):
    image, mask_png, _m = _image_and_mask(tmp_path, 40, 30)
    out = tmp_path / "out"

    def run(folder: Path):
        if command == "caption":
            return cli("caption", image, "--mask", mask_png, "--model", folder)
        return cli("convert", folder, out)

    def fresh(name: str) -> Path:
        folder = tmp_path / name
        F.write_released("qwen2", folder)
        return folder

    other = tmp_path / "llava"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (other / "model.safetensors").write_bytes(b"")
    _one_line_error(run(other), str(other), "'llava'", "not a URECA checkpoint", "found", "1 .safetensors")

    missing = fresh("missing")
    (missing / "model-00002-of-00002.safetensors").unlink()
    _one_line_error(run(missing), "model-00002-of-00002.safetensors", "missing shard")

    shape = fresh("shape")
    _rewrite_shard(shape / "model-00001-of-00002.safetensors",
                   lambda s: s.update({k: np.zeros((3, 5), np.float32) for k in list(s)[:1]}))
    _one_line_error(run(shape), "model-00001-of-00002.safetensors", "has shape [3, 5]")

    extra = fresh("extra")
    _rewrite_shard(extra / "model-00002-of-00002.safetensors",
                   lambda s: s.update({"language_model.model.layers.0.attention.wqkv.weight": np.zeros((2, 2), "f4")}))
    _one_line_error(run(extra), "model-00002-of-00002.safetensors", "'language_model.model.layers.0.attention.wqkv",
                    "no part of the model")

    truncated = fresh("truncated")
    shard = truncated / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    _one_line_error(run(truncated), str(shard), "truncated")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(F.released_config("qwen2", 520)))
    sentinel = tmp_path / "UNPICKLED"

    class Boom:  # unpickling this creates the sentinel file
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    _one_line_error(run(pickled), "pytorch_model.bin", "pickle", "never unpickles")
    assert not sentinel.exists()

    remote = fresh("remote")
    cfg = json.loads((remote / "tokenizer_config.json").read_text())
    cfg.update(tokenizer_class="FancyTokenizer", auto_map={"AutoTokenizer": ["tokenization_fancy.FancyTokenizer", None]})
    (remote / "tokenizer_config.json").write_text(json.dumps(cfg))
    _one_line_error(run(remote), "tokenizer_config.json", "'FancyTokenizer'", "own code", "cannot convert")

    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_convert_refuses_a_non_empty_output_and_a_missing_hub_model(tmp_path, cli):
    rel = tmp_path / "rel"
    F.write_released("qwen2", rel)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_line_error(cli("convert", rel, out), str(out), "not empty", "nothing written")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    _one_line_error(cli("convert", "nobody-xyz/no-such-model", tmp_path / "new"), "nobody-xyz/no-such-model",
                    "not found")
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("convert", rel, empty, "--quiet").exit_code == 0
    assert (empty / "ureca.json").is_file()


def test_sentencepiece_reader_matches_protobuf(tmp_path):
    """Our field-by-field reader of tokenizer.model agrees with sentencepiece's own protobuf classes."""
    pytest.importorskip("sentencepiece")
    from sentencepiece import sentencepiece_model_pb2 as pb

    from ureca_cli.model.released_tokenizer import read_sentencepiece

    F.write_tokenizer("internlm2", tmp_path)
    ours = read_sentencepiece(tmp_path / "tokenizer.model")
    proto = pb.ModelProto()
    proto.ParseFromString((tmp_path / "tokenizer.model").read_bytes())
    assert [(p, s, k) for p, s, k in ours.pieces] == [(p.piece, p.score, p.type) for p in proto.pieces]
    assert (ours.model_type, ours.byte_fallback, ours.unk_id, ours.bos_id, ours.eos_id) == \
        (proto.trainer_spec.model_type, proto.trainer_spec.byte_fallback, proto.trainer_spec.unk_id,
         proto.trainer_spec.bos_id, proto.trainer_spec.eos_id)
    n = proto.normalizer_spec
    assert (ours.normalizer_name, ours.add_dummy_prefix, ours.remove_extra_whitespaces, ours.escape_whitespaces) == \
        (n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces)
    with pytest.raises(UrecaError, match="not a sentencepiece model"):
        (tmp_path / "bad.model").write_bytes(b"\x0a\xff\xff")
        read_sentencepiece(tmp_path / "bad.model")


# ------------------------------------------------------------------------------------------ vs the released code
@pytest.fixture(scope="module", params=FAMILIES)
def released(request, tmp_path_factory):
    """(family, folder, released model, its tokenizer as chat() uses it) of a tiny random released model."""
    from tests import released_ref as R

    R.released_code()
    family = request.param
    folder = tmp_path_factory.mktemp(f"released-{family}")
    model, tok = R.build_released(family, folder)
    return family, folder, model, tok


def _cli_caption(cli, monkeypatch, image: Path, mask_png: Path, model: Path) -> tuple[list[int], str]:
    """`ureca caption IMAGE --mask PNG --model DIR --max-new-tokens 20`: (new token ids, caption)."""
    seen = {}
    real = UrecaModel.generate

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen["ids"] = out[0].tolist()
        return out

    monkeypatch.setattr(UrecaModel, "generate", spy)
    result = cli("caption", image, "--mask", mask_png, "--model", model, "--max-new-tokens", "20")
    monkeypatch.setattr(UrecaModel, "generate", real)
    assert result.exit_code == 0, result.stderr
    return seen["ids"], json.loads(result.stdout.splitlines()[0])["caption"]


def _until_end(ids: list[int], end: int) -> list[int]:
    return ids[:ids.index(end)] if end in ids else ids


@pytest.mark.parametrize("size", [(40, 40), (150, 100)], ids=["1-tile", "7-tiles"])
def test_logits_equal_the_released_model(released, size, tmp_path):
    from tests import released_ref as R

    family, folder, ref, tok = released
    ours = load_checkpoint(folder, dtype="float32")
    image_path, _m, mask = _image_and_mask(tmp_path, *size)
    ex = ours.processor(Image.open(image_path), mask)
    assert ex["pixel_values"].shape[0] == (1 if size == (40, 40) else 7)
    with torch.no_grad():
        logits = ours(**ex).logits
    want = R.released_logits(ref, ex["input_ids"], ex["pixel_values"], ex["mask_tiles"], tok)
    assert (logits - want).abs().max() < 1e-4
    assert want.std() > 1  # the larger init: logits far apart, so a broken input shows


@pytest.mark.parametrize("size", [(40, 40), (150, 100)], ids=["1-tile", "7-tiles"])
def test_caption_equals_released_chat(released, size, tmp_path, cli, monkeypatch):
    """The whole path from the same image file and mask PNG: README's load_image and mask recipe + chat()
    against `ureca caption --model <released folder>`; inputs and greedy token ids equal."""
    from tests import released_ref as R

    family, folder, ref, tok = released
    image, mask_png, _m = _image_and_mask(tmp_path, *size)
    mask01 = (np.asarray(Image.open(mask_png)) > 0).astype(np.uint8)
    want = R.released_caption(ref, tok, family, image, mask01)
    ids, caption = _cli_caption(cli, monkeypatch, image, mask_png, folder)
    ours = load_checkpoint(folder, dtype="float32")
    end = ours.processor.end_of_turn_id
    assert _until_end(ids, end) == _until_end(want["ids"], end)
    assert len(_until_end(ids, end)) >= 10  # a real caption, not an immediate stop
    assert caption == ours.processor.tokenizer.decode(_until_end(want["ids"], end), skip_special_tokens=True).strip()
    ex = ours.processor(Image.open(image), mask01)
    assert torch.equal(ex["input_ids"], want["input_ids"])
    assert torch.equal(ex["pixel_values"], want["pixel_values"])
    assert torch.equal(ex["mask_tiles"].unsqueeze(1).float(), want["mask_values"])


def test_caption_after_convert_equals_released_chat(released, tmp_path, cli, monkeypatch):
    from tests import released_ref as R

    family, folder, ref, tok = released
    out = tmp_path / "converted"
    assert cli("convert", folder, out, "--quiet").exit_code == 0
    image, mask_png, _m = _image_and_mask(tmp_path, 150, 100, seed=2)
    mask01 = (np.asarray(Image.open(mask_png)) > 0).astype(np.uint8)
    want = R.released_caption(ref, tok, family, image, mask01)
    ids, _caption = _cli_caption(cli, monkeypatch, image, mask_png, out)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert _until_end(ids, end) == _until_end(want["ids"], end)


def test_readme_tiling_equals_ours_on_many_sizes():
    """released_pixel_values / released_mask_tiles against the README's dynamic_preprocess, grid choice and
    tile order included, on many image sizes (8-pixel tiles keep it fast)."""
    from tests import released_ref as R
    from ureca_cli.model.tiling import released_mask_tiles, released_pixel_values

    R.released_code()
    recipe = R.readme_recipe()
    transform = recipe.build_transform(8)
    rng = np.random.default_rng(0)
    for w, h in [(8, 8), (16, 8), (9, 31), (30, 20), (12, 18), (33, 11), (24, 16), (50, 7), (13, 13), (45, 30)]:
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        tiles = recipe.dynamic_preprocess(image, image_size=8, use_thumbnail=True, max_num=12)
        want = torch.stack([transform(t) for t in tiles])
        assert torch.equal(released_pixel_values(image, 8), want), (w, h)
        mask = (rng.random((h, w)) > 0.6).astype(np.uint8)
        assert torch.equal(torch.from_numpy(released_mask_tiles(mask, 8)).unsqueeze(1).float(),
                           R.readme_mask_values(mask, tile=8)), (w, h)


def test_fast_tokenizer_equals_released_internlm2_tokenizer(tmp_path):
    """Our conversion of the released InternLM2Tokenizer (sentencepiece, run here only as the reference) gives
    the same ids on random mixes of text, chat tokens, image and mask tokens, Chinese, digits and spaces."""
    import random

    from tests import released_ref as R
    from ureca_cli.model.released_tokenizer import load_released_tokenizer

    R.released_code()
    slow = R.internlm2_tokenizer(tmp_path)
    fast = load_released_tokenizer(tmp_path, "internlm2")
    words = ["a", "the dog", "red", " region", "image", "123", "4567", "你是书生", "é", "\n", " ", "  ", "\t",
             "<|im_start|>", "<|im_end|>", "<img>", "<IMG_CONTEXT>", "</img>", "<mask>", "<MASK_CONTEXT>",
             "</mask>", "system", "Describe this region in the image."]
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice(words) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 10)))
        assert fast(text)["input_ids"] == slow(text)["input_ids"], repr(text)
    shutil.rmtree(tmp_path / "fast", ignore_errors=True)
    fast.save_pretrained(str(tmp_path / "fast"))
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(str(tmp_path / "fast"))
    assert again("<|im_start|>user\nHi 你")["input_ids"] == slow("<|im_start|>user\nHi 你")["input_ids"]
