"""`ureca refine` end to end: random-weight DINOv2 features, a scripted chat server for content checks,
verification, bad input, resume, and the tiny random InternVL through the hf backend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.refine_fixtures import annotated_record, pasted_photo
from tests.servers.chat import ScriptedServer, request_images, request_text

TINY = "random:dinov2-tiny"


def _caption_in(text: str) -> str:
    """The node caption a refine/verify prompt carries (our fixture's captions start with 'long ')."""
    m = re.search(r"^(long [^\n]+|unique\([^\n]+\))$", text, re.M)
    assert m, text
    return m.group(1)


def refine_or_judge(false_for: tuple[str, ...] = (), judge_answer: str | None = None):
    def answer(body: dict) -> str:
        text = request_text(body)
        caption = _caption_in(text)
        if "True if the description fits" in text:  # the verify template
            if judge_answer is not None:
                return judge_answer
            plain = caption.removeprefix("unique(")
            return "False." if plain.startswith(false_for) else "True"
        return f"unique({caption})"

    return answer


@pytest.fixture
def photo(shared_data, tmp_path):
    return pasted_photo(shared_data, tmp_path / "pasted.png")


@pytest.fixture
def records(photo, tmp_path):
    """Two annotated records of the pasted photo (ids photo1, photo2) in a JSONL file."""
    image, spots = photo
    path = tmp_path / "captioned.jsonl"
    recs = [annotated_record(image, spots, "photo1"), annotated_record(image, spots, "photo2")]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _pair_threshold(image: Path, spots: dict) -> float:
    """A threshold between sim(A, B) and the largest similarity of A or B with any other captioned region."""
    from PIL import Image

    from ureca_cli.curate.features import FeatureConfig, RegionEmbedder, cosine_matrix
    from ureca_cli.masks import decode
    from ureca_cli.visual.prompter import VisualPrompter

    rec = annotated_record(image, spots)
    ms = [decode(n["rle"]) for n in rec["nodes"] if "caption" in n]
    vp = VisualPrompter(Image.open(image).convert("RGB"))
    sim = cosine_matrix(RegionEmbedder(FeatureConfig(model=TINY)).embed_crops([vp.blurred_crop(m) for m in ms]))
    others = max(sim[i, j] for i in (0, 1) for j in range(2, len(ms)))
    assert sim[0, 1] > others
    return float((sim[0, 1] + others) / 2)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _run(cli, *args, features_model: str = TINY, input: str | None = None):
    return cli("refine", *[str(a) for a in args], "--features-model", features_model, "--features-device", "cpu",
               input=input)


def test_refine_end_to_end_scripted(cli, photo, records, tmp_path):
    threshold = _pair_threshold(*photo)
    out = tmp_path / "refined.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--threshold", threshold,
                 "--save-prompts", tmp_path / "prompts", "-o", out)
        assert r.exit_code == 0, r.stderr
        reqs = list(server.requests)
    recs = _lines(out)
    assert [r["image_id"] for r in recs] == ["photo1", "photo2"]
    nodes = {n["id"]: n for n in recs[0]["nodes"]}
    # the identical pair: each in the other's similar set, and refined
    assert [s["id"] for s in nodes[1]["similar"]] == [2]
    assert [s["id"] for s in nodes[2]["similar"]] == [1]
    assert nodes[1]["similar"][0]["score"] > threshold
    assert all(s["id"] not in (1, 2) for s in nodes[3]["similar"])
    for n in nodes.values():
        if n["role"] == "dropped":
            assert "caption" not in n and "similar" not in n
            continue
        assert n["short_caption"].startswith("short ") and n["long_caption"].startswith("long ")  # kept
        if n["similar"]:
            assert n["unique_caption"] == f"unique({n['long_caption']})"
            assert n["caption"] == n["unique_caption"]
        else:
            assert "unique_caption" not in n and n["caption"] == n["long_caption"]
    refined = [n for r in recs for n in r["nodes"] if n.get("similar")]
    assert len(reqs) == len(refined)  # one request per region with look-alikes, none for the others
    for body in reqs:
        assert len(request_images(body)) == 1  # the set-of-mark image
        text = request_text(body)
        assert "Region 0" in text and "outlined in blue" in text
    stamp = recs[0]["refine"]
    assert stamp["backend"] == "openai" and stamp["model"] == "scripted"
    assert stamp["prompt_version"].startswith("ureca-prompts-")
    assert stamp["features"] == {"model": TINY, "mode": "crop", "threshold": threshold, "max_similar": 8}
    assert recs[0]["annotate"]["model"] == "m"  # earlier fields kept
    saved = sorted(p.name for p in (tmp_path / "prompts" / "photo1").iterdir())
    assert "1_setofmark.png" in saved and "2_setofmark.png" in saved


