"""The stream contract: order, errors, resume, shards, whole lines."""

from __future__ import annotations

import time

import orjson
import pytest

from ureca_cli.errors import InputError, UrecaError
from ureca_cli.stream import (
    Item,
    JsonlWriter,
    StopRun,
    StreamConfig,
    iter_jsonl,
    ordered_map,
    parse_shard,
    run_stage,
)


def _slow_square(x: int) -> int:
    time.sleep(0.01 * (5 - x % 5))  # later items finish first
    return x * x


def _items(n: int) -> list[Item]:
    return [Item({"image_id": str(i), "v": i}, f"in:{i + 1}", orjson.dumps({"image_id": str(i), "v": i})) for i in range(n)]


def _work(rec: dict) -> dict:
    if rec["v"] == 3:
        raise InputError("v is 3", source="in", line=4)
    return {"image_id": rec["image_id"], "sq": rec["v"] ** 2}


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_ordered_map_keeps_input_order(kind):
    out = [r for _, (ok, r) in ordered_map(_slow_square, range(12), jobs=3, kind=kind)]
    assert out == [x * x for x in range(12)]


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard(None) is None
    for bad in ("4/4", "x/2", "1", "-1/3", "0/0"):
        with pytest.raises(UrecaError):
            parse_shard(bad)


