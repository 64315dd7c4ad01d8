"""The field's benchmarks through `ureca_cli.datasets`: RefCOCOg (Osprey's and MDETR/GLaMM's JSON), Visual Genome
(region_descriptions.json, test_caption.json), DLC-Bench's folder and the released URECA JSONL, from fixtures in
each release's structure (tests/data/benchmarks, tests/data/internvl_chat): detection, region records, captioning
with a tiny model, scoring, METEOR against pycocoevalcap called directly, bad files and pickles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.checks import one_error_line
from ureca_cli import masks as M
from ureca_cli import records as R
from ureca_cli.datasets import ReadOptions, format_of, read

from .conftest import ROOT

DATA = Path(__file__).resolve().parent / "data"
B = DATA / "benchmarks"
INTERNVL = DATA / "internvl_chat"

# name -> (file or folder, the format auto-detection must pick, --images, region count)
FIXTURES = {
    "refcocog-osprey": (B / "refcocog" / "finetune_refcocog_val_with_mask.json", "refcocog", B / "coco", 4),
    "refcocog-glamm": (B / "refcocog" / "finetune_refcocog_val_captions.json", "refcocog", B / "coco", 4),
    "vg-official": (B / "vg" / "region_descriptions.json", "vg", B / "vg" / "images", 6),
    "vg-coco": (B / "vg" / "test_caption.json", "vg", B / "vg" / "images", 6),
    "dlc": (B / "dlc", "dlc", None, 5),
    "internvl": (INTERNVL / "train.jsonl", "internvl", INTERNVL / "images", 6),
}


def _regions(path, images=None, need=(R.IMAGE, R.RLE), fmt="auto") -> list[dict]:
    opts = ReadOptions(need=need, captioned_only=False, images=images, masks=INTERNVL / "masks")
    out = []
    for unit in read(path, fmt, opts):
        assert unit.error is None, unit.error
        out += unit.value
    return out


_fails = one_error_line


@pytest.mark.parametrize("name", FIXTURES)
def test_detection_picks_each_format(name):
    path, fmt, images, count = FIXTURES[name]
    assert format_of(path) == fmt
    regions = _regions(path, images)
    assert len(regions) == count
    assert regions == _regions(path, images, fmt=fmt)  # auto reads as the named format does
    for r in regions:
        image_id, _, key = r[R.ID].rpartition("/")
        assert image_id == r[R.IMAGE_ID] and key  # the records' rule: "<image_id>/<region id>"
        # the image-id rule: the image's stem, SA-1B's sa_ dropped before a number
        assert Path(r[R.IMAGE]).is_file() and R.image_id_from_stem(Path(r[R.IMAGE]).stem) == r[R.IMAGE_ID]
        h, w = r[R.RLE]["size"]
        assert M.area(r[R.RLE]) > 0 and (w, h) == __import__("PIL.Image").Image.open(r[R.IMAGE]).size


def test_a_minified_document_is_detected_from_its_first_line(tmp_path):
    for name in ("refcocog-glamm", "vg-official"):
        src = FIXTURES[name][0]
        one = tmp_path / src.name
        one.write_text(json.dumps(json.loads(src.read_text())) + "\n")
        assert format_of(one) == FIXTURES[name][1]
        assert _regions(one, FIXTURES[name][2]) == _regions(src, FIXTURES[name][2])


def test_region_records_of_each_form():
    osprey = _regions(FIXTURES["refcocog-osprey"][0], B / "coco", need=(R.CAPTION,))
    # Osprey's form: the caption is the image entry's, the region its annotation (polygon or RLE), named by it
    assert [r[R.ID] for r in osprey] == ["COCO_train2014_000000000101/1000", "COCO_train2014_000000000101/1001",
                                        "COCO_train2014_000000000102/1002", "COCO_train2014_000000000103/1003"]
    assert [r["benchmark_id"] for r in osprey] == ["1000", "1001", "1002", "1003"]
    assert osprey[0][R.CAPTION] == "the red block on the left" and "region_from" not in osprey[0]
    assert all(r[R.RLE] for r in osprey)
    glamm = _regions(FIXTURES["refcocog-glamm"][0], B / "coco", need=(R.CAPTION,))
    # MDETR/GLaMM's form: a box on the annotation, named by its entry (what COCO results files use)
    assert [r["benchmark_id"] for r in glamm] == ["0", "1", "2", "3"]
    assert all(r["region_from"] == "box" and R.RLE not in r for r in glamm)  # a mask only when one is needed
    with_masks = _regions(FIXTURES["refcocog-glamm"][0], B / "coco")
    box = with_masks[0][R.BBOX]  # [4.5, 6.25, 19, 17.5]: every pixel the box touches
    m = M.decode(with_masks[0][R.RLE])
    assert M.pixel_box(m) == (4, 6, 20, 18) and m.sum() == 20 * 18 and box == [4.5, 6.25, 19, 17.5]
    vg = _regions(FIXTURES["vg-official"][0], B / "vg" / "images")
    assert [r[R.ID] for r in vg][:3] == ["2401/11", "2401/12", "2402/21"]
    assert vg[-1][R.IMAGE].endswith("VG_100K_2/2403.jpg")  # the release's second image folder
    dlc = _regions(B / "dlc", need=())
    assert dlc[0][R.ID] == "sa_dlc_0001/3001" and dlc[0]["class_name"] == "wild bird"
    assert dlc[0]["benchmark_id"] == "3001" and R.CAPTION not in dlc[0]


def test_osprey_image_names_are_found_too(tmp_path):
    """Osprey's folder of COCO images names them by the part after the last '_' (000000000101.jpg)."""
    folder = tmp_path / "coco_all_imgs"
    folder.mkdir()
    for f in (B / "coco").iterdir():
        shutil.copy(f, folder / f.name.rsplit("_", 1)[-1])
    regions = _regions(FIXTURES["refcocog-osprey"][0], folder)
    assert Path(regions[0][R.IMAGE]).name == "000000000101.jpg"
    assert regions[0][R.IMAGE_ID] == "COCO_train2014_000000000101"  # ids do not depend on where images are


