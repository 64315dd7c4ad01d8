"""`ureca caption` end to end with a saved tiny URECA checkpoint: region forms, batches, score, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from tests.checks import one_error_line  # noqa: E402
from ureca_cli import masks as M  # noqa: E402


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real photo from ../shared/data/images when present, else a synthetic one (for the fast tests)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "coffee.png"
    if path.is_file():
        return path
    p = tmp_path_factory.mktemp("img") / "synthetic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 180, 3), dtype=np.uint8)).save(p)
    return p


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    w, h = size
    x, y, bw, bh = box
    m = np.zeros((h, w), np.uint8)
    m[y:y + bh, x:x + bw] = 1
    return m


def _ok(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    return _records(result.stdout)


def test_every_region_form_on_one_photo(cli, ckpt, shared_data, tmp_path):
    image = shared_data / "images" / "chelsea.png"
    size = Image.open(image).size
    mask = _box_mask(size, (40, 30, 120, 90))
    Image.fromarray(mask * 255).save(tmp_path / "m.png")
    rgba = np.zeros((size[1], size[0], 4), np.uint8)
    rgba[..., :3] = 200  # colour everywhere: only the alpha channel marks the region
    rgba[..., 3] = mask * 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    rle = M.encode(mask)
    (tmp_path / "r.json").write_text(json.dumps(rle))
    runs = {
        "mask": ["--mask", tmp_path / "m.png"],
        "alpha": ["--mask", tmp_path / "alpha.png"],
        "rle-text": ["--rle", json.dumps(rle)],
        "rle-file": ["--rle", tmp_path / "r.json"],
        "box": ["--box", "40,30,120,90"],
    }
    captions = {}
    for name, args in runs.items():
        recs = _ok(cli("caption", image, "--model", ckpt, "--max-new-tokens", "6", *args))
        assert len(recs) == 1, name
        rec = recs[0]
        assert rec["id"] == "chelsea/0" and rec["image_id"] == "chelsea" and isinstance(rec["caption"], str)
        assert np.array_equal(M.decode(rec["rle"]), mask), name
        captions[name] = rec["caption"]
    assert len(set(captions.values())) == 1  # the same region, however it is given, gets the same caption
    # several regions of one image in one call, decoded together
    recs = _ok(cli("caption", image, "--model", ckpt, "--max-new-tokens", "6", "--box", "40,30,120,90",
                   "--box", "0,0,60,60", "--batch-size", "2"))
    assert [r["id"] for r in recs] == ["chelsea/0", "chelsea/1"]
    assert recs[0]["caption"] == captions["box"]


def _region_file(tmp_path, images) -> tuple:
    lines, boxes = [], [(5, 5, 60, 40), (70, 20, 50, 80), (0, 0, 30, 30)]
    for image in images:
        size = Image.open(image).size
        for i, b in enumerate(boxes):
            lines.append({"id": f"{image.stem}/{i}", "image_id": image.stem, "image": str(image),
                          "rle": M.encode(_box_mask(size, b)), "caption": f"reference {image.stem} {i}"})
    path = tmp_path / "regions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path, lines, boxes


def test_batch_of_region_records_shared_equals_one_at_a_time(cli, ckpt, photo, tmp_path):
    second = photo.parent / "chelsea.png"
    if not second.is_file():  # without ../shared: a second image of its own name (region ids are per image)
        second = tmp_path / "second.png"
        second.write_bytes(photo.read_bytes())
    path, lines, boxes = _region_file(tmp_path, [photo, second])
    recs = _ok(cli("caption", "--input", path, "--model", ckpt, "--max-new-tokens", "6", "-b", "2"))
    assert [r["id"] for r in recs] == [r["id"] for r in lines]
    assert all(r["reference"].startswith("reference ") for r in recs)
    one = [_ok(cli("caption", photo, "--model", ckpt, "--max-new-tokens", "6",
                   "--box", ",".join(map(str, b))))[0]["caption"] for b in boxes]
    assert [r["caption"] for r in recs[:3]] == one
    assert len(set(one)) > 1


def test_tree_record_with_empty_masks(cli, ckpt, photo, tmp_path):
    """SA-1B files hold empty masks (tree keeps them as dropped, reason empty): they get no record instead of
    failing the image, and --resume knows the image is done even when its last node is one of them."""
    size = Image.open(photo).size
    masks = [_box_mask(size, (5, 5, 60, 40)), np.zeros((size[1], size[0]), np.uint8), _box_mask(size, (70, 20, 30, 30)),
             np.zeros((size[1], size[0]), np.uint8)]
    nodes = [{"id": i, "parent": None, "children": [], "depth": 1, "rle": M.encode(m),
              "role": "dropped" if not m.any() else "main"} for i, m in enumerate(masks)]
    tree = {"image_id": "p", "image": str(photo), "width": size[0], "height": size[1], "nodes": nodes}
    (tmp_path / "trees.jsonl").write_text(json.dumps(tree) + "\n")
    out = tmp_path / "preds.jsonl"
    args = ["caption", "--input", tmp_path / "trees.jsonl", "--model", ckpt, "--max-new-tokens", "2", "-o", out]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in _records(out.read_text())] == ["p/0", "p/2"]
    again = cli(*args, "--resume")
    assert again.exit_code == 0 and "1 already done" in again.stderr, again.stderr
    assert [r["id"] for r in _records(out.read_text())] == ["p/0", "p/2"]


@pytest.mark.slow
def test_tree_records_and_score(cli, ckpt, shared_data, tmp_path):
    image = shared_data / "images" / "astronaut.png"
    size = Image.open(image).size
    nodes = []
    for i, b in enumerate([(100, 50, 300, 400), (150, 80, 100, 100), (200, 300, 60, 60)]):
        m = _box_mask(size, b)
        nodes.append({"id": i, "parent": None if i == 0 else 0, "children": [], "depth": 1 if i == 0 else 2,
                      "area": int(m.sum()), "bbox": list(b), "rle": M.encode(m), "role": "main" if i == 0 else "part",
                      "caption": f"the region {i}"})
    tree = {"image_id": "astronaut", "image": str(image), "width": size[0], "height": size[1], "nodes": nodes}
    (tmp_path / "trees.jsonl").write_text(json.dumps(tree) + "\n")
    out = tmp_path / "preds.jsonl"
    result = cli("caption", "--input", tmp_path / "trees.jsonl", "--model", ckpt, "--max-new-tokens", "6", "-o", out)
    assert result.exit_code == 0, result.stderr
    recs = _records(out.read_text())
    assert [r["id"] for r in recs] == ["astronaut/0", "astronaut/1", "astronaut/2"]
    assert [r["role"] for r in recs] == ["main", "part", "part"]
    # resume: nothing to do again
    again = cli("caption", "--input", tmp_path / "trees.jsonl", "--model", ckpt, "-o", out, "--resume")
    assert again.exit_code == 0 and len(_records(out.read_text())) == 3
    for r in recs:  # the random model may say nothing; give score something to tokenize
        r["caption"] = r["caption"] or "nothing"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    scored = cli("score", out, tmp_path / "trees.jsonl", "--metrics", "bleu,rouge", "--no-bertscore")
    assert scored.exit_code == 0, scored.stderr


_fails = one_error_line


def test_bad_inputs_one_line_exit_2(cli, ckpt, photo, tmp_path):
    w, h = Image.open(photo).size
    Image.fromarray(np.full((h // 2, w // 2), 255, np.uint8)).save(tmp_path / "half.png")
    _fails(cli("caption", photo, "--model", ckpt, "--mask", tmp_path / "half.png"),
           f"{w // 2}x{h // 2}", f"{w}x{h}", "--resize-mask")
    ok = cli("caption", photo, "--model", ckpt, "--mask", tmp_path / "half.png", "--resize-mask",
             "--max-new-tokens", "2")
    assert ok.exit_code == 0, ok.stderr
    Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "empty.png")
    _fails(cli("caption", photo, "--model", ckpt, "--mask", tmp_path / "empty.png"), "empty")
    (tmp_path / "notes.txt").write_text("not a picture")
    _fails(cli("caption", tmp_path / "notes.txt", "--model", ckpt, "--box", "0,0,5,5"), "notes.txt",
           "not an image")
    _fails(cli("caption", photo, "--model", ckpt, "--mask", tmp_path / "notes.txt"), "notes.txt")
    _fails(cli("caption", photo, "--model", ckpt, "--box", f"{w - 10},0,20,20"), "not inside", f"{w}x{h}")
    _fails(cli("caption", photo, "--model", ckpt, "--box", "1,2,3"), "x,y,w,h")
    _fails(cli("caption", photo, "--model", ckpt), "--mask")
    _fails(cli("caption", photo, "--model", tmp_path / "nowhere", "--box", "0,0,5,5"), "nowhere")

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "mask_encoder.safetensors").unlink()
    _fails(cli("caption", photo, "--model", broken, "--box", "0,0,5,5"), "mask_encoder.safetensors")
    shutil.rmtree(broken)
    shutil.copytree(ckpt, broken)
    meta = json.loads((broken / "ureca.json").read_text())
    meta["config"]["mask_projector"] = "mlp"
    (broken / "ureca.json").write_text(json.dumps(meta))
    _fails(cli("caption", photo, "--model", broken, "--box", "0,0,5,5"), "mask_encoder.safetensors", "proj.")

    bad = tmp_path / "bad.jsonl"
    good = {"id": "x/0", "image": str(photo), "rle": M.encode(_box_mask((w, h), (0, 0, 10, 10)))}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({"id": "x/1", "image": str(photo)}) + "\n")
    line = _fails(cli("caption", "--input", bad, "--model", ckpt, "--max-new-tokens", "2"), "bad.jsonl:2", "rle")
    assert line


def test_options_that_would_be_ignored_are_refused(cli, photo, tmp_path):
    """Batch-only and chat-only options were accepted and silently ignored (-o even truncated under --resume)."""
    ckpt_dir = tmp_path / "not-loaded"  # every check below fails before a model would load
    one = ["caption", photo, "--box", "0,0,5,5", "--model", ckpt_dir]
    _fails(cli(*one, "-o", tmp_path / "o.jsonl", "--resume"), "--resume: only with --input FILE")
    _fails(cli(*one, "--failed", tmp_path / "f.jsonl", "--shard", "0/2"), "--failed, --shard: only with --input")
    _fails(cli(*one, "--on-error", "skip"), "--on-error skip: only with --input")
    _fails(cli(*one, "--base-url", "http://127.0.0.1:9/v1"), "--base-url: only with --region-prompt")
    _fails(cli(*one, "--backend", "openai", "--max-side", "64"), "--backend, --max-side: only with --region-prompt")
    _fails(cli("caption", "--input", tmp_path, "--model", ckpt_dir), f"{tmp_path}: is a directory")


def test_numbers_that_are_not_finite_are_refused(cli, photo, tmp_path):
    """--temperature inf or nan with --sample was taken; one line naming the option, before a model loads."""
    for value in ("nan", "inf"):
        _fails(cli("caption", photo, "--box", "0,0,5,5", "--model", tmp_path / "not-loaded", "--sample",
                   "--temperature", value), f"--temperature {value}: ", "finite")
    from ureca_cli.caption.captioner import CaptionConfig
    from ureca_cli.errors import UrecaError

    with pytest.raises(UrecaError, match="--temperature inf"):
        CaptionConfig(model=tmp_path, temperature=float("inf"))


def test_pickled_base_or_adapter_never_unpickled(cli, ckpt, photo, tmp_path):
    """A checkpoint whose embedded base or LoRA adapter is a pickle only (pytorch_model.bin, adapter_model.bin):
    one line naming the file and how to convert it; never opened (a .bin adapter also skipped the strict key
    check)."""
    from tests.pickles import never_opened, plant_pickle
    from ureca_cli.model import build_tiny_ureca, save_checkpoint
    from ureca_cli.train.config import LoraConfig
    from ureca_cli.train.stages import prepare_stage2

    base = tmp_path / "pickled-base"
    shutil.copytree(ckpt, base)
    planted = plant_pickle(base / "base")
    with never_opened(planted):
        _fails(cli("caption", photo, "--model", base, "--box", "0,0,5,5"), str(planted), "never unpickles",
               "save_pretrained")
    assert not (base / "base" / "UNPICKLED").exists()

    model = build_tiny_ureca(seed=0)
    prepare_stage2(model, LoraConfig(r=4, alpha=8))
    lora = save_checkpoint(model, tmp_path / "pickled-adapter")
    planted = plant_pickle(lora / "adapter", "adapter_model.bin")
    with never_opened(planted):
        _fails(cli("caption", photo, "--model", lora, "--box", "0,0,5,5"), str(planted), "never unpickles",
               "save_pretrained")
    assert not (lora / "adapter" / "UNPICKLED").exists()


def test_damaged_embedded_base_names_the_file(cli, ckpt, photo, tmp_path):
    """A checkpoint whose embedded base has a truncated model.safetensors: one line naming that file."""
    broken = tmp_path / "broken-base"
    shutil.copytree(ckpt, broken)
    weights = broken / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    _fails(cli("caption", photo, "--model", broken, "--box", "0,0,5,5"), str(weights), "truncated")


def test_single_image_ids_agree_with_tree_and_flat_records(cli, ckpt, tmp_path):
    """`caption sa_900003.png --mask m.png` named its regions sa_900003/0 while tree and refine --flat name the
    image 900003, so its predictions never met their references: one image id rule (records.image_id_for)."""
    from tests.tree_fixtures import rect, write_sa1b

    masks = [rect(60, 80, 5, 55, 5, 70), rect(60, 80, 10, 30, 10, 40)]
    sa1b = write_sa1b(tmp_path, "sa_900003", masks, image_id=900003)
    tree = _ok(cli("tree", sa1b))[0]
    for node in tree["nodes"]:
        node["caption"] = f"region {node['id']}"
    (tmp_path / "captioned.jsonl").write_text(json.dumps(tree) + "\n")
    flat = _ok(cli("refine", tmp_path / "captioned.jsonl", "--no-refine", "--flat"))
    Image.fromarray(masks[1] * 255).save(tmp_path / "m.png")
    (pred,) = _ok(cli("caption", tmp_path / "sa_900003.png", "--mask", tmp_path / "m.png", "--model", ckpt,
                      "--max-new-tokens", "4"))
    assert tree["image_id"] == "900003"
    assert {r["image_id"] for r in flat} == {pred["image_id"]} == {"900003"}
    assert {r["id"].rsplit("/", 1)[0] for r in flat} == {pred["id"].rsplit("/", 1)[0]} == {"900003"}
    assert pred["id"] == "900003/0"
    # a photo with no SA-1B name keeps its stem, as tree names the SAM output next to it
    (tmp_path / "photo.png").write_bytes((tmp_path / "sa_900003.png").read_bytes())
    (other,) = _ok(cli("caption", tmp_path / "photo.png", "--mask", tmp_path / "m.png", "--model", ckpt,
                       "--max-new-tokens", "4"))
    assert other["id"] == "photo/0" and other["image_id"] == "photo"


def test_verbose_says_where_the_time_goes_and_auto_keeps_the_stored_dtype(cli, tmp_path, monkeypatch):
    """A single caption spent most of its time loading: --verbose names the phases; on the CPU, dtype auto reads
    bfloat16 weights as they are stored where the CPU computes bfloat16 at speed, else float32 (as before)."""
    from ureca_cli.caption import captioner as C
    from ureca_cli.model import build_tiny_ureca, save_checkpoint

    folder = save_checkpoint(build_tiny_ureca(seed=1).to(torch.bfloat16), tmp_path / "bf16")
    image = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(image)
    args = ("caption", image, "--box", "5,5,30,20", "--model", folder, "--max-new-tokens", "3")
    r = cli(*args, "--verbose")
    (rec,) = _ok(r)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("ureca caption: imports")]
    for phase in ("load", "preprocess", "generate", "1 region(s) of 1 image(s)", "s in all"):
        assert phase in line, line
    assert f"({'bfloat16' if C.cpu_computes(torch.bfloat16) else 'float32'} weights)" in line
    monkeypatch.setattr(C, "cpu_computes", lambda dtype: dtype == torch.float32)  # a CPU without fast bfloat16
    r = cli(*args, "--verbose")
    assert r.exit_code == 0 and "(float32 weights)" in r.stderr
    assert "imports" not in cli(*args).stderr  # quiet without --verbose
