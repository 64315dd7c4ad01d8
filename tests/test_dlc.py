"""DLC-Bench judging (`ureca score preds DLC-bench/ --judge-base-url URL`): the benchmark's choice parser, its
recognition question, Pos/Neg/Avg computed by hand for scripted answers (recognition cap included), the prompts
the judge receives, the on-disk answer cache, a failed request, and `transformers serve` as a real judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.servers.chat import FaultProxy, ScriptedServer, request_text
from ureca_cli.evaluate import dlc as D

BENCH = Path(__file__).resolve().parent / "data" / "benchmarks" / "dlc"
QA = json.loads((BENCH / "qa.json").read_text())
CLASSES = json.loads((BENCH / "class_names.json").read_text())
CAPTIONS = {"3001": "A grey bird with spread wings flies over the water.",
            "3002": "A small white boat with a red sail.",
            "3003": "A pair of shoes with white laces.",
            "3004": "A yellow vehicle on a road.",
            "3005": "A lamp on a pole."}

# (annotation id, question index: 0 is the recognition question) -> the judge's answer
SCRIPT = {
    ("3001", 0): "A. Yes",
    ("3001", 1): "D. The color of the wing is mentioned in the description and is grey or brown.",  # 1
    ("3001", 2): "B",  # 0.5
    ("3001", 3): "A",  # 1
    ("3001", 4): "The boats are mentioned in the description.",  # -1
    ("3002", 0): "No",  # not recognised: its values are capped at 0
    ("3002", 1): "D",  # 1 -> 0
    ("3002", 2): "B. The sails of the boat are mentioned in the description.",  # -1 stays -1
    ("3003", 0): "yes",
    ("3003", 1): "The color of the laces is not mentioned, but the laces of the shoes is mentioned.",  # 0.5
    ("3003", 2): "C.",  # -1
    ("3003", 3): "A",  # 1
    ("3004", 0): "B. No",  # not recognised
    ("3004", 1): "C",  # -1 stays -1
    ("3004", 2): "B",  # -1 stays -1
    ("3005", 0): "A",
    ("3005", 1): "no idea",  # matches no choice: 0
}
# by hand, per region (pos, neg): 3001 (1 + 0.5) / 2 = 0.75, (1 - 1) / 2 = 0; 3002 0 / 1 = 0, -1; 3003
# (0.5 - 1) / 2 = -0.25, 1; 3004 -1, -1; 3005 0, none. Pos = (0.75 + 0 - 0.25 - 1 + 0) / 5 = -0.1;
# Neg = (0 - 1 + 1 - 1) / 4 = -0.25; Avg = (Pos + Neg) / 2.
EXPECTED = {"Pos": -10.0, "Neg": -25.0, "Avg": -17.5}
WITHOUT_CAP = {"Pos": 10.0}  # 3002's positive would count 1, the others are unchanged


def _questions(key: str) -> list[dict]:
    return [D.recognition_question(CLASSES[key]), *QA[key]]


def scripted_answer(seen: list) -> callable:
    """The judge: finds the one region whose caption the prompt carries and the one question (with its lettered
    choices) it asks, records it, and answers from SCRIPT."""
    def answer(body: dict) -> str:
        text = request_text(body)
        keys = [k for k, c in CAPTIONS.items() if f"\n{c}\n" in text]
        assert len(keys) == 1, text
        key = keys[0]
        asked = [i for i, q in enumerate(_questions(key)) if D.question_text(q) in text]
        assert len(asked) == 1, text  # the question and its choices, in full
        seen.append((key, asked[0]))
        assert body["temperature"] == 0 and body["max_tokens"] == 300
        return SCRIPT[(key, asked[0])]
    return answer


# ------------------------------------------------------------------------------------------- units
@pytest.mark.parametrize("answer, choices, want", [
    ("B", ["Yes", "No"], 1),
    ("b. no", ["Yes", "No"], 1),
    ("No", ["Yes", "No"], 1),
    ("The answer is: the wing is red.", ["the wing is red.", "the wing is blue."], 0),  # one choice inside
    ("C. The shape is round", ["xx", "yy", "c. the shape"], 2),  # the one choice found inside
    ("A. something else entirely", ["xx", "qq"], 0),  # a leading "<letter>."
    ("a. one two", ["one", "two"], 0),  # a leading "<letter>." before the last of several found inside
    ("not mentioned, or mentioned and red", ["mentioned and red", "not mentioned"], 0),  # the one starting last
    ("mentioned", ["not mentioned at all here", "mentioned in it"], 0),  # the longest holding the answer
    ("d\nbecause", ["pp", "qq", "rr", "tt"], 3),  # a letter and a line break
    ("E.", ["Yes", "No"], None),  # a letter past the choices
    ("E. no", ["Yes", "No"], 1),  # ... but a choice found inside comes first
    ("z", ["Yes", "No"], None),
    ("  ", ["Yes", "No"], None),
])
def test_parse_choice_follows_the_benchmark_rules(answer, choices, want):
    assert D.parse_choice(answer, choices) == want


def test_recognition_question_article_and_plural():
    pytest.importorskip("inflect")
    assert "is a wild bird or an object of a similar type" in D.recognition_question("wild bird")["question"]
    assert "is an apple or" in D.recognition_question("apple")["question"]
    assert "the objects in the description are shoes or objects" in D.recognition_question("shoes")["question"]
    assert "is a bus or" in D.recognition_question("bus")["question"]  # inflect would call it plural


def test_scores_by_hand_with_the_recognition_cap(monkeypatch):
    pytest.importorskip("inflect")
    regions = [D.score_region(_questions(k), [SCRIPT[(k, i)] for i in range(len(_questions(k)))]) for k in QA]
    got = D.summarize(regions)
    for name, value in EXPECTED.items():
        assert got[name] == pytest.approx(value)
    assert [r["recognised"] for r in regions] == [True, False, True, False, True]
    assert regions[1]["questions"][1] == {**regions[1]["questions"][1], "value": 0, "raw_value": 1}
    monkeypatch.setattr(D, "CAP", False)  # the same answers without the cap: the figures the cap changes differ
    uncapped = D.summarize([D.score_region(_questions(k), [SCRIPT[(k, i)] for i in range(len(_questions(k)))])
                            for k in QA])
    assert uncapped["Pos"] == pytest.approx(WITHOUT_CAP["Pos"]) and uncapped["Pos"] != pytest.approx(EXPECTED["Pos"])


# ------------------------------------------------------------------------------------------- end to end
def _preds(tmp_path: Path, keys=None) -> Path:
    p = tmp_path / "dam_preds.json"  # DAM's own format: {annotation id: caption, "query": the prompt it used}
    p.write_text(json.dumps({**{k: v for k, v in CAPTIONS.items() if keys is None or k in keys},
                             "query": "<image>\nDescribe the masked region in detail."}))
    return p


def test_judged_end_to_end_through_the_scripted_server(cli, tmp_path):
    pytest.importorskip("inflect")
    seen: list = []
    cache = tmp_path / "cache"
    with ScriptedServer(scripted_answer(seen), model="judge-8b") as server:
        args = ("score", _preds(tmp_path), BENCH, "--judge-base-url", server.url, "--judge-model", "judge-8b",
                "--judge-cache", cache, "--per-item", tmp_path / "items.jsonl", "--judge-concurrency", "4")
        first = cli(*args)
        assert first.exit_code == 0, first.stderr
        assert sorted(seen) == sorted(SCRIPT)  # every question once, each prompt with its caption and question
        summary = json.loads(first.stdout)
        assert {k: summary[k] for k in EXPECTED} == pytest.approx(EXPECTED)
        assert summary["count"] == 5 and summary["recognised"] == 3 and summary["meta"]["unparsed"] == 1
        assert summary["meta"]["asked"] == 17 and summary["meta"]["judge"]["model"] == "judge-8b"
        items = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
        assert [i["benchmark_id"] for i in items] == list(QA)
        assert [i["id"] for i in items][0] == "sa_dlc_0001/3001"
        answers = {(i["benchmark_id"], n): q["answer"] for i in items for n, q in enumerate(i["questions"])}
        assert answers == SCRIPT  # the judge's answer to every question
        assert items[1]["questions"][1]["choice"] == "D" and items[1]["questions"][1]["value"] == 0
        # a rerun costs no request: every answer comes from the cache
        count = server.count
        again = cli(*args)
        assert again.exit_code == 0, again.stderr
        assert server.count == count
        rerun = json.loads(again.stdout)
        assert rerun["meta"]["asked"] == 0 and rerun["meta"]["cached"] == 17
        assert {k: rerun[k] for k in EXPECTED} == {k: summary[k] for k in EXPECTED}


def test_a_failed_request_is_one_line_and_the_rest_stays_cached(cli, tmp_path):
    pytest.importorskip("inflect")
    seen: list = []
    cache = tmp_path / "cache"
    with ScriptedServer(scripted_answer(seen)) as server:
        # one request at a time, in order: the lamp's two questions come last (15 before them) and fail
        with FaultProxy(server.url, lambda k: "500" if k >= 15 else None) as proxy:
            r = cli("score", _preds(tmp_path), BENCH, "--judge-base-url", proxy.url, "--judge-cache", cache,
                    "--judge-retries", "0", "--judge-concurrency", "1", "--judge-model", "scripted")
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.stderr
        assert "DLC-Bench judge" in lines[0] and "HTTP 500" in lines[0] and "15 of 17 new answers" in lines[0]
        count = server.count
        r = cli("score", _preds(tmp_path), BENCH, "--judge-base-url", server.url, "--judge-cache", cache)
        assert r.exit_code == 0, r.stderr
        assert server.count - count == 2  # only the lamp's two questions were asked again
    assert json.loads(r.stdout)["Avg"] == pytest.approx(EXPECTED["Avg"])


def test_options_that_do_not_fit_are_refused(cli, tmp_path):
    refs = Path(__file__).resolve().parent / "data" / "score" / "refs_regions.jsonl"
    preds = Path(__file__).resolve().parent / "data" / "score" / "preds_regions.jsonl"
    r = cli("score", preds, refs, "--judge-base-url", "http://127.0.0.1:9/v1")
    assert r.exit_code == 2 and "--judge-base-url: the judge scores DLC-Bench" in r.stderr
    r = cli("score", _preds(tmp_path), BENCH, "--judge-base-url", "http://127.0.0.1:9/v1", "--no-bertscore")
    assert r.exit_code == 2 and "--no-bertscore: caption metrics, not used on DLC-Bench" in r.stderr
    r = cli("score", _preds(tmp_path), BENCH)
    assert r.exit_code == 2 and "--judge-base-url URL" in r.stderr
    r = cli("score", _preds(tmp_path, keys={"3001"}), BENCH, "--judge-base-url", "http://127.0.0.1:9/v1")
    assert r.exit_code == 2 and "4 DLC-Bench region(s) have no prediction" in r.stderr


@pytest.mark.slow
def test_judged_through_transformers_serve(cli, tmp_path, served):
    """A real OpenAI-compatible server (transformers serve, a tiny random model) as the judge: every question is
    asked and answered, the answers are in --per-item, and a rerun asks nothing."""
    pytest.importorskip("inflect")
    url, folder = served
    args = ("score", _preds(tmp_path, keys={"3005"}), BENCH, "--judge-base-url", url, "--judge-model", str(folder),
            "--judge-cache", tmp_path / "cache", "--allow-missing", "--per-item", tmp_path / "items.jsonl",
            "--judge-retries", "1")
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["count"] == 1 and summary["meta"]["asked"] == 2
    assert summary["meta"]["left_out_references"] == 4
    item = json.loads((tmp_path / "items.jsonl").read_text())
    assert [bool(q["answer"]) for q in item["questions"]] == [True, True]
    again = cli(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["meta"]["asked"] == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests import test_annotate_serve

    gen = test_annotate_serve.served.__wrapped__(tmp_path_factory)
    try:
        yield next(gen)
    finally:
        gen.close()
