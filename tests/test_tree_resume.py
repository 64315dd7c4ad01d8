"""`ureca tree DIR -o out.jsonl --jobs 2` interrupted with SIGINT or SIGKILL, then `--resume`: the output
equals an uninterrupted run's, line for line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.procs import workers_gone_after_kill
from tests.tree_fixtures import blob_file

N_IMAGES = 80


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """80 SA-1B files (about 80 ragged nested masks each on 800x600) that share one image."""
    d = tmp_path_factory.mktemp("sa")
    base = orjson.loads(blob_file(d, "base", h=600, w=800, objects=20, seed=5).read_bytes())
    (d / "base.json").unlink()
    for k in range(N_IMAGES):
        base["image"]["image_id"] = 1000 + k
        (d / f"sa_{k:03d}.json").write_bytes(orjson.dumps(base))
    return d


def _ureca(*args: str) -> list[str]:
    return [sys.executable, "-m", "ureca_cli", "tree", *args]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> list[bytes]:
    out = tmp_path_factory.mktemp("ref") / "out.jsonl"
    res = _run(_ureca(str(dataset), "-o", str(out), "--jobs", "2"))
    assert res.returncode == 0, res.stderr
    lines = _lines(out)
    assert len(lines) == N_IMAGES
    return lines


def _interrupt(dataset: Path, out: Path, sig: int) -> tuple[int, str]:
    """Start the run, wait until a few lines are written, send ``sig``; return the exit status and stderr."""
    # --render makes each image slow enough (about 0.1 s) that the signal surely lands part way
    args = _ureca(str(dataset), "-o", str(out), "--jobs", "2", "--render", str(out.parent / "png"))
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_lines(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if sig in (signal.SIGINT, signal.SIGTERM):
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground group; scancel every process of a step
        else:
            os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the main process only
        err = proc.communicate(timeout=60)[1]
        return proc.returncode, err.decode()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned workers of this run, if any are left
        except ProcessLookupError:
            pass
        proc.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_then_resumed_equals_uninterrupted(dataset, reference, tmp_path, sig):
    """Ctrl-C and SIGTERM (kill, Slurm's scancel or time limit: to every process of the run) stop the run with
    whole lines written, one line saying how far it got, and exit 130 or 143; kill -9 may tear the last line."""
    out = tmp_path / "out.jsonl"
    code, err = _interrupt(dataset, out, sig)
    if sig != signal.SIGKILL:
        assert err.strip().endswith("run again with --resume -o FILE to go on") and "Traceback" not in err, err
        assert "leaked" not in err, err  # no resource tracker warnings
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}[sig]
    partial = out.read_bytes()
    whole = partial[: partial.rfind(b"\n") + 1]
    assert 0 < whole.count(b"\n") < N_IMAGES - 10, "the run was not interrupted part way"
    assert whole == b"".join(reference[: whole.count(b"\n")])  # only whole lines, in order
    if sig == signal.SIGKILL:  # a write cut short by the kill: a torn last line
        out.write_bytes(whole + reference[whole.count(b"\n")][:57])
    res = _run(_ureca(str(dataset), "-o", str(out), "--jobs", "2", "--resume"))
    assert res.returncode == 0, res.stderr
    assert "already done (--resume)" in res.stderr
    assert _lines(out) == reference


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "kill"])
def test_workers_exit_when_the_run_is_killed(dataset, tmp_path, sig):
    """`kill -9` (or plain `kill`) of `ureca tree -j 2` left its two workers alive under init."""
    out = tmp_path / "out.jsonl"
    args = _ureca(str(dataset), "-o", str(out), "--jobs", "2", "--render", str(tmp_path / "png"))
    workers_gone_after_kill(args, sig, lambda: len(_lines(out)) >= 1)
