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


def test_abortable_map_aborts_before_it_waits_for_running_items():
    """Stopped early, the map set its event only after it had waited for the items still running, so their
    requests all ran (a dead downstream or --on-error stop still sent every request of the images in flight)."""
    import threading

    from ureca_cli.stream import abortable_map

    abort = threading.Event()
    saw = []
    running = threading.Semaphore(0)

    def work(x):
        if x:
            running.release()
            saw.append(abort.wait(10))  # a running item's next request: given up once the run stops
        return x

    gen = abortable_map(work, range(3), jobs=3, abort=abort)
    assert next(gen)[0] == 0
    for _ in range(2):  # both other items are running (not merely queued, which close() would cancel)
        assert running.acquire(timeout=10)
    gen.close()
    assert saw == [True, True]


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


# ------------------------------------------------------------------------------ nothing lost (issue 11)
def _ureca(*args, **kw):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ureca_cli", *map(str, args)], capture_output=True, timeout=120,
                          **kw)


def _err_lines(text: str | bytes) -> list[str]:
    text = text.decode() if isinstance(text, bytes) else text
    return [x for x in text.splitlines() if x.strip()]


def test_repeated_keys_are_refused_naming_both_lines(tmp_path):
    """An input that repeats a resume key (an image_id) resumed to fewer lines than a run without a stop."""
    values = [{"image_id": im, "v": i} for i, im in enumerate("abca")]
    items = [Item(v, f"in:{i + 1}", orjson.dumps(v)) for i, v in enumerate(values)]
    out = tmp_path / "o.jsonl"
    cfg = StreamConfig(output=out)
    with pytest.raises(StopRun, match=r"^in:4: image_id 'a' appears twice \(first at in:1\)"):
        run_stage("t", items, lambda r: r, cfg, input_key=lambda r: r["image_id"], key_name="image_id")
    assert [orjson.loads(x)["v"] for x in out.read_bytes().splitlines()] == [0, 1, 2]
    # resumed after "a": the same refusal, and the lines an uninterrupted run wrote
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(StopRun, match=r"^in:4: image_id 'a' appears twice \(first at in:1\)"):
        run_stage("t", items, lambda r: r, StreamConfig(output=out, resume=True), input_key=lambda r: r["image_id"],
                  output_key=lambda r: r["image_id"], key_name="image_id")
    assert [orjson.loads(x)["v"] for x in out.read_bytes().splitlines()] == [0, 1, 2]
    s = run_stage("t", items, lambda r: r, StreamConfig(output=out, on_error="skip"),
                  input_key=lambda r: r["image_id"], key_name="image_id")
    assert (s.written_items, s.failed) == (3, 1)


def test_refine_refuses_a_repeated_image_id(cli, tmp_path):
    rec = {"image_id": "a", "image": "a.jpg", "width": 4, "height": 4, "nodes": []}
    path = tmp_path / "in.jsonl"
    path.write_text("".join(orjson.dumps({**rec, "image_id": i}).decode() + "\n" for i in "aba"))
    res = cli("refine", path, "--no-refine", "-o", tmp_path / "o.jsonl")
    assert res.exit_code == 2
    assert _err_lines(res.stderr) == [f"ureca refine: error: {path}:3: image_id 'a' appears twice (first at {path}:1); "
                                      "an input may hold each image_id once, so that --resume can tell them apart"]