def test_refine_masked_pool_everything_similar(cli, records, tmp_path):
    """Threshold -1: every captioned region is a look-alike of every other; --max-similar caps the sets."""
    out = tmp_path / "refined.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--threshold", -1,
                 "--features", "masked-pool", "--max-similar", 2, "--shard", "0/2", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert len(server.requests) == 6
    (rec,) = _lines(out)
    captioned = [n for n in rec["nodes"] if "caption" in n]
    assert all(len(n["similar"]) == 2 for n in captioned)
    scores = [s["score"] for n in captioned for s in n["similar"]]
    assert all(-1 <= s <= 1 for s in scores)
    assert rec["refine"]["features"]["mode"] == "masked-pool" and rec["refine"]["refined"] == 6


def test_verify_and_drop_unverified(cli, records, tmp_path):
    out = tmp_path / "verified.jsonl"
    with ScriptedServer(refine_or_judge(false_for=("long crema",))) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--no-refine", "--verify",
                 "--drop-unverified", "--save-prompts", tmp_path / "p", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert len(server.requests) == 12  # 6 captioned regions x 2 images, one judge request each
        assert all(len(request_images(b)) == 2 for b in server.requests)
    rec = _lines(out)[0]
    nodes = {n["id"]: n for n in rec["nodes"]}
    assert 5 not in nodes  # the crema, judged False, is gone; its child moved up to the cup
    assert nodes[6]["parent"] == 4 and nodes[6]["depth"] == 2 and 6 in nodes[4]["children"]
    assert all(n["verified"] is True for n in nodes.values() if "caption" in n)
    assert rec["refine"]["unverified"] == 1 and rec["refine"]["dropped"] == 1
    assert rec["refine"]["judge"] == {"backend": "openai", "model": "scripted"}
    assert (tmp_path / "p" / "photo1" / "6_verify_context.png").is_file()


def test_verify_keeps_false_without_drop(cli, records, tmp_path):
    out = tmp_path / "v.jsonl"
    with ScriptedServer(refine_or_judge(false_for=("long crema",))) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--verify", "--threshold", -1,
                 "--shard", "1/2", "-o", out)
        assert r.exit_code == 0, r.stderr
        texts = [request_text(b) for b in server.requests]
    (rec,) = _lines(out)
    nodes = {n["id"]: n for n in rec["nodes"]}
    assert nodes[5]["verified"] is False and nodes[4]["verified"] is True
    # the judge saw the refined captions, not the annotate ones
    judged = [_caption_in(t) for t in texts if "True if the description fits" in t]
    assert sorted(judged) == sorted(n["caption"] for n in nodes.values() if "caption" in n)
    assert all(c.startswith("unique(") for c in judged)


