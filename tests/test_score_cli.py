"""`ureca score` from the command line: readers for every format, stdout/stderr, and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_score import build_tiny_bert, needs_java
from ureca_cli.errors import UrecaError
from ureca_cli.evaluate.readers import match, read_captions

DATA = Path(__file__).parent / "data" / "score"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> list[str]:
    folder = build_tiny_bert(tmp_path_factory.mktemp("tiny_bert_cli"))
    return ["--metrics", "bertscore", "--bertscore-model", str(folder), "--bertscore-layers", "2", "--device", "cpu"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("ureca score: error: ") and "\n" not in err, err
    assert "Traceback" not in err and result.stdout == ""
    for n in needles:
        assert n in err, err
    return err


# ----------------------------------------------------------------------------------- readers
def test_readers_detect_every_format():
    regions = read_captions(DATA / "refs_regions.jsonl")
    assert regions["img1/1"].captions == ["a red car on a street", "a parked red car"]
    assert regions["img1/1"].image_id == "img1"
    images = read_captions(DATA / "images.jsonl", "predictions")
    assert list(images) == ["img1/1", "img1/2", "img2/7"]  # the dropped, uncaptioned node is no region
    assert images["img1/2"].image_id == "img1"
    coco_res = read_captions(DATA / "coco_results.json", "predictions")
    coco_ann = read_captions(DATA / "coco_annotations.json")
    assert coco_ann["11"].captions == ["A man rides a brown horse.", "A person on horseback."]
    m = match(coco_res, coco_ann)
    assert m.ids == ["11", "12"] and m.groups == ["11", "12"]  # COCO: one region per image id
    dam = read_captions(DATA / "dam.json", "predictions")
    assert dam["sa_1/4"].captions == ["a tall green tree"] and dam["sa_1/4"].image_id is None
    # grouping where a format has no image_id: the id before its last "/"
    m = match(dam, dam)
    assert m.groups == ["sa_1", "sa_1", "sa_2"]
    # named formats read the same; osprey is COCO's results list
    assert read_captions(DATA / "coco_results.json", "predictions", "osprey").keys() == coco_res.keys()
    assert read_captions(DATA / "images.jsonl", "predictions", "images").keys() == images.keys()


def test_image_records_match_region_records():
    m = match(read_captions(DATA / "images.jsonl", "predictions"), read_captions(DATA / "refs_regions.jsonl"))
    assert m.ids == ["img1/1", "img1/2", "img2/7"] and m.groups == ["img1", "img1", "img2"]
    assert m.references[0] == ["a red car on a street", "a parked red car"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"id": "a/1", "caption": ""}\n', "field 'caption' is empty"),
        ('{"id": "a/1", "caption": 3}\n', "field 'caption' should be a string, got int"),
        ('{"id": "a/1", "captions": ["ok", "  "]}\n', "captions[1]' is empty"),
        ('{"id": "a/1"}\n', "no 'caption'"),
        ("id,caption\na,b\n", "not a caption file in a known format"),
        ('{"foo": 1}\n{"foo": 2}\n', "not a caption file in a known format"),
        ('{"id": "a/1", "caption": "x"}\n{"id": "a/1", "caption": "y"}\n', "appears twice"),
        ('{"id": "a/1", "caption": "x"}\n{"id": \n', "p.jsonl:2: not valid JSON"),
        ('{"image_id": "a", "image": "a.jpg", "width": 4, "height": 4, "nodes": []}\n',
         "holds no predictions: its image records have no captioned node (tree records?"),
    ],
)
def test_bad_predictions_are_one_line(cli, tmp_path, text, needle):
    preds = write(tmp_path / "p.jsonl", text)
    one_line_error(cli("score", preds, DATA / "refs_regions.jsonl", "--no-bertscore"), needle)


def test_missing_ids_and_allow_missing(cli, tmp_path, bert):
    refs = write(tmp_path / "r.jsonl", "".join(
        json.dumps({"id": f"im/{i}", "image_id": "im", "caption": c}) + "\n"
        for i, c in enumerate(["a red car", "a green tree", "a dog", "a cat", "a horse"])))
    preds = write(tmp_path / "p.jsonl", "".join(
        json.dumps({"id": rid, "caption": c}) + "\n"
        for rid, c in [("im/0", "a red car"), ("im/1", "a tree"), ("im/2", "a dog"), ("zz/9", "extra")]))
    err = one_line_error(cli("score", preds, refs, *bert), "1 prediction id(s) have no reference",
                         "'zz/9'", "2 reference id(s) have no prediction", "--allow-missing")
    assert "'im/3'" in err
    ok = cli("score", preds, refs, *bert, "--allow-missing")
    assert ok.exit_code == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["count"] == 3 and out["meta"]["left_out_predictions"] == 1
    assert out["meta"]["left_out_references"] == 2
    assert "left out 1 prediction(s)" in ok.stderr


def test_stdout_is_one_json_object_and_per_item(cli, tmp_path, bert):
    items = tmp_path / "items.jsonl"
    res = cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", *bert, "--per-item", items)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)  # nothing else on stdout
    assert set(out) >= {"BERTScore_P", "BERTScore_R", "BERTScore_F1", "duplicate_rate", "unique@1"}
    assert out["images"] == 1 and out["unique@1_chance"] == pytest.approx(50)
    assert "BERTScore_F1" in res.stderr  # the table
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["img1/1", "img1/2", "img2/7"]
    assert rows[0]["references"] == ["a red car on a street", "a parked red car"]
    assert rows[2]["unique@1"] is None and rows[2]["duplicate"] is None  # img2 has one region
    assert 0 <= rows[0]["BERTScore_F1"] <= 100 and isinstance(rows[0]["duplicate"], bool)


@needs_java
def test_ngram_metrics_keep_stdout_clean(cli):
    res = cli("score", DATA / "coco_results.json", DATA / "coco_annotations.json", "--format", "coco",
              "--metrics", "bleu,rouge,cider")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)  # Bleu's own prints went to stderr, not here
    assert 0 < out["Bleu_1"] <= 100 and out["images"] == 0 and out["unique@1"] is None


# ----------------------------------------------------------------------------------- environment errors
def test_java_missing(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    one_line_error(cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--no-bertscore"),
                   "java was not found", "apt-get install default-jre-headless")


def test_bertscore_model_offline_fails_at_once(cli):
    t0 = time.perf_counter()
    res = cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--metrics", "bertscore",
              "--bertscore-model", "roberta-large")
    assert time.perf_counter() - t0 < 5
    one_line_error(res, "'roberta-large'", "--bertscore-model DIR --bertscore-layers N")


def test_bertscore_hub_unreachable_fails_at_once(tmp_path):
    """Online but no hub (a closed port on loopback): one error at once, no download retry loop."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ureca_cli", "score", str(DATA / "preds_regions.jsonl"),
                           str(DATA / "refs_regions.jsonl"), "--metrics", "bertscore"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert time.perf_counter() - t0 < 15
    assert proc.returncode == 2 and proc.stdout == ""
    assert "cannot be reached" in proc.stderr and "--bertscore-model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_local_bertscore_folder_needs_layers(cli, tmp_path):
    write(tmp_path / "config.json", json.dumps({"num_hidden_layers": 2}))
    args = ("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--metrics", "bertscore",
            "--bertscore-model", tmp_path)
    one_line_error(cli(*args), "--bertscore-layers N")
    one_line_error(cli(*args, "--bertscore-layers", "5"), "has 2 layers")


