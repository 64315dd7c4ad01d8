"""`ureca caption --region-prompt none|contour|crop`: the paper's Table 2 baselines through chat backends."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from tests.servers.chat import ScriptedServer, request_images, request_text
from tests.test_annotate import Scripted, write_trees
from ureca_cli import masks as M


def _decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def _run(cli, tmp_path, prompt, trees, **extra):
    script = Scripted()
    with ScriptedServer(script) as s:
        r = cli("caption", "--input", trees, "--region-prompt", prompt, "--backend", "openai", "--base-url", s.url,
                "--model", "scripted", *extra.get("args", ()))
        return r, script, list(s.requests)


def test_contour_and_crop_baselines_write_region_records(cli, tmp_path):
    trees = write_trees(tmp_path, n=1)
    rec = json.loads(trees.read_text())
    rec["nodes"][0]["caption"] = "a reference caption"
    trees.write_text(json.dumps(rec) + "\n")
    for prompt in ("contour", "crop"):
        r, script, requests = _run(cli, tmp_path, prompt, trees)
        assert r.exit_code == 0, r.stderr
        out = [json.loads(x) for x in r.stdout.splitlines()]
        assert [o["id"] for o in out] == [f"im0/{n['id']}" for n in rec["nodes"]]
        assert out[0]["reference"] == "a reference caption"
        for o, node in zip(out, rec["nodes"], strict=True):
            assert o["region_prompt"] == prompt and o["model"] == "scripted" and o["backend"] == "openai"
            body = script.by_answer[o["caption"]]
            (url,) = request_images(body)
            img = _decode(url)
            box = M.pixel_box(M.decode(node["rle"]))
            if prompt == "crop":
                assert img.shape[:2] == (box[3], box[2])
                assert o["question"] == request_text(body) == "Describe this region in the image."
            else:
                assert img.shape[:2] == (rec["height"], rec["width"])
                src = np.asarray(Image.open(tmp_path / "im0.jpg").convert("RGB")).astype(int)
                drawn = np.abs(img.astype(int) - src).max(axis=2) > 90  # far beyond JPEG noise: the contour
                ys, xs = np.nonzero(drawn)
                x, y, w, h = box
                assert drawn.sum() > 10 and xs.min() >= x - 3 and xs.max() <= x + w + 2
                assert ys.min() >= y - 3 and ys.max() <= y + h + 2
                assert "outlined in yellow" in o["question"]
        assert len(requests) == len(rec["nodes"])


def test_none_baseline_asks_once_per_image_and_single_image_path(cli, tmp_path):
    trees = write_trees(tmp_path, n=2)
    r, script, requests = _run(cli, tmp_path, "none", trees, args=("--question", "What is shown?"))
    assert r.exit_code == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(requests) == 2 and len({o["caption"] for o in out}) == 2
    assert all(o["question"] == "What is shown?" for o in out)
    with ScriptedServer(Scripted()) as s:
        r = cli("caption", tmp_path / "im0.jpg", "--box", "10,20,30,15", "--region-prompt", "crop", "--backend",
                "openai", "--base-url", s.url, "--model", "scripted")
        assert r.exit_code == 0, r.stderr
        (o,) = [json.loads(x) for x in r.stdout.splitlines()]
        assert o["id"] == "im0/0" and o["bbox"] == [10, 20, 30, 15]
        assert _decode(request_images(s.requests[0])[0]).shape[:2] == (15, 30)
    r = cli("caption", "--input", trees, "--region-prompt", "blur", "--backend", "openai", "--model", "m")
    assert r.exit_code == 2 and "--region-prompt 'blur'" in r.stderr


def test_contour_baseline_through_tiny_internvl(cli, tmp_path):
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "tiny")
    trees = write_trees(tmp_path, n=1, mains=1, fanout=(2,))
    r = cli("caption", "--input", trees, "--region-prompt", "contour", "--backend", "hf", "--model", folder,
            "--device", "cpu", "--max-new-tokens", "5")
    assert r.exit_code == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 4 and all(o["caption"] and o["backend"] == "hf" for o in out)


def test_caption_input_refuses_a_repeated_region_id(cli, tmp_path):
    """A region id given twice in `caption --input` (a region record, and the image record that holds it too):
    a resumed run wrote fewer lines than one without a stop. Refused at the second, naming the first."""
    trees = write_trees(tmp_path, n=2, mains=1, fanout=(2,))
    im0, im1 = [json.loads(x) for x in trees.read_text().splitlines()]
    node = im1["nodes"][1]
    region = {"id": f"im1/{node['id']}", "image_id": "im1", "image": im1["image"], "rle": node["rle"]}
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in (im0, region, im1)))
    r, _, requests = _run(cli, tmp_path, "crop", path, args=("-o", tmp_path / "out.jsonl"))
    assert r.exit_code == 2
    lines = [x for x in r.stderr.splitlines() if "error" in x]
    assert lines == [f"ureca caption: error: {path}:3: region id 'im1/{node['id']}' appears twice (first at "
                     f"{path}:2); an input may hold each region id once, so that --resume can tell them apart"], r.stderr
    assert len(requests) == len(im0["nodes"]) + 1  # the third line was refused before any request


def test_caption_resume_after_a_torn_image_writes_each_region_once(cli, tmp_path):
    """`caption --input` of image records killed in the middle of one image's region lines: --resume kept that
    image's complete lines and wrote the image again, so its first regions came out twice."""
    trees = write_trees(tmp_path, n=2, mains=1, fanout=(2,))
    out = tmp_path / "out.jsonl"
    r, _, _ = _run(cli, tmp_path, "crop", trees, args=("-o", out))
    assert r.exit_code == 0, r.stderr
    lines = out.read_bytes().splitlines(keepends=True)
    ids = [json.loads(x)["id"] for x in lines]
    assert len(ids) == 8 and ids[:4] == [f"im0/{i}" for i in (1, 2, 3, 4)]
    out.write_bytes(b"".join(lines[:6]) + lines[6][:20])  # im1: two whole lines and a torn one
    r, _, requests = _run(cli, tmp_path, "crop", trees, args=("-o", out, "--resume"))
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["id"] for x in out.read_bytes().splitlines()] == ids
    assert len(requests) == 4  # im1 again, whole; im0 not asked again