@pytest.mark.parametrize("answer", ["Maybe so.", "It depends"])
def test_judge_answer_neither_true_nor_false_is_asked_again_then_undecided(cli, records, tmp_path, answer):
    """One judge answer that was neither True nor False stopped the run under --on-error stop: the judge is
    reminded once, in the same conversation, of the two words it may answer; a second such answer leaves the
    node unverified (`verified: null`, counted as undecided), and the run goes on."""
    out = tmp_path / "v.jsonl"
    with ScriptedServer(refine_or_judge(judge_answer=answer)) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--no-refine", "--verify",
                 "--save-prompts", tmp_path / "p", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert "error" not in r.stderr and "Traceback" not in r.stderr
        reqs = list(server.requests)
    assert len(reqs) == 24  # 6 captioned regions x 2 images, asked twice each
    again = [b for b in reqs if len(b["messages"]) == 3]
    assert len(again) == 12
    for body in again:
        first, said, reminder = body["messages"]
        assert said["role"] == "assistant" and request_text({"messages": [said]}) == answer  # then the reminder
        assert "exactly one word: True if the description fits" in request_text({"messages": [reminder]})
        assert len(request_images({"messages": [first]})) == 2
    recs = _lines(out)
    for rec in recs:
        captioned = [n for n in rec["nodes"] if "caption" in n]
        assert captioned and all(n["verified"] is None for n in captioned)
        assert {k: rec["refine"][k] for k in ("verified", "unverified", "undecided")} == {
            "verified": 0, "unverified": 6, "undecided": 6}
    assert len(list((tmp_path / "p" / "photo1").iterdir())) == 12  # the images were saved once per region
    with ScriptedServer(refine_or_judge(judge_answer=answer)) as server:  # --drop-unverified drops them too
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--no-refine", "--verify",
                 "--drop-unverified", "--shard", "0/2", "-o", out)
    assert r.exit_code == 0, r.stderr
    (rec,) = _lines(out)
    assert not [n for n in rec["nodes"] if "caption" in n] and rec["refine"]["dropped"] == 6


def test_judge_reminded_once_answers(cli, records, tmp_path):
    """A judge that answers True or False after the reminder is taken at its word."""
    def judge(body: dict) -> str:
        if len(body["messages"]) == 3:
            return "True."
        return "It is hard to say."

    out = tmp_path / "v.jsonl"
    with ScriptedServer(judge) as server:
        r = _run(cli, records, "--backend", "openai", "--base-url", server.url, "--no-refine", "--verify",
                 "--shard", "1/2", "-o", out)
        assert r.exit_code == 0, r.stderr
        assert len(server.requests) == 12
    (rec,) = _lines(out)
    assert all(n["verified"] is True for n in rec["nodes"] if "caption" in n)
    assert rec["refine"]["verified"] == 6 and rec["refine"]["undecided"] == 0


def test_bad_input_one_line_exit_2_or_skip(cli, photo, tmp_path):
    image, spots = photo
    good = annotated_record(image, spots, "ok")
    missing = annotated_record(tmp_path / "nope.png", spots, "missing")
    wrong_size = dict(annotated_record(image, spots, "size"), width=10)
    bad_rle = annotated_record(image, spots, "rle")
    bad_rle["nodes"][0]["rle"] = {"size": [400, 600], "counts": "@@@not-rle"}
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(good), "{not json", json.dumps({"image_id": "x"}), json.dumps(missing),
             json.dumps(wrong_size), json.dumps(bad_rle), json.dumps(good | {"image_id": "ok2"})]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        args = ("--backend", "openai", "--base-url", server.url, "--threshold", -1, "-o", out)
        r = _run(cli, path, *args)
        assert r.exit_code == 2 and "in.jsonl:2: not valid JSON" in r.stderr
        assert len(_lines(out)) == 1  # the first image, already written, is kept
        r = _run(cli, path, *args, "--on-error", "skip")
    assert r.exit_code == 0, r.stderr
    assert "5 failed and skipped" in r.stderr
    err = r.stderr
    assert "in.jsonl:3" in err and "missing field" in err
    assert "in.jsonl:4" in err and "not found" in err
    assert "in.jsonl:5" in err and "record says 10x400" in err
    assert "in.jsonl:6" in err and "node 1" in err
    assert "Traceback" not in err
    assert [r["image_id"] for r in _lines(out)] == ["ok", "ok2"]