@pytest.mark.parametrize("line", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_resume_over_a_line_that_is_not_an_object(cli, tmp_path, line):
    """--resume over an output file holding a JSON line that is not an object: `unexpected AttributeError`."""
    from tests.tree_fixtures import rect, write_sa1b

    sa = write_sa1b(tmp_path, "sa_1", [rect(8, 8, 0, 4, 0, 4)])
    rec = {"image_id": "a", "image": "a.jpg", "width": 4, "height": 4, "nodes": []}
    records = tmp_path / "in.jsonl"
    records.write_text(orjson.dumps(rec).decode() + "\n")
    out = tmp_path / "out.jsonl"
    for args in (["tree", sa], ["refine", records, "--no-refine"], ["refine", records, "--no-refine", "--flat"],
                 ["annotate", records, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
                 ["caption", "--input", records, "--region-prompt", "contour", "--backend", "openai", "--base-url",
                  "http://127.0.0.1:9/v1", "--model", "m"]):
        out.write_bytes(orjson.dumps(rec) + b"\n" + line + b"\n")
        res = cli(*args, "-o", out, "--resume")
        assert res.exit_code == 2, (args, res.stderr)
        assert _err_lines(res.stderr) == [f"ureca {args[0]}: error: {out}:2: --resume found a line that is not a "
                                          f"JSON object; -o names another file than this stage's output?"], args


def test_a_full_disk_names_the_output_file(tmp_path):
    from tests.tree_fixtures import rect, write_sa1b

    sa = write_sa1b(tmp_path, "sa_1", [rect(8, 8, 0, 4, 0, 4)])
    res = _ureca("tree", sa, "-o", "/dev/full")
    assert res.returncode == 2
    assert _err_lines(res.stderr) == ["ureca tree: error: -o /dev/full: cannot write (No space left on device)"]
    res = _ureca("tree", tmp_path / "nope.json", sa, "--on-error", "skip", "--failed", "/dev/full")
    assert res.returncode == 2
    assert _err_lines(res.stderr)[-1] == "ureca tree: error: --failed /dev/full: cannot write (No space left on " \
                                         "device)"


def _flat_input(tmp_path, images: int = 3, nodes: int = 4):
    rle = {"size": [4, 4], "counts": "04"}
    recs = [{"image_id": f"im{i}", "image": "a.jpg", "width": 4, "height": 4,
             "nodes": [{"id": k, "rle": rle, "role": "main", "parent": None, "caption": f"region {k} of {i} " * 20}
                       for k in range(nodes)]} for i in range(images)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in recs))
    return path


def test_a_short_write_keeps_whole_images_and_resume_finishes(tmp_path):
    """Past a file-size limit part of one image's region lines stayed on disk (the write was short, and the rest
    then failed with EFBIG), and --resume took the image as done: its other lines were lost."""
    import os
    import resource

    path = _flat_input(tmp_path)
    whole = tmp_path / "whole.jsonl"
    assert _ureca("refine", path, "--no-refine", "--flat", "-o", whole).returncode == 0
    lines = whole.read_bytes().splitlines(keepends=True)
    assert len(lines) == 12
    first = len(b"".join(lines[:4]))  # the first image's four lines
    for limit in (first + len(lines[4]), first + len(lines[4]) + 7):  # on a line boundary, and inside a line
        out = tmp_path / "out.jsonl"
        out.unlink(missing_ok=True)

        def cap(limit=limit):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        res = _ureca("refine", path, "--no-refine", "--flat", "-o", out, preexec_fn=cap,
                     env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        assert res.returncode == 2
        assert _err_lines(res.stderr) == [f"ureca refine: error: -o {out}: cannot write (File too large); it keeps "
                                          f"the 1 image written whole: run again with --resume to go on"]
        assert out.read_bytes() == b"".join(lines[:4])  # image 0 whole, nothing of image 1
        res = _ureca("refine", path, "--no-refine", "--flat", "-o", out, "--resume")
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == whole.read_bytes()


def test_resume_after_a_torn_write_redoes_the_whole_image(tmp_path):
    """A run killed in the middle of writing one image's region lines: --resume drops that image's lines, not
    only the torn last one, and writes it again whole."""
    path = _flat_input(tmp_path)
    whole = tmp_path / "whole.jsonl"
    assert _ureca("refine", path, "--no-refine", "--flat", "-o", whole).returncode == 0
    data = whole.read_bytes()
    lines = data.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    # cut inside image 1's third line: image 1 goes; cut inside its first line: image 0, whole, goes with it
    # (the torn bytes cannot say which image they began), and is written again
    for cut, rewritten in ((len(b"".join(lines[:6])) + 5, 2), (len(b"".join(lines[:4])) + 5, 3)):
        out.write_bytes(data[:cut])
        res = _ureca("refine", path, "--no-refine", "--flat", "-o", out, "--resume")
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == data
        assert f"refine: {rewritten} images written ({rewritten * 4} records)".encode() in res.stderr


def test_skip_exits_non_zero_when_nothing_succeeded(cli, tmp_path):
    """`--on-error skip` exited 0 when every image failed."""
    res = cli("tree", tmp_path / "nope1.json", tmp_path / "nope2.json", "--on-error", "skip")
    assert res.exit_code == 2
    assert _err_lines(res.stderr)[-1].startswith("ureca tree: 0 images written, 2 failed and skipped in ")
    assert _err_lines(res.stderr)[-1].endswith(": every image failed")


def test_summary_counts_in_words(tmp_path, capsys):
    one = [Item({"image_id": "a", "v": 1}, "in:1", b"{}")]
    run_stage("t", one, lambda r: [r] * 11, StreamConfig(output=tmp_path / "a.jsonl"), unit="inputs")
    run_stage("t", one, lambda r: r, StreamConfig(output=tmp_path / "b.jsonl"))
    run_stage("t", _items(2), lambda r: [r], StreamConfig(output=tmp_path / "c.jsonl"))
    err = [x.split(" in ")[0] for x in _err_lines(capsys.readouterr().err)]
    assert err == ["ureca t: 1 input written (11 records)", "ureca t: 1 image written", "ureca t: 2 images written"]


def test_interrupt_counts_what_the_file_holds(tmp_path, monkeypatch, capsys):
    """A Ctrl-C that lands just after an image's write counted one image fewer than the file held."""
    import os
    import signal
    import threading

    from ureca_cli import output as O

    real = O._open_for_append

    class Interrupting:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, data):
            n = self.fh.write(data)
            self.n += 1
            if self.n == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return n

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(O, "_open_for_append", lambda *a, **k: Interrupting(real(*a, **k)))
    out = tmp_path / "o.jsonl"
    idle = threading.Event()  # a second thread, as every real run has: the kernel may hand it the signal
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage("t", _items(8), lambda r: {"image_id": r["image_id"]}, StreamConfig(output=out))
    finally:
        idle.set()
    held = len(out.read_bytes().splitlines())
    assert held == 3
    assert f"interrupted after {held} images written" in capsys.readouterr().err


def test_a_dead_downstream_stops_tree_with_one_line(tmp_path):
    """`ureca tree d/ | true`: the reader of stdout is gone; one line, exit 141, no traceback."""
    import subprocess
    import sys

    from tests.tree_fixtures import rect, write_sa1b

    for k in range(4):
        write_sa1b(tmp_path / "d", f"sa_{k}", [rect(8, 8, 0, 4, 0, 4)])
    down = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    down.wait()
    res = subprocess.run([sys.executable, "-m", "ureca_cli", "tree", tmp_path / "d"], stdout=down.stdin,
                         stderr=subprocess.PIPE, timeout=60)
    down.stdin.close()
    assert res.returncode == 141
    assert _err_lines(res.stderr) == ["ureca tree: error: stdout's reader is gone (did the next stage in the pipe "
                                      "stop?): stopped with 0 images written, 0 in flight lost"], res.stderr


def test_a_sigterm_held_during_a_write_still_ends_a_process_that_did_not_handle_it():
    """Outside the CLI (a stage called from Python) SIGTERM keeps its default: the write is not a place where
    it is lost. Inside the CLI it is held and raised as the write ends (test_tree_resume)."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import os, signal\nfrom ureca_cli.output import _no_interrupt\n"
            "with _no_interrupt(True):\n    os.kill(os.getpid(), signal.SIGTERM)\nprint('still alive')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == -signal.SIGTERM and "still alive" not in r.stdout, (r.returncode, r.stdout, r.stderr)