def test_a_box_outside_its_image_is_one_error(tmp_path):
    doc = json.loads(FIXTURES["vg-official"][0].read_text())
    doc[0]["regions"][1].update(x=70, y=50)  # the image is 60x40
    bad = tmp_path / "region_descriptions.json"
    bad.write_text(json.dumps(doc))
    units = list(read(bad, "auto", ReadOptions(need=(R.IMAGE, R.RLE), images=B / "vg" / "images")))
    errors = [u.error for u in units if u.error is not None]
    assert len(errors) == 1 and len(units) == 6
    assert "[0].regions[1]" in str(errors[0]) and "holds no pixel of the 60x40 image" in str(errors[0])


def test_a_pipe_is_read_once_as_jsonl():
    """`--input <(cmd)`: a stream is never sniffed (which would read it twice), it is read as JSONL."""
    import os

    r, w = os.pipe()
    os.write(w, (DATA / "score" / "refs_regions.jsonl").read_bytes())
    os.close(w)
    try:
        units = list(read(f"/dev/fd/{r}", "auto", ReadOptions()))
    finally:
        os.close(r)
    assert [u.error for u in units] == [None] * 3 and units[0].value[0][R.ID]


# ------------------------------------------------------------------------------------------- bad files
def _spoil(tmp_path: Path, name: str, change) -> Path:
    src = FIXTURES[name][0]
    if src.is_dir():
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        change(dst)
        return dst
    dst = tmp_path / src.name
    if src.suffix == ".jsonl":
        lines = [json.loads(x) for x in src.read_text().splitlines()]
        change(lines)
        dst.write_text("".join(json.dumps(x) + "\n" for x in lines))
    else:
        doc = json.loads(src.read_text())
        change(doc)
        dst.write_text(json.dumps(doc, indent=1))
    return dst


def _qa_choice(folder: Path) -> None:
    qa = json.loads((folder / "qa.json").read_text())
    qa["3001"][0]["choices"][1] = ["only text"]
    (folder / "qa.json").write_text(json.dumps(qa))


BAD = {  # name -> (how to spoil the fixture, what the one line names)
    "refcocog-osprey": (lambda d: d["images"][1].pop("caption"), "images[1]: missing field 'caption'"),
    "refcocog-glamm": (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), "annotations[2]: field 'bbox'"),
    "vg-official": (lambda d: d[1]["regions"][0].pop("phrase"), "[1].regions[0]: missing field 'phrase'"),
    "vg-coco": (lambda d: d["annotations"][3].update(image_id=99), "annotations[3]: image_id 99 is not in 'images'"),
    "dlc": (_qa_choice, "qa.json: key '3001' [0]: field 'choices[1]'"),
    "internvl": (lambda lines: lines[2].update(conversations="a caption"), "train.jsonl:3: 'conversations'"),
}