def test_resume_skips_images_already_written(cli, records, tmp_path):
    out = tmp_path / "refined.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        args = ("--backend", "openai", "--base-url", server.url, "--threshold", -1, "-o", out)
        assert _run(cli, records, *args).exit_code == 0
        full = out.read_text().splitlines()
        first = full[0]
        out.write_text(first + "\n" + full[1][:50])  # interrupted: a whole first line and a torn second one
        n = len(server.requests)
        r = _run(cli, records, *args, "--resume")
        assert r.exit_code == 0, r.stderr
        assert len(server.requests) == n + 6  # only the second image was redone
    assert "1 already done" in r.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == first and [json.loads(x)["image_id"] for x in lines] == ["photo1", "photo2"]


def test_options_checked(cli, records, tmp_path):
    r = _run(cli, records, "--drop-unverified")
    assert r.exit_code == 2 and "--drop-unverified needs --verify" in r.stderr
    r = _run(cli, records, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
             features_model="random:nope")
    assert r.exit_code == 2 and "no model configuration 'nope'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run(cli, records, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
             features_model=str(tmp_path))
    assert r.exit_code == 2 and "cannot load the DINOv2 model" in r.stderr
    r = _run(cli, records, "--threshold", 2)
    assert r.exit_code == 2 and "--threshold 2" in r.stderr
    r = _run(cli, records, "--judge-model", "gpt-4o")  # was accepted and ignored without --verify
    assert r.exit_code == 2 and "--judge-model and --judge-base-url choose the judge of --verify" in r.stderr


def test_parse_verdict_and_drop_nodes():
    from ureca_cli.curate.refine import drop_nodes, parse_verdict

    assert parse_verdict("True") is True and parse_verdict("**false**.") is False
    assert parse_verdict(" TRUE, it fits") is True
    assert parse_verdict("Yes") is None and parse_verdict("") is None and parse_verdict("...") is None
    rec = {"nodes": [
        {"id": 1, "parent": None, "children": [2], "depth": 1},
        {"id": 2, "parent": 1, "children": [3], "depth": 2},
        {"id": 3, "parent": 2, "children": [4], "depth": 3},
        {"id": 4, "parent": 3, "children": [], "depth": 4},
    ]}
    assert drop_nodes(rec, {2, 3}) == 2
    assert rec["nodes"] == [{"id": 1, "parent": None, "children": [4], "depth": 1},
                            {"id": 4, "parent": 1, "children": [], "depth": 2}]


@pytest.mark.slow
def test_refine_hf_backend_tiny_internvl(cli, records, tmp_path):
    """The in-process backend with a tiny random InternVL: random text, but every refined node gets it."""
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "tiny-internvl")
    out = tmp_path / "refined.jsonl"
    r = _run(cli, records, "--backend", "hf", "--model", folder, "--threshold", -1, "--max-new-tokens", 8,
             "--max-side", 64, "--shard", "0/2", "-o", out)
    assert r.exit_code == 0, r.stderr
    (rec,) = _lines(out)
    captioned = [n for n in rec["nodes"] if "caption" in n]
    assert len(captioned) == 6
    for n in captioned:
        assert n["unique_caption"] and n["caption"] == n["unique_caption"]
    assert rec["refine"]["backend"] == "hf" and rec["refine"]["model"] == str(folder)
    assert np.isfinite([s["score"] for n in captioned for s in n["similar"]]).all()


