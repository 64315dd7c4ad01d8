"""scripts/slurm_curate.sh under a stand-in sbatch environment: every task of a small array, the documented
merge, one run over all inputs, --resume on a rerun task, and how the steps' settings reach `ureca`."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, SHARED_DATA
from tests.servers.chat import ScriptedServer, request_text
from tests.tree_fixtures import blob_file

SCRIPT = ROOT / "scripts" / "slurm_curate.sh"
UR = f"{shlex.quote(sys.executable)} -m ureca_cli"  # this checkout's ureca, whatever is installed


def env(**extra: str) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "URECA"))}
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(extra)
    return out


def task(cwd: Path, k: int, n: int, inputs: list, **extra: str) -> subprocess.CompletedProcess:
    """One array task, as sbatch would start it (with SLURM_ARRAY_TASK_ID/COUNT set)."""
    e = env(**{"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": str(n), **extra})
    return subprocess.run(["bash", str(SCRIPT), *map(str, inputs)], cwd=cwd, env=e, capture_output=True, text=True)


def ureca(cwd: Path, *args) -> None:
    r = subprocess.run([sys.executable, "-m", "ureca_cli", *map(str, args)], cwd=cwd, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def documented_merge() -> str:
    """The merge line of the script's header, as a user would copy it."""
    lines = [ln[1:].strip() for ln in SCRIPT.read_text().splitlines() if ln.startswith("#   cat ureca-curate/")]
    assert len(lines) == 1, lines
    return lines[0].split("#")[0].strip()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """Seven SA-1B JSON files (an array of 3 then splits them 2, 2, 3): the shared conformance files where
    present, else nested blobs made by the tree fixtures."""
    shared = SHARED_DATA / "trees"
    if shared.is_dir():
        return [shared / f"sa_90000{k}.json" for k in range(7)]
    folder = tmp_path_factory.mktemp("sa1b")
    return [blob_file(folder, f"sa_{k}", h=90, w=120, objects=2, seed=k) for k in range(7)]


def answer(body: dict) -> str:
    """The same answer for the same request, whichever run or task sends it."""
    text = request_text(body)
    kind = "para" if "one paragraph" in text else "phrase"
    return f"{kind} {hashlib.sha1(text.encode()).hexdigest()[:10]}"