@pytest.mark.parametrize("name", BAD)
def test_a_malformed_file_of_each_kind_is_one_line_exit_2(cli, tmp_path, name):
    change, needle = BAD[name]
    bad = _spoil(tmp_path, name, change)
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"x": "a caption"}))
    extra = ["--judge-base-url", "http://127.0.0.1:9/v1"] if name == "dlc" else ["--metrics", "bleu"]
    line = _fails(cli("score", preds, bad, *extra), needle)
    assert str(bad.name) in line


def test_pickles_are_refused_never_read(cli, tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"x": "a caption"}))
    for name, data in (("refs(umd).p", b"\x80\x02}q\x00(X\x03\x00\x00\x00refq\x01K\x01u."),
                       ("refs_py2", b"(dp0\nS'ref'\np1\nI1\ns.")):
        p = tmp_path / name
        p.write_bytes(data)
        for args in (("score", preds, p, "--metrics", "bleu"), ("score", p, preds, "--metrics", "bleu")):
            _fails(cli(*args), str(p), "pickle", "finetune_refcocog_val_with_mask.json",
                   "finetune_refcocog_val_captions.json")
        _fails(cli("caption", "--input", p, "--model", tmp_path), str(p), "pickle")


# ------------------------------------------------------------------------------------------- METEOR
def _results(path: Path) -> list[dict]:
    """A results file [{"image_id", "caption"}] with captions near (not equal to) the references."""
    doc = json.loads(path.read_text())
    words = ["small", "bright", "left", "there"]
    return [{"image_id": a["image_id"], "caption": f"{a['caption']} {words[i % 4]}".replace("the ", "a ", 1)}
            for i, a in enumerate(doc["annotations"])]


def _meteor_direct(ann_file: Path, res_file: Path) -> float:
    """METEOR as pycocoevalcap's COCOEvalCap computes it (its tokenizer and scorer, SPICE left out)."""
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    res = coco.loadRes(str(res_file))
    ids = res.getImgIds()
    tok = PTBTokenizer()
    gts = tok.tokenize({i: coco.imgToAnns[i] for i in ids})
    got = tok.tokenize({i: res.imgToAnns[i] for i in ids})
    meteor = Meteor()
    try:
        score, _ = meteor.compute_score(gts, got)
    finally:
        with meteor.lock:
            meteor.meteor_p.stdin.close()
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
    return 100 * score


@pytest.mark.slow
@pytest.mark.parametrize("name", ["refcocog-glamm", "vg-coco"])
def test_meteor_equals_pycocoevalcap_on_the_same_files(cli, tmp_path, name):
    pytest.importorskip("pycocoevalcap")
    if shutil.which("java") is None:
        pytest.skip("java is needed for METEOR")
    ann = FIXTURES[name][0]
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results(ann)))
    out = cli("score", res, ann, "--metrics", "meteor", "--no-uniqueness")
    assert out.exit_code == 0, out.stderr
    ours = json.loads(out.stdout)["METEOR"]
    direct = _meteor_direct(ann, res)
    assert ours == pytest.approx(direct, abs=1e-9)
    assert 0 < ours < 100


# ------------------------------------------------------------------------------------------- end to end
def _caption(cli, ckpt, path, images, out, *extra) -> list[dict]:
    args = ["caption", "--input", path, "--model", ckpt, "--max-new-tokens", "4", "-o", out, *extra]
    if images is not None:
        args += ["--images", images]
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    for r in recs:  # the random model may say nothing; give score something to tokenize
        r[R.CAPTION] = r[R.CAPTION] or "nothing"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["refcocog-osprey", "vg-official"])  # the other forms: the script's test below
def test_caption_then_score_each_benchmark(cli, ckpt, tmp_path, name):
    pytest.importorskip("pycocoevalcap")
    path, _, images, count = FIXTURES[name]
    extra = ["--masks", INTERNVL / "masks"] if name == "internvl" else []
    preds = _caption(cli, ckpt, path, images, tmp_path / "preds.jsonl", *extra)
    assert [p[R.ID] for p in preds] == [r[R.ID] for r in _regions(path, images)]
    assert all(p["reference"] for p in preds)  # the benchmark's caption rides along
    scored = cli("score", tmp_path / "preds.jsonl", path, "--metrics", "bleu", "--no-bertscore")
    assert scored.exit_code == 0, scored.stderr
    summary = json.loads(scored.stdout)
    assert summary["count"] == count and 0 <= summary["Bleu_1"] <= 100


