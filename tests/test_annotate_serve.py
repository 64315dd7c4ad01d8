"""`ureca annotate --backend openai` against a real OpenAI-compatible server: `transformers serve` on
127.0.0.1 serving the tiny random InternVL folder (images included)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_annotate import captioned, write_trees

pytestmark = pytest.mark.slow


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    exe = Path(sys.executable).parent / "transformers"
    if not exe.exists():
        found = shutil.which("transformers")
        if not found:
            pytest.skip("the `transformers` CLI is not installed (extra transformers[serving])")
        exe = Path(found)
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path_factory.mktemp("served") / "tiny")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = (tmp_path_factory.mktemp("log") / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("transformers serve did not become ready within 120 s")
            time.sleep(0.5)
        yield url, folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_end_to_end_through_transformers_serve(cli, tmp_path, served):
    url, folder = served
    trees = write_trees(tmp_path, n=2, mains=1, fanout=(2, 1))
    out = tmp_path / "out.jsonl"
    r = cli("annotate", trees, "--backend", "openai", "--base-url", url, "--concurrency", "2",
            "--max-new-tokens", "8", "--max-side", "96", "--retries", "2", "-o", out)
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["image_id"] for x in recs] == ["im0", "im1"]
    for rec in recs:
        assert rec["annotate"]["backend"] == "openai" and rec["annotate"]["model"] == str(folder)
        for n in captioned(rec):
            assert n["short_caption"] and n["long_caption"] and n["caption"] == n["long_caption"]