@needs_java
def test_meteor_failure_is_one_line_and_leaves_no_jvm(cli, monkeypatch):
    import pycocoevalcap.meteor.meteor as meteor_mod

    psutil = pytest.importorskip("psutil")
    monkeypatch.setattr(meteor_mod, "METEOR_JAR", "no-such-meteor.jar")
    one_line_error(cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--metrics", "meteor",
                       "--no-uniqueness"), "METEOR (java -jar meteor-1.5.jar) failed", "Unable to access jarfile")
    assert not [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]


def test_bad_options(cli):
    one_line_error(cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--metrics", "spice"),
                   "unknown metric")
    one_line_error(cli("score", DATA / "preds_regions.jsonl", DATA / "nope.jsonl", "--no-bertscore"),
                   "no such file")
    one_line_error(cli("score", "-", "-", "--no-bertscore", input="{}"), "cannot both be -")
    with pytest.raises(UrecaError, match="--format"):
        read_captions(DATA / "dam.json", fmt="yaml")


def test_bad_per_item_path_fails_before_any_metric(cli, tmp_path, monkeypatch):
    import ureca_cli.evaluate.score

    def no_metrics(*a, **k):
        raise AssertionError("metrics ran before --per-item was checked")

    monkeypatch.setattr(ureca_cli.evaluate.score, "score", no_metrics)
    args = [DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--no-bertscore", "--per-item"]
    one_line_error(cli("score", *args, tmp_path), "--per-item", "is a directory")
    (tmp_path / "file").write_text("")
    one_line_error(cli("score", *args, tmp_path / "file" / "items.jsonl"), "--per-item", "cannot make its folder")
    one_line_error(cli("score", *args, DATA / "refs_regions.jsonl"), "is the input file")


def test_help_has_example(cli):
    res = cli("score", "--help")
    assert res.exit_code == 0 and "ureca score preds.jsonl refs.jsonl" in res.stdout


def test_predictions_from_stdin_with_dam_and_region_refs(cli, bert):
    preds = json.dumps({"img1/1": "a red car", "img1/2": "a red car", "img2/7": "a dog on grass"})
    res = cli("score", "-", DATA / "refs_regions.jsonl", *bert, input=preds)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["count"] == 3 and out["images"] == 1  # grouped by the references' image_id
    assert out["duplicate_rate"] == pytest.approx(100)  # img1's two predictions are the same


def test_pickled_bertscore_model_never_unpickled(cli, tmp_path):
    """--bertscore-model DIR whose weights are a pickle only: one line saying how to convert it; never opened."""
    from tests.pickles import never_opened, plant_pickle

    folder = build_tiny_bert(tmp_path / "bert")
    planted = plant_pickle(folder)
    with never_opened(planted):
        res = cli("score", DATA / "preds_regions.jsonl", DATA / "refs_regions.jsonl", "--metrics", "bertscore",
                  "--bertscore-model", folder, "--bertscore-layers", "2", "--device", "cpu")
    one_line_error(res, str(planted), "never unpickles", "save_pretrained")
    assert not (folder / "UNPICKLED").exists()


def test_bertscore_model_checked_before_the_input_is_read(cli, tmp_path):
    """The BERTScore model that is not there fails before the predictions are read (these would not parse), and
    so does a missing Java for the COCO metrics."""
    bad = write(tmp_path / "bad.jsonl", "not json\n")
    res = cli("score", bad, DATA / "refs_regions.jsonl", "--metrics", "bertscore", "--bertscore-model",
              "roberta-large")
    err = one_line_error(res, "'roberta-large'", "--no-bertscore")
    assert "bad.jsonl" not in err


def test_java_checked_before_the_input_is_read(cli, monkeypatch, tmp_path):
    bad = write(tmp_path / "bad.jsonl", "not json\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    err = one_line_error(cli("score", bad, DATA / "refs_regions.jsonl", "--no-bertscore"), "java was not found")
    assert "bad.jsonl" not in err