def test_array_merge_equals_one_run_and_a_rerun_task_changes_nothing(tmp_path, inputs):
    with ScriptedServer(answer) as server:
        steps = {"URECA": UR, "URECA_STEPS": "tree annotate", "URECA_BASE_URL": server.url,
                 "URECA_ANNOTATE_ARGS": "--prepare-workers 0"}  # prompt images drawn in threads: a faster start
        for k in range(3):
            r = task(tmp_path, k, 3, inputs, **steps)
            assert r.returncode == 0, r.stderr
        out = tmp_path / "ureca-curate"
        assert sorted(p.name for p in out.glob("task.*.done")) == [f"task.00000{k}.done" for k in range(3)]
        counts = [len((out / f"tree.00000{k}.jsonl").read_bytes().splitlines()) for k in range(3)]
        assert counts == [2, 2, 3]  # contiguous blocks of the 7 inputs

        # the documented one-liner, run as written in the header
        merge = documented_merge()
        subprocess.run(["bash", "-c", merge], cwd=tmp_path, check=True)
        merged_trees = tmp_path / merge.split(">")[1].strip()
        subprocess.run(["bash", "-c", merge.replace("tree.*", "annotate.*").replace("trees.jsonl", "ann.jsonl")],
                       cwd=tmp_path, check=True)

        # one run over all inputs, without the script
        ureca(tmp_path, "tree", *inputs, "-o", "one_tree.jsonl")
        ureca(tmp_path, "annotate", "one_tree.jsonl", "--backend", "openai", "--base-url", server.url,
              "--prepare-workers", "0", "-o", "one_ann.jsonl")
        # byte-identical: records hold no time or host, tree is deterministic, the scripted answers depend on
        # the request only, and blocks keep the input order
        assert merged_trees.read_bytes() == (tmp_path / "one_tree.jsonl").read_bytes()
        assert (tmp_path / "ann.jsonl").read_bytes() == (tmp_path / "one_ann.jsonl").read_bytes()
        assert [orjson.loads(x)["source"] for x in merged_trees.read_bytes().splitlines()] == [
            os.path.abspath(p) for p in inputs]

        before = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
        served = server.count
        # task 1 submitted again alone (sbatch --array=1 sets these), with the whole array's size
        again = {"SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "1", "URECA_TASKS": "3"}
        r = task(tmp_path, 1, 3, inputs, **steps, **again)  # --resume finds it all done
        assert r.returncode == 0, r.stderr
        assert "0 images written, 2 already done (--resume)" in r.stderr
        assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == before
        assert server.count == served  # not one request sent again


def test_array_over_tar_shards_merge_equals_one_run(tmp_path, inputs):
    """SA-1B as it is distributed: the seven images packed into three tar shards (3, 2, 2 images), an array of
    two tasks (one shard, then two) running tree and annotate on them in place; the merge is one run's output."""
    import tarfile

    folder = tmp_path / "sa1b"
    folder.mkdir()
    shards = []
    for k, (lo, hi) in enumerate(((0, 3), (3, 5), (5, 7))):
        shards.append(folder / f"sa_{k:06d}.tar")
        with tarfile.open(shards[-1], "w", format=tarfile.GNU_FORMAT) as tf:
            for js in inputs[lo:hi]:  # SA-1B's order: each image, then its JSON
                image = js.parent / orjson.loads(js.read_bytes())["image"]["file_name"]
                tf.add(image, arcname=image.name)
                tf.add(js, arcname=js.name)
    with ScriptedServer(answer) as server:
        steps = {"URECA": UR, "URECA_STEPS": "tree annotate", "URECA_BASE_URL": server.url,
                 "URECA_ANNOTATE_ARGS": "--prepare-workers 0"}
        for k in range(2):
            r = task(tmp_path, k, 2, shards, **steps)
            assert r.returncode == 0, r.stderr
        merge = documented_merge()
        subprocess.run(["bash", "-c", merge], cwd=tmp_path, check=True)
        subprocess.run(["bash", "-c", merge.replace("tree.*", "annotate.*").replace("trees.jsonl", "ann.jsonl")],
                       cwd=tmp_path, check=True)
        ureca(tmp_path, "tree", folder, "-o", "one_tree.jsonl")  # the folder of shards, in one run
        ureca(tmp_path, "annotate", "one_tree.jsonl", "--backend", "openai", "--base-url", server.url,
              "--prepare-workers", "0", "-o", "one_ann.jsonl")
    out = tmp_path / "ureca-curate"
    assert [len((out / f"tree.00000{k}.jsonl").read_bytes().splitlines()) for k in range(2)] == [3, 4]
    assert (tmp_path / "trees.jsonl").read_bytes() == (tmp_path / "one_tree.jsonl").read_bytes()
    assert (tmp_path / "ann.jsonl").read_bytes() == (tmp_path / "one_ann.jsonl").read_bytes()
    recs = [orjson.loads(x) for x in (tmp_path / "ann.jsonl").read_bytes().splitlines()]
    assert [r["source"].split("#")[1].split("@")[0] for r in recs] == [p.name for p in inputs]
    assert all(r["image"].startswith(f"{folder}/sa_00000") and "#" in r["image"] for r in recs)


def test_a_failed_task_resumes_alone(tmp_path, inputs):
    fix = tmp_path / "fix"
    fix.mkdir()
    good = inputs[3].read_bytes()
    image = inputs[3].parent / orjson.loads(good)["image"]["file_name"]
    (fix / image.name).write_bytes(image.read_bytes())
    bad = fix / "sa_bad.json"
    bad.write_text("{not json")
    listed = [*inputs[:3], bad, *inputs[3:]]  # 8 inputs: task 1 of 3 takes inputs 2..4 and fails at the bad one
    r = task(tmp_path, 1, 3, listed, URECA=UR)
    assert r.returncode == 2 and f"{bad}: not valid JSON" in r.stderr
    out = tmp_path / "ureca-curate"
    assert len((out / "tree.000001.jsonl").read_bytes().splitlines()) == 1  # the image before the bad one
    assert not (out / "task.000001.done").exists()
    bad.write_bytes(good)  # repaired: the same task, submitted again, goes on from where it stopped
    r = task(tmp_path, 1, 3, listed, URECA=UR)
    assert r.returncode == 0, r.stderr
    assert "2 images written, 1 already done (--resume)" in r.stderr
    assert (out / "task.000001.done").exists()


STAND_IN = """#!/usr/bin/env bash
# a stand-in `ureca`: logs its arguments, one call a line, and leaves an empty output file
printf '%s\\n' "$*" >> "$LOG"
while [ $# -gt 0 ]; do [ "$1" = -o ] && : >> "$2"; shift; done
"""


def test_settings_reach_each_step(tmp_path):
    fake = tmp_path / "fake-ureca"
    fake.write_text(STAND_IN)
    log = tmp_path / "calls.log"
    settings = {"URECA": f"bash {fake}", "LOG": str(log), "URECA_OUT": "out", "URECA_STEPS": "tree annotate refine",
                "URECA_BASE_URL": "http://a:8000/v1 http://b:8000/v1", "URECA_MODEL": "m1", "URECA_JOBS": "4",
                "URECA_ON_ERROR": "skip", "URECA_TREE_ARGS": "--parent-rule first",
                "URECA_REFINE_ARGS": "--features masked-pool --verify"}
    r = task(tmp_path, 1, 3, ["s0.tar", "s1.tar", "s2.tar", "s3.tar"], **settings)
    assert r.returncode == 0, r.stderr
    chat = "--backend openai --base-url http://a:8000/v1 --base-url http://b:8000/v1 --model m1"
    assert log.read_text().splitlines() == [  # task 1 of 3: input 1 of 4, passed on unchanged
        "tree s1.tar --jobs 4 -o out/tree.000001.jsonl --resume --no-progress --on-error skip "
        "--failed out/tree.000001.failed --parent-rule first",
        f"annotate out/tree.000001.jsonl {chat} -o out/annotate.000001.jsonl --resume --no-progress "
        "--on-error skip --failed out/annotate.000001.failed",
        f"refine out/annotate.000001.jsonl {chat} -o out/refine.000001.jsonl --resume --no-progress "
        "--on-error skip --failed out/refine.000001.failed --features masked-pool --verify",
    ]
    # more tasks than inputs: an empty task still leaves its (empty) files, so the merge stays whole
    log.unlink()
    r = task(tmp_path, 3, 5, ["s0.tar", "s1.tar"], **settings)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "tree.000003.jsonl").read_bytes() == b""
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["annotate", "refine"]