def test_the_api_key_and_url_password_are_never_shown(cli, tmp_path, monkeypatch):
    """caption --region-prompt against a server that echoes the credentials it gets: no line on stderr, record or
    --failed file holds the key (OPENAI_API_KEY, read by default) or the password of --base-url."""
    from tests.servers.chat import leaks, with_credentials

    key = "sk-baseline-secret-4242"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    trees = write_trees(tmp_path, n=2)
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    with ScriptedServer(Scripted(), echo_auth="answer") as s:
        r = cli("caption", "--input", trees, "--region-prompt", "contour", "--backend", "openai", "--base-url",
                s.url, "--model", "scripted", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert s.headers[0]["Authorization"] == f"Bearer {key}"
    assert "(sent with Bearer ***)" in json.loads(out.read_text().splitlines()[0])["caption"]
    assert leaks([key], r.stderr, r.stdout, out) == []
    with ScriptedServer(Scripted(), echo_auth="401") as s:
        r = cli("caption", "--input", trees, "--region-prompt", "crop", "--backend", "openai", "--base-url",
                with_credentials(s.url, "alice", "pa55word"), "--model", "scripted", "--on-error", "skip",
                "--failed", failed)
    assert "HTTP 401" in r.stderr and "alice:***@127.0.0.1" in r.stderr and len(failed.read_text().splitlines()) == 2
    assert leaks([key, "pa55word"], r.stderr, r.stdout, failed) == []
    with ScriptedServer(Scripted(), echo_auth="401") as s:
        r = cli("caption", "--input", trees, "--region-prompt", "crop", "--backend", "openai", "--base-url", s.url,
                "--model", "scripted")
    assert r.exit_code == 2 and "Bearer ***" in r.stderr and leaks([key], r.stderr) == []


def test_model_left_out_is_the_servers_first(cli, tmp_path):
    """With --region-prompt, --model is the served model's name; left out, the server's first model is used, as
    annotate does. Without --region-prompt it is the URECA checkpoint, which must be given (one line)."""
    trees = write_trees(tmp_path, n=1)
    with ScriptedServer(Scripted(), model="served-first") as s:
        r = cli("caption", "--input", trees, "--region-prompt", "crop", "--backend", "openai", "--base-url", s.url)
        assert r.exit_code == 0, r.stderr
        assert {body["model"] for body in s.requests} == {"served-first"}
    assert {json.loads(x)["model"] for x in r.stdout.splitlines()} == {"served-first"}
    r = cli("caption", "--input", trees)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--model" in lines[0] and "checkpoint" in lines[0], r.stderr
    r = cli("caption", "--input", trees, "--region-prompt", "crop")  # --backend hf: its default model
    assert r.exit_code == 2 and "OpenGVLab/InternVL3-1B-hf" in r.stderr, r.stderr


def test_baselines_save_the_pictures_they_send(cli, tmp_path):
    """`caption --region-prompt` had no --save-prompts, unlike annotate and refine: every picture sent is written
    to DIR/<image_id>/<node>_<kind>.png (names by records.file_name), the very picture the server got."""
    trees = write_trees(tmp_path, n=1)
    rec = json.loads(trees.read_text())
    for prompt in ("contour", "crop"):
        sent = tmp_path / f"sent_{prompt}"
        r, script, requests = _run(cli, tmp_path, prompt, trees, args=("--save-prompts", sent))
        assert r.exit_code == 0, r.stderr
        out = [json.loads(x) for x in r.stdout.splitlines()]
        assert sorted(p.name for p in (sent / "im0").iterdir()) == sorted(f"{n['id']}_{prompt}.png"
                                                                           for n in rec["nodes"])
        src = np.asarray(Image.open(tmp_path / "im0.jpg").convert("RGB")).astype(int)
        pairs = []
        for o, node in zip(out, rec["nodes"], strict=True):
            (url,) = request_images(script.by_answer[o["caption"]])
            got = _decode(url).astype(int)
            saved = np.asarray(Image.open(sent / "im0" / f"{node['id']}_{prompt}.png").convert("RGB")).astype(int)
            assert saved.shape == got.shape  # crops: each region's own box
            assert np.abs(saved - got).mean() < 8  # the same picture (the server got it as JPEG)
            pairs.append((saved, got))
        if prompt == "contour":  # each saved contour is its own request's: where each differs from the photo
            drawn = [[np.abs(x - src).max(axis=2) > 90 for x in pair] for pair in pairs]
            for i, (a, _) in enumerate(drawn):
                iou = [(a & b).sum() / (a | b).sum() for _, b in drawn]
                assert int(np.argmax(iou)) == i and iou[i] > 0.6, iou
    r, _, requests = _run(cli, tmp_path, "none", trees, args=("--save-prompts", tmp_path / "plain"))
    assert r.exit_code == 0 and len(requests) == 1
    assert [p.name for p in (tmp_path / "plain" / "im0").iterdir()] == ["none.png"]
    # one image on the command line: its regions are named by their place, under the image's id
    with ScriptedServer(Scripted()) as s:
        r = cli("caption", tmp_path / "im0.jpg", "--box", "10,20,30,15", "--box", "0,0,5,5", "--region-prompt",
                "crop", "--backend", "openai", "--base-url", s.url, "--model", "scripted", "--save-prompts",
                tmp_path / "one")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "one" / "im0").iterdir()) == ["0_crop.png", "1_crop.png"]
    r = cli("caption", tmp_path / "im0.jpg", "--box", "10,20,30,15", "--model", tmp_path, "--save-prompts",
            tmp_path / "x")
    assert r.exit_code == 2 and "--save-prompts: only with --region-prompt" in r.stderr