def test_tree_annotate_refine_pipeline(cli, shared_data, tmp_path):
    """The three curation stages chained on real SA-1B-format files: refine reads what annotate writes."""
    trees, captioned, refined = tmp_path / "trees.jsonl", tmp_path / "captioned.jsonl", tmp_path / "refined.jsonl"
    assert cli("tree", shared_data / "trees" / "sa_900001.json", "-o", trees).exit_code == 0
    with ScriptedServer(lambda body: "True" if "True if the description fits" in request_text(body)
                        else f"a caption ({len(request_text(body))})") as server:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", server.url, "-o", captioned)
        assert r.exit_code == 0, r.stderr
        r = _run(cli, captioned, "--backend", "openai", "--base-url", server.url, "--threshold", -1, "--verify",
                 "-o", refined)
        assert r.exit_code == 0, r.stderr
    (before,), (after,) = _lines(captioned), _lines(refined)
    assert [n["id"] for n in after["nodes"]] == [n["id"] for n in before["nodes"]]
    for old, new in zip(before["nodes"], after["nodes"], strict=True):
        assert all(new[k] == v for k, v in old.items() if k != "caption")  # every earlier field kept
        if "caption" in old:
            assert new["verified"] is True and new["similar"] and new["caption"] == new["unique_caption"]
    assert after["annotate"] == before["annotate"] and after["refine"]["refined"] >= 2