@pytest.mark.parametrize("extra, message", [
    ({"URECA_STEPS": "annotate tree"}, "steps run in the order tree annotate refine"),
    ({"URECA_STEPS": "tree caption"}, "unknown step 'caption'"),
    ({"URECA_STEPS": "refine"}, "refine reads out/annotate.000000.jsonl, which no earlier run of task 0 wrote: add annotate"),
    ({"URECA_ON_ERROR": "ignore"}, "URECA_ON_ERROR=ignore: choose stop or skip"),
    ({"SLURM_ARRAY_TASK_STEP": "2"}, "submit the whole array as --array=0-2 (this one starts at 0, step 2)"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, "task 3 is outside the array of 3 tasks (0..2)"),
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "7", "SLURM_ARRAY_TASK_COUNT": "1"},  # sbatch --array=7
     "set URECA_TASKS to the whole array's size"),
    ({"SLURM_ARRAY_TASK_ID": "7", "URECA_TASKS": "5"}, "task 7 is outside the array of 5 tasks"),
])
def test_bad_settings_are_one_line(tmp_path, extra, message):
    e = {"URECA": "false", "URECA_OUT": "out"} | extra
    k = int(e.pop("SLURM_ARRAY_TASK_ID", 0))
    r = task(tmp_path, k, 3, ["a.tar"], **e)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # refused before any work
    assert r.returncode == 2 and r.stderr.startswith("slurm_curate: error: ") and r.stderr.count("\n") == 1
    assert message in r.stderr


def test_unset_array_variables(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "a.tar"], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert r.returncode == 2 and "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set" in r.stderr
