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
    missing = {**cases["not found"], "image_id": "gone"}  # its own image: a repeated image_id is refused
    mixed.write_text("".join(json.dumps(x) + "\n" for x in [missing, trees, "just a string"]))
    with ScriptedServer(Scripted()) as s:
        r = cli("annotate", mixed, "--backend", "openai", "--base-url", s.url, "--on-error", "skip")
    assert r.exit_code == 0
    assert [json.loads(x)["image_id"] for x in r.stdout.splitlines()] == ["im0"]
    assert "1 image written, 2 failed and skipped" in r.stderr


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


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"], ids=["kill-9", "kill"])
def test_prepare_workers_exit_when_annotate_is_killed(tmp_path, sig):
    """`kill -9` (or plain `kill`) of `ureca annotate` left its prepare workers alive under init."""
    import os
    import signal
    import sys

    from tests.procs import workers_gone_after_kill

    trees = write_trees(tmp_path, n=8)
    with ScriptedServer(Scripted(), delay=0.3) as s:
        args = [sys.executable, "-m", "ureca_cli", "annotate", str(trees), "--backend", "openai", "--base-url",
                s.url, "--prepare-workers", "2", "--concurrency", "2", "-o", str(tmp_path / "out.jsonl")]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        workers_gone_after_kill(args, getattr(signal, sig), lambda: len(s.requests) >= 1, env=env)



