"""`ureca annotate` through a scripted loopback server: what each request carries, in which order, faults,
resume, bad input, templates; and end to end through the tiny random InternVL in process."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from tests.servers.chat import FaultProxy, ScriptedServer, request_images, request_text
from tests.servers.trees import make_image, make_tree_record
from ureca_cli.curate.annotate import (
    AnnotateConfig,
    Annotator,
    count_requests,
    load_templates,
    plan_record,
    run,
)
from ureca_cli.mllm import make_backend
from ureca_cli.stream import StreamConfig

W, H = 120, 90
FAST = ["--retries", "8", "--timeout", "0.5"]


def write_trees(folder: Path, n: int = 3, **kw) -> Path:
    recs = []
    for i in range(n):
        img = make_image(folder / f"im{i}.jpg", W, H, seed=i)
        recs.append(make_tree_record(img, W, H, image_id=f"im{i}", seed=i, **kw))
    path = folder / "trees.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


class Scripted:
    """Answers every request with a unique, recognisable caption and remembers which request got it."""

    def __init__(self):
        self.n = 0
        self.by_answer: dict[str, dict] = {}
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        text = request_text(body)
        with self.lock:
            self.n += 1
            ans = f"{'para' if 'one paragraph' in text else 'phrase'} {self.n} zq"
            self.by_answer[ans] = body
        return ans


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def captioned(rec):
    return [n for n in rec["nodes"] if n["role"] != "dropped"]


def test_requests_carry_parent_siblings_and_children(cli, tmp_path):
    trees = write_trees(tmp_path)
    script = Scripted()
    out = tmp_path / "out.jsonl"
    with ScriptedServer(script) as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--concurrency", "4",
                "--save-prompts", tmp_path / "sent", "-o", out)
        assert r.exit_code == 0, r.stderr
        recs = read(out)
        assert [x["image_id"] for x in recs] == ["im0", "im1", "im2"]
        for rec in recs:
            assert rec["annotate"]["backend"] == "openai" and rec["annotate"]["model"] == "scripted"
            assert rec["annotate"]["prompt_version"].startswith("ureca-prompts-")
            assert rec["annotate"]["generation"]["max_new_tokens"] == 256
            plan = plan_record(rec, "x")
            nodes = plan.nodes
            for n in rec["nodes"]:
                if n["role"] == "dropped":
                    assert "caption" not in n
                    continue
                kids = plan.kids[n["id"]]
                assert n["caption"] == n["long_caption"]
                body = script.by_answer[n["short_caption"]]
                text = request_text(body)
                assert len(request_images(body)) == 2
                if n["role"] == "main":
                    assert "zq" not in text  # no parent, no siblings
                else:
                    parent = nodes[n["parent"]]
                    sibs = plan.kids[parent["id"]]
                    before = [nodes[x]["short_caption"] for x in sibs[: sibs.index(n["id"])]]
                    after = [nodes[x]["short_caption"] for x in sibs[sibs.index(n["id"]) + 1 :]]
                    assert parent["short_caption"] in text
                    assert all(b in text for b in before) and not any(a in text for a in after)
                    assert set(re.findall(r"phrase \d+ zq", text)) == {parent["short_caption"], *before}
                    areas = [nodes[x]["area"] for x in sibs]
                    assert areas == sorted(areas, reverse=True)
                if not kids:
                    assert n["long_caption"] == n["short_caption"]
                else:
                    pbody = script.by_answer[n["long_caption"]]
                    ptext = request_text(pbody)
                    assert len(request_images(pbody)) == 1
                    assert n["short_caption"] in ptext
                    assert all(nodes[k]["long_caption"] in ptext for k in kids)
        total = sum(count_requests(plan_record(x, "x"))[0] for x in recs)
        assert len(s.requests) == total  # one request per phrase and per paragraph, no more
    for rec in recs:
        for n in captioned(rec):
            sent = tmp_path / "sent" / rec["image_id"]
            assert len(list(sent.glob(f"{n['id']}_crop.*"))) == 1
            assert len(list(sent.glob(f"{n['id']}_context.*"))) == 1
    assert "3 images written" in r.stderr


def test_faults_complete_once_without_duplicates(tmp_path):
    trees = write_trees(tmp_path, n=4)
    script = Scripted()
    kinds = ["429", "500", "drop", "empty", "stall"]
    faults = {i: kinds[i % len(kinds)] for i in range(0, 40, 3)}  # every third request for a while
    out = tmp_path / "out.jsonl"
    with ScriptedServer(script) as s, FaultProxy(s.url, faults.get, stall=1.0) as p:
        backend = make_backend("openai", base_urls=[p.url], concurrency=4, timeout=0.5, retries=8, backoff=0.01,
                               max_backoff=0.05)
        summary = run(trees, Annotator(backend, AnnotateConfig()), StreamConfig(output=out))
        assert summary.written_items == 4 and summary.failed == 0
        recs = read(out)
        assert sorted(x["image_id"] for x in recs) == ["im0", "im1", "im2", "im3"]
        used = [n["short_caption"] for x in recs for n in captioned(x)]
        used += [n["long_caption"] for x in recs for n in captioned(x) if n["long_caption"] != n["short_caption"]]
        assert len(used) == len(set(used)) == len(s.requests)  # every answer used exactly once
        assert set(used) == set(script.by_answer)
        assert {f for f in p.applied if f} == set(kinds)


def test_server_down_stops_then_resume_finishes(cli, tmp_path):
    trees = write_trees(tmp_path, n=3)
    first = count_requests(plan_record(read(trees)[0], "x"))[0]
    script = Scripted()
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    with ScriptedServer(script) as s, FaultProxy(s.url, lambda k: "down" if k >= first else None) as p:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", p.url, "--images-in-flight", "1",
                "--retries", "2", "--failed", failed, "-o", out)
    assert r.exit_code == 2
    errors = [x for x in r.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and "trees.jsonl:2" in errors[0] and "failed after 3 tries" in errors[0]
    assert "Traceback" not in r.stderr
    assert [x["image_id"] for x in read(out)] == ["im0"]
    assert read(failed)[0]["image_id"] == "im1"
    script2 = Scripted()
    with ScriptedServer(script2) as s2:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s2.url, "--resume", "-o", out)
        assert r.exit_code == 0, r.stderr
        rest = sum(count_requests(plan_record(x, "x"))[0] for x in read(trees)[1:])
        assert len(s2.requests) == rest  # the image already written was not asked again
    recs = read(out)
    assert [x["image_id"] for x in recs] == ["im0", "im1", "im2"]
    assert all(n.get("caption") for x in recs for n in captioned(x))
    assert "1 already done" in r.stderr


def test_bad_input_one_line_each(cli, tmp_path):
    trees = read(write_trees(tmp_path, n=1))[0]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    no_role = json.loads(json.dumps(trees))
    for n in no_role["nodes"]:
        n.pop("role")
    cases = {
        "not a tree record": no_role,
        "not found": {**trees, "image": str(tmp_path / "missing.jpg")},
        "does not decode": {**trees, "image": str(tmp_path / "broken.jpg")},
        "but the record says 100x90": {**trees, "width": 100},
    }
    for why, rec in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(rec) + "\n")
        with ScriptedServer(Scripted()) as s:
            r = cli("annotate", path, "--backend", "openai", "--base-url", s.url)
        assert r.exit_code == 2, why
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0] and "bad.jsonl:1" in lines[0], r.stderr
        assert r.stdout == ""
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(x) + "\n" for x in [cases["not found"], trees, "just a string"]))
    with ScriptedServer(Scripted()) as s:
        r = cli("annotate", mixed, "--backend", "openai", "--base-url", s.url, "--on-error", "skip")
    assert r.exit_code == 0
    assert [json.loads(x)["image_id"] for x in r.stdout.splitlines()] == ["im0"]
    assert "1 images written, 2 failed and skipped" in r.stderr


def test_templates_are_our_own_words():
    from tests.conftest import SHARED

    paper_dir = SHARED / "paper"
    if not paper_dir.is_dir():
        pytest.skip("../shared/paper is absent")

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    paper = " ".join(" ".join(words(p.read_text(errors="ignore"))) for p in paper_dir.glob("*.txt"))
    grams = set()
    pw = paper.split()
    for i in range(len(pw) - 7):
        grams.add(" ".join(pw[i : i + 8]))
    folder = Path(__file__).resolve().parents[1] / "ureca_cli" / "prompts"
    texts = list(folder.glob("*.txt"))
    assert len(texts) >= 5
    for t in texts:
        w = words(t.read_text())
        shared = [" ".join(w[i : i + 8]) for i in range(len(w) - 7) if " ".join(w[i : i + 8]) in grams]
        assert not shared, f"{t.name} shares words with the paper: {shared[0]!r}"


def test_prompts_override_changes_text_and_version(cli, tmp_path):
    trees = write_trees(tmp_path, n=1)
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "main_phrase.txt").write_text("Name the outlined thing in three words. xyzzy\n")
    assert load_templates(custom).version != load_templates().version
    script = Scripted()
    with ScriptedServer(script) as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--prompts", custom)
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["annotate"]["prompt_version"] == load_templates(custom).version
    main = next(n for n in rec["nodes"] if n["role"] == "main")
    assert "xyzzy" in request_text(script.by_answer[main["short_caption"]])
    (custom / "paragraph.txt").write_text("Uses $nothing here\n")
    with ScriptedServer(script) as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--prompts", custom)
    assert r.exit_code == 2 and "$nothing" in r.stderr


def test_end_to_end_tiny_internvl_in_process(cli, tmp_path):
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "tiny")
    trees = write_trees(tmp_path, n=2, mains=1, fanout=(2, 1))
    r = cli("annotate", trees, "--backend", "hf", "--model", folder, "--device", "cpu", "--batch-size", "4",
            "--max-new-tokens", "6", "--max-side", "64")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["image_id"] for x in recs] == ["im0", "im1"]
    for rec in recs:
        assert rec["annotate"]["backend"] == "hf" and rec["annotate"]["model"] == str(folder)
        assert rec["annotate"]["visual"]["max_side"] == 64
        for n in captioned(rec):
            assert n["short_caption"].strip() and n["caption"] == n["long_caption"]


def test_uncompressed_counts_that_do_not_cover_the_image_are_refused(cli, tmp_path):
    """Annotate took an uncompressed RLE whose runs cover fewer pixels than its size (pycocotools filled the rest
    with garbage) where tree refuses it: the one mask rule (masks.rle) names the node, exit 2."""
    rec = read(write_trees(tmp_path, n=1))[0]
    main = next(n for n in rec["nodes"] if n["role"] == "main")
    main["rle"] = {"size": [H, W], "counts": [10, 5]}
    path = tmp_path / "short.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with ScriptedServer(Scripted()) as s:
        r = cli("annotate", path, "--backend", "openai", "--base-url", s.url)
        assert r.exit_code == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "short.jsonl:1" in lines[0] and f"node {main['id']!r}" in lines[0], lines
        assert "uncompressed RLE counts do not cover the 120x90 image" in lines[0]


def test_saved_prompts_stay_inside_their_folder(cli, tmp_path):
    """--save-prompts made folders from image ids as they were ("..", ".") or with look-alikes ("a/b" and "a_b"
    shared one): every id now has its own folder inside DIR (records.file_name)."""
    trees = read(write_trees(tmp_path, n=1))[0]
    ids = ["..", ".", "a/b", "a_b"]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps({**trees, "image_id": i}) + "\n" for i in ids))
    sent = tmp_path / "deep" / "sent"
    with ScriptedServer(Scripted()) as s:
        r = cli("annotate", path, "--backend", "openai", "--base-url", s.url, "--save-prompts", sent)
    assert r.exit_code == 0, r.stderr
    folders = sorted(p for p in sent.iterdir())
    assert len(folders) == len(ids) and all(p.is_dir() and any(p.iterdir()) for p in folders)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["sent"]  # nothing written beside DIR