def test_stop_writes_lines_before_the_bad_item(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(StopRun, match="in:4: v is 3"):
        run_stage("t", _items(6), _work, StreamConfig(output=out), input_key=lambda r: r["image_id"])
    lines = out.read_bytes().splitlines()
    assert [orjson.loads(line)["sq"] for line in lines] == [0, 1, 4]


def test_skip_counts_and_failed_file(tmp_path):
    out, failed = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    s = run_stage("t", _items(6), _work, StreamConfig(output=out, on_error="skip", failed=failed, jobs=2),
                  kind="thread")
    assert s.failed == 1 and s.written_items == 5
    assert [orjson.loads(line)["sq"] for line in out.read_bytes().splitlines()] == [0, 1, 4, 16, 25]
    assert orjson.loads(failed.read_bytes().splitlines()[0])["v"] == 3


def test_resume_skips_done_and_drops_torn_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"image_id":"0","sq":0}\n{"image_id":"1","sq":1}\n{"image_id":"2","s')
    calls = []

    def work(rec):
        calls.append(rec["image_id"])
        return {"image_id": rec["image_id"], "sq": rec["v"] ** 2}

    s = run_stage("t", _items(4), work, StreamConfig(output=out, resume=True),
                  input_key=lambda r: r["image_id"], output_key=lambda r: r["image_id"])
    assert calls == ["2", "3"] and s.resumed == 2
    assert [orjson.loads(line)["sq"] for line in out.read_bytes().splitlines()] == [0, 1, 4, 9]


def test_shard_takes_every_nth(tmp_path):
    out = tmp_path / "o.jsonl"
    run_stage("t", _items(7), lambda r: r, StreamConfig(output=out, shard=(1, 3)))
    assert [orjson.loads(x)["v"] for x in out.read_bytes().splitlines()] == [1, 4]


def test_iter_jsonl_marks_bad_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\nnot json\n{"b": 2}\n')
    items = list(iter_jsonl(p))
    assert [i.error is None for i in items] == [True, False, True]
    assert str(items[1].error).startswith(f"{p}:3: not valid JSON")


def test_writer_opens_lazily(tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    JsonlWriter(out).close()
    assert out.read_text() == "precious\n"


def test_config_checks():
    with pytest.raises(UrecaError, match="--resume needs"):
        StreamConfig(resume=True)
    with pytest.raises(UrecaError, match="--jobs"):
        StreamConfig(jobs=0)


def test_output_and_failed_paths_are_checked(tmp_path):
    with pytest.raises(UrecaError, match="-o .*: is a directory"):
        StreamConfig(output=tmp_path)
    with pytest.raises(UrecaError, match="--failed .*: is a directory"):
        StreamConfig(failed=tmp_path)
    # --failed into a folder that does not exist yet: made, as -o's is
    failed = tmp_path / "new" / "failed.jsonl"
    cfg = StreamConfig(output=tmp_path / "out" / "o.jsonl", on_error="skip", failed=failed)
    run_stage("t", _items(5), _work, cfg)
    assert failed.read_bytes() == orjson.dumps({"image_id": "3", "v": 3}) + b"\n"
    assert len((tmp_path / "out" / "o.jsonl").read_text().splitlines()) == 4


def test_unwritable_output_is_one_error(tmp_path):
    (tmp_path / "file").write_text("")
    writer = JsonlWriter(tmp_path / "file" / "o.jsonl")  # its "folder" is a file
    with pytest.raises(UrecaError, match="^-o .*o.jsonl: cannot write"):
        writer.write({"a": 1})


@pytest.mark.parametrize(
    "args, closed, needle",
    [
        (["refine", "--no-refine"], 0, "ureca refine: error: stdin is closed"),
        (["tree", "-"], 0, "ureca tree: error: stdin is closed"),
        (["score", "-", "refs.jsonl"], 0, "ureca score: error: stdin is closed"),
        (["tree", "sa_1.json"], 1, "ureca tree: error: stdout is closed: give -o FILE"),
    ],
)
def test_closed_stdin_or_stdout_is_one_error(tmp_path, args, closed, needle):
    import os
    import subprocess
    import sys

    from tests.tree_fixtures import rect, write_sa1b

    write_sa1b(tmp_path, "sa_1", [rect(8, 8, 0, 4, 0, 4)])
    proc = subprocess.run([sys.executable, "-m", "ureca_cli", *args], cwd=tmp_path, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL if closed == 0 else None, preexec_fn=lambda: os.close(closed),
                          timeout=60)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and err == err.splitlines()[0] and err.startswith(needle), err


def test_input_error_with_an_empty_source_has_no_bare_colon():
    assert str(InputError("missing field 'id'", source="")) == "missing field 'id'"
    assert str(InputError("bad", source="f.jsonl", line=3)) == "f.jsonl:3: bad"


def test_folder_options_may_not_name_a_file(tmp_path):
    from ureca_cli.curate.annotate import AnnotateConfig
    from ureca_cli.curate.refine import RefineConfig
    from ureca_cli.stream import check_output_folder

    check_output_folder("--render", tmp_path / "new")  # made later: fine
    check_output_folder("--render", tmp_path)
    (tmp_path / "f.txt").write_text("")
    for make in (lambda p: AnnotateConfig(save_prompts=p), lambda p: RefineConfig(save_prompts=p)):
        with pytest.raises(UrecaError, match="^--save-prompts .*f.txt: exists and is not a folder$"):
            make(tmp_path / "f.txt")


@pytest.mark.parametrize("args", [["refine", "--no-refine"], ["annotate", "--backend", "openai"], ["score", "-", "x"]])
def test_records_from_a_terminal_are_refused_not_awaited(tmp_path, args):
    """`ureca refine` typed alone used to sit waiting on the terminal with no word said."""
    import os
    import subprocess
    import sys

    primary, secondary = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "ureca_cli", *args], cwd=tmp_path, stdin=secondary,
                              capture_output=True, timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2 and err.endswith("error: no input: give an input file, or pipe records in "
                                                 "(stdin is a terminal)"), err


def test_missing_local_model_folder_is_named(tmp_path):
    from ureca_cli.errors import check_model_name

    check_model_name("--model", "OpenGVLab/InternVL3-1B-hf")  # a hub id: left to transformers
    check_model_name("--model", str(tmp_path))
    for name in ("./nodino", "/no/such", "~/no-such-model", "runs/a/b"):
        with pytest.raises(UrecaError, match=f"^--model {name}: no such folder$"):
            check_model_name("--model", name)


@pytest.mark.parametrize("flag", ["-o", "--failed"])
def test_writing_over_the_input_is_refused(cli, tmp_path, flag):
    """`ureca refine a.jsonl -o a.jsonl` cut a.jsonl to its first record; --failed a.jsonl appended to it."""
    rec = {"image_id": "a", "image": "a.jpg", "width": 4, "height": 4, "nodes": []}
    path = tmp_path / "a.jsonl"
    text = "".join(orjson.dumps({**rec, "image_id": str(i)}).decode() + "\n" for i in range(3))
    path.write_text(text)
    for args in (["refine", path, "--no-refine"], ["annotate", path, "--backend", "openai"],
                 ["caption", "--input", path, "--model", tmp_path]):
        res = cli(*args, flag, path)
        assert res.exit_code == 2 and f"{flag} {path} is the input file {path}: write to another file" in res.stderr
        assert path.read_text() == text


def test_dash_output_is_stdout(cli, tmp_path, monkeypatch):
    """`-o -` wrote a file named "-"."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "a.jsonl"
    path.write_text(orjson.dumps({"image_id": "a", "image": "a.jpg", "width": 4, "height": 4, "nodes": []}).decode()
                    + "\n")
    res = cli("refine", path, "--no-refine", "-o", "-")
    assert res.exit_code == 0 and orjson.loads(res.stdout)["image_id"] == "a"
    assert not (tmp_path / "-").exists()


def test_abortable_map_clears_then_sets_its_event():
    import threading

    from ureca_cli.stream import abortable_map

    abort = threading.Event()
    abort.set()  # left set by an earlier run: a second run must not start aborted
    seen = []

    def work(x):
        seen.append(abort.is_set())
        return x + 1

    assert [r for _, (ok, r) in abortable_map(work, range(5), jobs=2, abort=abort)] == [1, 2, 3, 4, 5]
    assert seen == [False] * 5 and abort.is_set()
    gen = abortable_map(work, range(100), jobs=2, abort=abort)
    next(gen)
    assert not abort.is_set()
    gen.close()  # the run stopped early: queued work sees the event
    assert abort.is_set()


def test_closed_stderr_still_writes_the_data(tmp_path):
    """`ureca tree x 2>&-` failed with exit 1 and wrote nothing (the reporter needed a stderr)."""
    import os
    import subprocess
    import sys

    from tests.tree_fixtures import rect, write_sa1b

    write_sa1b(tmp_path, "sa_1", [rect(8, 8, 0, 4, 0, 4)])
    proc = subprocess.run([sys.executable, "-m", "ureca_cli", "tree", "sa_1.json"], cwd=tmp_path,
                          stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=60)
    assert proc.returncode == 0 and orjson.loads(proc.stdout)["image_id"] == "sa_1"
    bad = subprocess.run([sys.executable, "-m", "ureca_cli", "tree", "nope.json"], cwd=tmp_path,
                         stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=60)
    assert bad.returncode == 2 and bad.stdout == b""


def test_shard_key_keeps_an_image_on_one_shard(tmp_path):
    # regions of images a, b, c, a (interleaved): shards split by image, in order of first appearance
    values = [{"image_id": im, "v": i} for i, im in enumerate("aabbcab")]
    items = [Item(v, f"in:{i + 1}", orjson.dumps(v)) for i, v in enumerate(values)]
    seen = []
    for shard in range(2):
        out = tmp_path / f"s{shard}.jsonl"
        run_stage("t", items, lambda r: r, StreamConfig(output=out, shard=(shard, 2)),
                  shard_key=lambda r: r["image_id"])
        seen.append([orjson.loads(x)["image_id"] for x in out.read_bytes().splitlines()])
    assert seen == [["a", "a", "c", "a"], ["b", "b", "b"]]
