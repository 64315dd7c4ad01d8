"""`ureca refine --backend openai` against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1
serving the tiny random InternVL folder (annotate's fixture), set-of-mark images included."""

from __future__ import annotations

import json

import pytest

from tests.refine_fixtures import annotated_record, pasted_photo
from tests.test_annotate_serve import served  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def test_refine_through_transformers_serve(cli, shared_data, tmp_path, served):  # noqa: F811
    url, folder = served
    image, spots = pasted_photo(shared_data, tmp_path / "pasted.png")
    path = tmp_path / "captioned.jsonl"
    path.write_text(json.dumps(annotated_record(image, spots, "photo1")) + "\n")
    out = tmp_path / "refined.jsonl"
    r = cli("refine", path, "--backend", "openai", "--base-url", url, "--concurrency", "2", "--retries", "2",
            "--features-model", "random:dinov2-tiny", "--device", "cpu", "--threshold", "-1", "--max-similar", "2",
            "--max-new-tokens", "8", "--max-side", "96", "--flat", "-o", out)
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and all(x["caption"] and not x["caption"].startswith("long ") for x in lines)