@pytest.mark.slow
def test_caption_dlc_bench_then_judge_it(cli, ckpt, tmp_path):
    from tests.servers.chat import ScriptedServer

    preds = _caption(cli, ckpt, B / "dlc", None, tmp_path / "preds.jsonl")
    assert [p[R.ID] for p in preds] == ["sa_dlc_0001/3001", "sa_dlc_0001/3002", "sa_dlc_0002/3003",
                                        "sa_dlc_0003/3004", "sa_dlc_0003/3005"]
    assert all(np.asarray(M.decode(p[R.RLE])).any() for p in preds)
    with ScriptedServer(lambda body: "B. No") as server:
        out = cli("score", tmp_path / "preds.jsonl", B / "dlc", "--judge-base-url", server.url,
                  "--judge-cache", tmp_path / "cache")
    assert out.exit_code == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 5 and summary["recognised"] == 0 and len(server.requests) == 17


# ------------------------------------------------------------------------------------------- one table
def test_the_table_puts_ours_beside_the_published_figures(tmp_path):
    import subprocess
    import sys

    (tmp_path / "refcocog.score.json").write_text(json.dumps({"count": 4, "METEOR": 15.5}))
    (tmp_path / "dlc.score.json").write_text(json.dumps({"count": 5, "Pos": 40.0, "Neg": 80.0, "Avg": 60.0}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_table.py"), str(tmp_path), "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = {(r["benchmark"], r["metric"]): r for r in json.loads(out)}
    assert rows[("RefCOCOg", "METEOR")]["ours"] == 15.5 and rows[("RefCOCOg", "METEOR")]["paper"] == 16.1
    assert rows[("RefCOCOg", "METEOR")]["best"] == ["Omni-RGPT", 17.0]
    assert rows[("Visual Genome", "METEOR")]["paper"] == 18.4 and not rows[("Visual Genome", "METEOR")]["run"]
    assert rows[("DLC-Bench", "Avg")]["ours"] == 60.0 and rows[("DLC-Bench", "Avg")]["best"][1] == 67.0
    assert rows[("URECA test set", "METEOR")]["paper"] == 41.25


@pytest.mark.slow
def test_eval_benchmarks_script_runs_all_four(ckpt, tmp_path):
    """scripts/eval_benchmarks.sh over a DATA_DIR laid out from the fixtures, a scripted judge for DLC-Bench."""
    import os
    import subprocess
    import sys

    from tests.servers.chat import ScriptedServer

    pytest.importorskip("pycocoevalcap")
    data = tmp_path / "data"
    links = {"ureca/test.jsonl": INTERNVL / "train.jsonl", "ureca/masks": INTERNVL / "masks",
             "ureca/images": INTERNVL / "images", "refcocog/finetune_refcocog_val_captions.json":
             FIXTURES["refcocog-glamm"][0], "refcocog/images": B / "coco", "vg/test_caption.json":
             FIXTURES["vg-coco"][0], "vg/images": B / "vg" / "images", "dlc": B / "dlc"}
    for rel, target in links.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).symlink_to(target)
    out = tmp_path / "out"
    with ScriptedServer(lambda body: "A") as judge:
        env = {**os.environ, "URECA": f"{sys.executable} -m ureca_cli", "PYTHONPATH": str(ROOT), "OUT": str(out),
               "CAPTION_ARGS": "--max-new-tokens 4", "SCORE_ARGS": "--metrics bleu --no-uniqueness",
               "JUDGE_URL": judge.url, "JUDGE_ARGS": f"--judge-cache {tmp_path / 'cache'}"}
        run = subprocess.run(["bash", str(ROOT / "scripts" / "eval_benchmarks.sh"), str(ckpt), str(data)],
                             capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, count in (("ureca", 6), ("refcocog", 4), ("vg", 6), ("dlc", 5)):
        assert json.loads((out / f"{name}.score.json").read_text())["count"] == count
    table = run.stdout
    assert "not run" not in table and "16.1" in table and "18.4" in table and "DAM-3B" in table
    assert table == (out / "table.txt").read_text()