def _annotate_into(downstream: list[str], trees: Path, url: str, *, on_exit=None,
                   wait_first: bool = False) -> tuple[int, list[str]]:
    """`ureca annotate TREES --backend openai ... | DOWNSTREAM`, the two processes joined by a pipe;
    ``on_exit()`` is called the moment the downstream exits (with ``wait_first``, before annotate starts).
    Returns annotate's exit status and stderr lines."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    read_end, write_end = os.pipe()
    down = subprocess.Popen(downstream, stdin=read_end, stdout=subprocess.DEVNULL)
    os.close(read_end)

    def watch() -> None:
        down.wait(timeout=120)
        if on_exit is not None:
            on_exit()

    watcher = threading.Thread(target=watch)
    watcher.start()
    if wait_first:
        watcher.join(timeout=30)
    up = subprocess.Popen([sys.executable, "-m", "ureca_cli", "annotate", str(trees), "--backend", "openai",
                           "--base-url", url, "--concurrency", "2", "--images-in-flight", "4"],
                          stdout=write_end, stderr=subprocess.PIPE, env=env)
    os.close(write_end)
    try:
        err = up.communicate(timeout=120)[1].decode()
    finally:
        up.kill()
        down.kill()
        watcher.join(timeout=30)
    return up.returncode, [x for x in err.splitlines() if x.strip()]


def test_a_dead_downstream_stops_annotate_at_once(tmp_path):
    """`ureca annotate ... | true` made every request, wrote nothing anywhere and exited 0 with no word."""
    trees = write_trees(tmp_path, n=12, mains=1, fanout=(2,))
    with ScriptedServer(Scripted(), delay=0.2) as s:
        code, err = _annotate_into(["true"], trees, s.url, wait_first=True)
    assert code == 141 and s.count == 0, (code, s.count)
    assert err == ["ureca annotate: error: stdout's reader is gone (did the next stage in the pipe stop?): stopped "
                   "with 0 images written, 0 in flight lost"], err


def test_a_downstream_that_exits_part_way_stops_annotate(tmp_path):
    """A next stage that dies part way: annotate makes no more requests than were in flight when it died (at
    most --concurrency), says how many images were written and lost, and exits 141."""
    import sys
    import time

    trees = write_trees(tmp_path, n=12, mains=1, fanout=(2,))
    total = sum(count_requests(plan_record(x, "x"))[0] for x in read(trees))
    at_exit = []
    with ScriptedServer(Scripted(), delay=0.2) as s:
        reader = [sys.executable, "-c", "import sys; sys.stdin.buffer.readline()"]  # one image, then it exits
        code, err = _annotate_into(reader, trees, s.url, on_exit=lambda: at_exit.append(s.count))
        time.sleep(0.3)  # a request sent late would have arrived by now
        final = s.count
    assert code == 141, err
    assert len(err) == 1 and err[0].startswith("ureca annotate: error: stdout's reader is gone (did the next stage "
                                               "in the pipe stop?): stopped with "), err
    assert final <= at_exit[0] + 2 < total, (final, at_exit, total)


def test_the_api_key_and_url_password_are_never_shown(cli, tmp_path, monkeypatch):
    """A server that echoes the credentials it gets (in its answers and model name, or in a 401 message): no line
    on stderr, record, --failed file or saved prompt holds the key (read from OPENAI_API_KEY by default) or the
    password of --base-url."""
    import base64

    from tests.servers.chat import leaks, with_credentials

    key = "sk-annotate-secret-4242"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    trees = write_trees(tmp_path, n=2)
    out, failed, saved = tmp_path / "out.jsonl", tmp_path / "failed.jsonl", tmp_path / "prompts"
    with ScriptedServer(Scripted(), echo_auth="answer") as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--save-prompts", saved, "-o", out)
        assert r.exit_code == 0, r.stderr
        assert s.headers[0]["Authorization"] == f"Bearer {key}"
    assert "(sent with Bearer ***)" in read(out)[0]["nodes"][0]["caption"]
    assert any(saved.rglob("*.jpg"))
    assert leaks([key], r.stderr, r.stdout, out, saved) == []
    with ScriptedServer(Scripted(), echo_auth="401") as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", s.url, "--on-error", "skip",
                "--failed", failed, "-o", tmp_path / "none.jsonl")
    assert "HTTP 401" in r.stderr and "Bearer ***" in r.stderr and len(read(failed)) == 2
    assert leaks([key], r.stderr, r.stdout, failed) == []
    basic = base64.b64encode(b"alice:pa55word").decode()
    with ScriptedServer(Scripted(), echo_auth="401") as s:
        r = cli("annotate", trees, "--backend", "openai", "--base-url", with_credentials(s.url, "alice", "pa55word"))
    assert r.exit_code == 2 and "alice:***@127.0.0.1" in r.stderr and f"Basic {basic}" not in r.stderr
    assert leaks([key, "pa55word", basic], r.stderr) == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_that_are_not_finite_are_refused_at_once(cli, tmp_path, value):
    """--timeout inf/nan and --blur-sigma nan were taken (a nan sigma blurs nothing, an infinite timeout waits
    forever): one line naming the option, before any input is read or any server asked."""
    never = tmp_path / "never_read.jsonl"
    for flag in ("--timeout", "--blur-sigma"):
        for backend in (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
                        ["--backend", "hf", "--model", str(tmp_path / "no_model")]):
            r = cli("annotate", never, *backend, flag, value)
            lines = r.stderr.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1, r.stderr
            assert lines[0].startswith(f"ureca annotate: error: {flag} {value}: ") and "finite" in lines[0], lines


def test_hf_backend_never_unpickles_a_model(cli, tmp_path):
    """--backend hf on a folder whose weights are a pickle only (pytorch_model.bin): one line saying how to convert
    it; the pickle is never unpickled, nor even opened."""
    from tests.pickles import never_opened, plant_pickle
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "vl")
    planted = plant_pickle(folder)
    trees = write_trees(tmp_path, n=1)
    with never_opened(planted):
        r = cli("annotate", trees, "--backend", "hf", "--model", folder, "--device", "cpu")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert str(planted) in lines[0] and "never unpickles" in lines[0] and "save_pretrained" in lines[0], lines[0]
    assert not (folder / "UNPICKLED").exists()


def test_unreachable_server_fails_before_the_input_is_read(cli, tmp_path):
    """One check of /v1/models up front, naming the URL (its password masked), before any input is read: the
    input here would fail to parse, so an error about it means the input was read first."""
    from tests.servers.chat import with_credentials

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    port = _free_port()
    url = with_credentials(f"http://127.0.0.1:{port}/v1", "alice", "pa55word")
    r = cli("annotate", bad, "--backend", "openai", "--base-url", url, "--model", "m")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert f"http://alice:***@127.0.0.1:{port}/v1/models" in lines[0] and "cannot reach" in lines[0], lines[0]
    assert "bad.jsonl" not in lines[0] and "pa55word" not in r.stderr
    with ScriptedServer(Scripted(), echo_auth="401-all") as s:  # a server that refuses us: its answer, at once
        r = cli("annotate", bad, "--backend", "openai", "--base-url", s.url, "--model", "m")
    assert r.exit_code == 2 and "HTTP 401" in r.stderr and "bad.jsonl" not in r.stderr, r.stderr
    assert "Bearer" not in r.stderr or "Bearer ***" in r.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hf_backend_damaged_model_is_one_line(cli, tmp_path):
    """--backend hf on a folder whose model.safetensors is cut short: one line naming the folder, exit 2."""
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "vl")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    r = cli("annotate", write_trees(tmp_path, n=1), "--backend", "hf", "--model", folder, "--device", "cpu")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert f"--model {folder}: cannot load it" in lines[0] and "unexpected" not in lines[0], lines[0]


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