def test_faults_then_server_down_then_resume(cli, records, tmp_path):
    """Through a fault proxy: 429, 500, dropped connections and empty answers are retried and every region is
    refined once; then with the server gone for good the run stops with one line, and --resume finishes."""
    from tests.servers.chat import FaultProxy

    kinds = ["429", "500", "drop", "empty"]
    faults = {i: kinds[(i // 2) % len(kinds)] for i in range(0, 16, 2)}
    out = tmp_path / "refined.jsonl"
    with ScriptedServer(refine_or_judge()) as s, FaultProxy(s.url, faults.get) as p:
        r = _run(cli, records, "--backend", "openai", "--base-url", p.url, "--threshold", -1, "--retries", 8,
                 "--concurrency", 3, "-o", out)
        assert r.exit_code == 0, r.stderr
        assert len(s.requests) == 12 and {f for f in p.applied if f} == set(kinds)
    refined = [n["caption"] for rec in _lines(out) for n in rec["nodes"] if "caption" in n]
    assert len(refined) == 12 and all(c.startswith("unique(long ") for c in refined)

    out2, failed = tmp_path / "again.jsonl", tmp_path / "failed.jsonl"
    with ScriptedServer(refine_or_judge()) as s, FaultProxy(s.url, lambda k: "down" if k >= 6 else None) as p:
        r = _run(cli, records, "--backend", "openai", "--base-url", p.url, "--threshold", -1, "--retries", 1,
                 "--images-in-flight", 1, "--failed", failed, "-o", out2)
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    errors = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and "captioned.jsonl:2" in errors[0]
    assert [x["image_id"] for x in _lines(out2)] == ["photo1"] and _lines(failed)[0]["image_id"] == "photo2"
    with ScriptedServer(refine_or_judge()) as s:
        r = _run(cli, records, "--backend", "openai", "--base-url", s.url, "--threshold", -1, "--resume", "-o", out2)
        assert r.exit_code == 0 and len(s.requests) == 6
    assert _lines(out2) == _lines(out)


def test_prompts_override_and_stdin(cli, records, tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "refine.txt").write_text("Make it unique:\n$caption\n")
    out = tmp_path / "r.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        r = _run(cli, "-", "--backend", "openai", "--base-url", server.url, "--threshold", -1, "--prompts", folder,
                 "-o", out, input=records.read_text().splitlines()[0] + "\n")
        assert r.exit_code == 0, r.stderr
        assert all(request_text(b).startswith("Make it unique:\nlong ") for b in server.requests)
    (rec,) = _lines(out)
    assert rec["refine"]["prompt_version"] != _default_prompt_version()
    (folder / "refine.txt").write_text("No placeholder here\n")
    r = _run(cli, records, "--prompts", folder, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1")
    assert r.exit_code == 2 and "refine.txt has no $caption" in r.stderr


def _default_prompt_version() -> str:
    from ureca_cli.curate.refine import load_templates

    return load_templates().version


def _captioned_trees(folder: Path, n: int = 2) -> Path:
    """Synthetic tree records (no shared data needed) with a caption on every main object and part."""
    from tests.servers.trees import make_image, make_tree_record

    recs = []
    for i in range(n):
        rec = make_tree_record(make_image(folder / f"im{i}.jpg", 120, 90, seed=i), 120, 90, image_id=f"im{i}",
                               mains=1, fanout=(2,), seed=i)
        for node in rec["nodes"]:
            if node["role"] != "dropped":
                node.update(short_caption=f"short {node['id']}", long_caption=f"long {node['id']}",
                            caption=f"long {node['id']}")
        recs.append(rec)
    path = folder / "captioned.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_the_api_key_and_url_password_are_never_shown(cli, tmp_path, monkeypatch):
    """A server that echoes the credentials it gets: no line on stderr, record, --failed file or saved prompt
    holds the key (OPENAI_API_KEY, read by default) or the password of --base-url."""
    import base64

    from tests.servers.chat import leaks, with_credentials

    key = "sk-refine-secret-4242"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    records = _captioned_trees(tmp_path)
    out, failed, saved = tmp_path / "out.jsonl", tmp_path / "failed.jsonl", tmp_path / "prompts"
    with ScriptedServer(lambda body: "unique", echo_auth="answer") as s:
        r = _run(cli, records, "--backend", "openai", "--base-url", s.url, "--threshold", -1, "--save-prompts",
                 saved, "-o", out)
        assert r.exit_code == 0, r.stderr
        assert s.headers[0]["Authorization"] == f"Bearer {key}"
    recs = _lines(out)
    assert recs[0]["nodes"][0]["caption"] == "unique (sent with Bearer ***)" and any(saved.rglob("*.png"))
    assert "***" in recs[0]["refine"]["model"]
    assert leaks([key], r.stderr, r.stdout, out, saved) == []
    with ScriptedServer(lambda body: "unique", echo_auth="401") as s:
        r = _run(cli, records, "--backend", "openai", "--base-url", s.url, "--threshold", -1, "--on-error", "skip",
                 "--failed", failed, "-o", tmp_path / "none.jsonl")
    assert "HTTP 401" in r.stderr and "Bearer ***" in r.stderr and len(_lines(failed)) == 2
    assert leaks([key], r.stderr, r.stdout, failed) == []
    basic = base64.b64encode(b"alice:pa55word").decode()
    with ScriptedServer(lambda body: "unique", echo_auth="401") as s:
        r = _run(cli, records, "--backend", "openai", "--base-url", with_credentials(s.url, "alice", "pa55word"),
                 "--threshold", -1)
    assert r.exit_code == 2 and "alice:***@127.0.0.1" in r.stderr
    assert leaks([key, "pa55word", basic], r.stderr) == []


def test_features_model_never_unpickled(cli, tmp_path):
    """--features-model DIR whose weights are a pickle only: one line saying how to convert it; never opened."""
    from tests.pickles import never_opened, plant_pickle
    from ureca_cli.curate.features import load_dinov2

    folder = tmp_path / "dino"
    load_dinov2("random:dinov2-tiny").save_pretrained(folder)
    planted = plant_pickle(folder)
    records = _captioned_trees(tmp_path)
    with ScriptedServer(lambda body: "unique") as s, never_opened(planted):
        r = _run(cli, records, "--backend", "openai", "--base-url", s.url, features_model=str(folder))
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert str(planted) in lines[0] and "never unpickles" in lines[0] and "save_pretrained" in lines[0], lines[0]
    assert not (folder / "UNPICKLED").exists()


def test_damaged_features_model_names_the_file(cli, tmp_path):
    """--features-model DIR with a truncated model.safetensors, a broken or missing config.json, or another kind
    of model: one line naming the file and what is wrong, exit 2 (no 'unexpected ...')."""
    import shutil

    from ureca_cli.curate.features import load_dinov2
    from ureca_cli.model.tiny import save_tiny_internvl

    good = tmp_path / "dino"
    load_dinov2("random:dinov2-tiny").save_pretrained(good)
    records = _captioned_trees(tmp_path)

    def fails(folder, *words):
        with ScriptedServer(lambda body: "unique") as s:
            r = _run(cli, records, "--backend", "openai", "--base-url", s.url, features_model=str(folder))
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, r.stderr
        assert all(w in lines[0] for w in words), lines[0]

    def copy(name):
        shutil.copytree(good, tmp_path / name)
        return tmp_path / name

    truncated = copy("truncated")
    (truncated / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:3000])
    fails(truncated, str(truncated / "model.safetensors"), "truncated")
    broken = copy("broken")
    (broken / "config.json").write_text('{"model_type": ')
    fails(broken, str(broken / "config.json"), "not valid JSON")
    bare = copy("bare")
    (bare / "config.json").unlink()
    fails(bare, str(bare), "no config.json")
    other = save_tiny_internvl(tmp_path / "internvl")
    fails(other, str(other / "config.json"), "'internvl'", "'dinov2'")


def test_refine_fails_before_reading_its_input(cli, tmp_path):
    """An unreachable server, a feature model that is not there, and the README's pipe on a machine without the
    hub (no backend given: the in-process model): one line saying what to add, before the input is read (this
    input would fail to parse)."""
    import socket

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def fails(*args, words=(), features_model=TINY):
        r = _run(cli, bad, *args, features_model=features_model)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1, r.stderr
        assert "bad.jsonl" not in lines[0] and all(w in lines[0] for w in words), lines[0]

    fails("--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
          words=(f"http://127.0.0.1:{port}/v1/models", "cannot reach"))
    with ScriptedServer(lambda body: "x") as s:
        fails("--backend", "openai", "--base-url", s.url, features_model="facebook/dinov2-base",
              words=("facebook/dinov2-base", "--features-model DIR"))
    fails(words=("OpenGVLab/InternVL3-1B-hf", "--backend openai --base-url"))  # HF_HUB_OFFLINE=1 in the tests


def test_readme_pipe_offline_fails_at_once_on_a_pipe_never_written(tmp_path):
    """`... | ureca refine -o refined.jsonl` (the README's pipe before it named refine's backend) on a machine
    without the hub: refine must say what to add at once, not wait on its input (a pipe nobody writes)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.Popen([sys.executable, "-m", "ureca_cli", "refine", "-o", str(tmp_path / "refined.jsonl")],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        code = proc.wait(timeout=120)  # stdin stays open and empty all along
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode()
        proc.wait()
    assert code == 2, err
    assert "--backend openai --base-url" in err and "Traceback" not in err, err
    assert not (tmp_path / "refined.jsonl").exists()


def test_uncompressed_counts_that_do_not_cover_the_image_are_refused(cli, photo, tmp_path):
    """Refine took an uncompressed RLE whose runs stop short of its size (tree refuses it): the one mask rule
    (masks.rle) names the node, exit 2, and the image before it is kept."""
    image, spots = photo
    good = annotated_record(image, spots, "ok")
    short = annotated_record(image, spots, "short")
    h, w = short["height"], short["width"]
    short["nodes"][2]["rle"] = {"size": [h, w], "counts": [h * w - 7, 3]}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(short) + "\n")
    out = tmp_path / "out.jsonl"
    with ScriptedServer(refine_or_judge()) as server:
        r = _run(cli, path, "--backend", "openai", "--base-url", server.url, "--threshold", -1, "-o", out)
    assert r.exit_code == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(lines) == 1 and "in.jsonl:2" in lines[0] and "uncompressed RLE counts do not cover" in lines[0]
    assert f"node {short['nodes'][2]['id']!r}" in lines[0]
    assert [x["image_id"] for x in _lines(out)] == ["ok"]
