"""Scores of region captions against references: the COCO caption metrics, BERTScore, and uniqueness.

BLEU@1-4, METEOR, ROUGE-L and CIDEr are computed by pycocoevalcap exactly as the COCO caption evaluation does
(captions lowercased and split by the Stanford PTB tokenizer, punctuation dropped; METEOR 1.5 run by Java,
one JVM per run); BERTScore (P, R, F1) by the ``bert-score`` package, best over a region's references as
bert-score does. Nothing here re-implements a metric: this module aligns inputs, calls those scorers, and
reports every figure on the 0-100 scale papers print.

A reference that the PTB tokenizer turns into nothing (``"-"``, ``"..."``, emoji only) is left out of BLEU, METEOR,
ROUGE-L and CIDEr, and the run says how many on stderr: pycocoevalcap is then called exactly as it would be
without that reference (called with it, CIDEr stops with a ValueError when no reference has a word, and an empty
reference among others counts as a reference that matches nothing). A region left with no reference at all is
an error naming the file and line: pycocoevalcap's scorers require at least one reference per region
(``assert(len(ref) > 0)``). BERTScore compares the references as they are written.

Uniqueness, per image with two regions or more, averaged over those images:
- duplicate rate: the share of predictions equal to another prediction of the same image after normalising
  (lowercase, punctuation removed, whitespace collapsed);
- unique@1: how often a prediction is closer to its own region's references than to any other region's of
  the same image. Closeness is BERTScore F1 (best over a region's references), or pycocoevalcap's ROUGE-L
  when BERTScore is off. A tie for the best counts 1/m when the own region is among the m tied regions, so
  identical predictions score exactly chance (1/k for k regions) and ``unique@1_chance`` is reported beside it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UrecaError, check_model_name
from ..loading import check_safetensors, hub_offline
from .readers import Matched

METRICS = ("bleu", "meteor", "rouge", "cider", "bertscore")
NGRAM_METRICS = ("bleu", "meteor", "rouge", "cider")
DEFAULT_BERTSCORE_MODEL = "roberta-large"  # bert-score's own default for English (lang="en")
JAVA_HINT = "install a Java runtime (Debian/Ubuntu: apt-get install default-jre-headless)"
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of one scoring run.

    ``metrics``: which of ``METRICS`` to compute. ``bertscore_model``: a hub id or a local folder (a folder
    needs ``bertscore_layers``, the layer whose embeddings bert-score compares). ``device``: for BERTScore
    (None: CUDA when available, else CPU). ``uniqueness``: compute duplicate rate and unique@1.
    """

    metrics: tuple[str, ...] = METRICS
    bertscore_model: str = DEFAULT_BERTSCORE_MODEL
    bertscore_layers: int | None = None
    device: str | None = None
    batch_size: int = 256  # bert-score: sentences per forward pass and pairs per matching step
    uniqueness: bool = True

    def __post_init__(self):
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise UrecaError(f"--metrics: unknown metric(s) {', '.join(bad)}; choose from {', '.join(METRICS)}")
        if not self.metrics:
            raise UrecaError("--metrics: nothing to compute")
        if self.batch_size < 1:
            raise UrecaError(f"--batch-size {self.batch_size}: needs at least 1")
        if self.bertscore_layers is not None and self.bertscore_layers < 0:
            raise UrecaError(f"--bertscore-layers {self.bertscore_layers}: needs 0 or more")
        if not self.bertscore_model:
            raise UrecaError("--bertscore-model: empty")

    @property
    def use_bertscore(self) -> bool:
        return "bertscore" in self.metrics

    @property
    def similarity(self) -> str:
        """What unique@1 compares with: ``bertscore_f1`` or ``rouge_l``."""
        return "bertscore_f1" if self.use_bertscore else "rouge_l"

    @property
    def needs_java(self) -> bool:
        return any(m in self.metrics for m in NGRAM_METRICS) or (self.uniqueness and not self.use_bertscore)


@dataclass
class ScoreResult:
    """``summary``: one flat dict of figures (0-100) plus ``meta``; ``items``: one dict per region."""

    summary: dict[str, Any]
    items: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per part
    cpu_timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per part, child processes included
    warnings: list[str] = field(default_factory=list)  # for stderr: what was left out, and why


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the JVMs), user + system."""
    try:
        import resource
    except ImportError:  # not on Unix
        return time.process_time()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds per named part: ``with clock("bleu"): ...``."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.wall[name] = time.perf_counter() - w0
            self.cpu[name] = _cpu_seconds() - c0


# ------------------------------------------------------------------------------------------- java tools
#: what Java's PTBTokenizer writes on stderr that says nothing wrong: a logged note per character it cannot
#: tokenize (emoji, symbols; they are dropped, as pycocoevalcap always did), two lines each ("<date>
#: edu.stanford.nlp.process.PTBLexer next", "WARNING: Untokenizable: ..."), and its own speed line
JAVA_NOISE = ("Untokenizable: ", "edu.stanford.nlp.process.PTBLexer ", "PTBTokenizer tokenized ")


@contextlib.contextmanager
def quiet_java_stderr(noise: tuple[str, ...] = JAVA_NOISE) -> Iterator[None]:
    """Hold what child processes write on file descriptor 2 while the block runs, then pass on every line except
    ``noise``: pycocoevalcap starts the PTB tokenizer's JVM with our stderr, and its notes would bury the run's
    own messages. Other lines (a real Java error) still reach stderr. With no descriptor 2, nothing is held.
    ``noise``: text that marks a line to drop."""
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:  # stderr closed
        yield
        return
    with tempfile.TemporaryFile() as held:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines()
                    if line.strip() and not any(n in line for n in noise)]
            if kept and sys.stderr is not None:
                print("\n".join(kept), file=sys.stderr)

def check_java() -> None:
    """Raise a one-line error when ``java`` is not on PATH (the PTB tokenizer and METEOR need it)."""
    if shutil.which("java") is None:
        raise UrecaError(f"java was not found on PATH; the COCO caption metrics (PTB tokenizer, METEOR 1.5) run "
                         f"on Java: {JAVA_HINT}, or score without them: --metrics bertscore")


def ptb_tokenize(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """PTB-tokenize predictions and references with pycocoevalcap's PTBTokenizer, in one Java call.

    Returns the tokenized texts in the same order (lowercase, space-separated, punctuation dropped). Line
    breaks inside a caption become spaces first, as pycocoevalcap does for ``\\n``, so that one caption stays
    one line for the tokenizer.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    batch: dict[tuple[str, int], list[dict[str, str]]] = {}
    for i, p in enumerate(predictions):
        batch[("p", i)] = [{"caption": _LINE_BREAKS.sub(" ", p)}]
    for i, refs in enumerate(references):
        batch[("r", i)] = [{"caption": _LINE_BREAKS.sub(" ", r)} for r in refs]
    try:
        with quiet_java_stderr():
            out = PTBTokenizer().tokenize(batch)
    except OSError as e:  # java vanished, or the package folder (where it writes its temp file) is read-only
        raise UrecaError(f"the PTB tokenizer (pycocoevalcap, Java) could not run: {e}") from None
    for key, caps in batch.items():
        if len(out.get(key, ())) != len(caps):
            raise UrecaError(f"the PTB tokenizer (Java) returned fewer lines than captions were sent ({key[0]} "
                             f"{key[1]}); is `java -version` working? ({JAVA_HINT})")
    return [out[("p", i)][0] for i in range(len(predictions))], [out[("r", i)] for i in range(len(references))]


@contextlib.contextmanager
def meteor_scorer() -> Iterator[Any]:
    """pycocoevalcap's ``Meteor`` (one JVM running meteor-1.5.jar), closed on the way out, also on errors."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()
    except OSError as e:
        raise UrecaError(f"METEOR could not start java ({e}): {JAVA_HINT}") from None
    try:
        yield meteor
    finally:
        _close_meteor(meteor)


def _close_meteor(meteor: Any) -> str:
    """Stop the METEOR JVM and return the last line it wrote on stderr (for messages)."""
    proc = meteor.meteor_p
    meteor.lock = threading.Lock()  # a failed compute_score keeps its lock; Meteor.__del__ would then hang
    with contextlib.suppress(OSError):
        proc.stdin.close()
    proc.kill()
    proc.wait()
    tail = ""
    with contextlib.suppress(OSError, ValueError):
        lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
        tail = lines[-1] if lines else ""
    for f in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            f.close()
    return tail


def meteor_score(gts: dict, res: dict) -> tuple[float, list[float]]:
    """Corpus METEOR and per-item scores (0-1) from pycocoevalcap; a JVM failure is one UrecaError line."""
    with meteor_scorer() as meteor:
        try:
            score, scores = meteor.compute_score(gts, res)
        except (ValueError, OSError) as e:
            tail = _close_meteor(meteor)
            raise UrecaError(f"METEOR (java -jar meteor-1.5.jar) failed: {tail or e}") from None
    return float(score), [float(s) for s in scores]


# ------------------------------------------------------------------------------------------- bertscore
def resolve_bertscore_model(name: str, layers: int | None) -> tuple[str, int]:
    """(model for bert-score, layer count) for ``--bertscore-model``/``--bertscore-layers``.

    A local folder needs an explicit layer count (checked against its config.json). A hub id takes
    bert-score's tuned layer when it knows the model, and must already be in the local Hugging Face cache
    when the hub is offline: that is checked here, at once, without a network call.
    """
    how = "pass a local model folder with --bertscore-model DIR --bertscore-layers N, or --no-bertscore"
    path = Path(name).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise UrecaError(f"--bertscore-model {name}: the folder has no config.json (a transformers model "
                             f"saved with save_pretrained is expected)")
        if layers is None:
            raise UrecaError(f"--bertscore-model {name} is a local folder: name the layer bert-score takes "
                             f"embeddings from with --bertscore-layers N (bert-score uses 17 for roberta-large)")
        import json

        try:
            n_layers = json.loads(config.read_text()).get("num_hidden_layers")
        except (OSError, ValueError):
            n_layers = None
        if isinstance(n_layers, int) and layers > n_layers:
            raise UrecaError(f"--bertscore-layers {layers}: the model in {name} has {n_layers} layers")
        check_safetensors(path)  # bert-score's loader would fall back to unpickling pytorch_model.bin
        return str(path), layers
    check_model_name("--bertscore-model", name)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if not isinstance(cached, str):
        if hub_offline():
            raise UrecaError(f"BERTScore model {name!r} is not in the local Hugging Face cache and the hub is "
                             f"offline (HF_HUB_OFFLINE); {how}")
        _probe_hub(name, how)
    if layers is None:
        from bert_score.utils import model2layers

        if name not in model2layers:
            raise UrecaError(f"--bertscore-model {name}: bert-score has no tuned layer for it; "
                             f"pass --bertscore-layers N")
        layers = model2layers[name]
    return name, layers


def check_ready(cfg: ScoreConfig) -> None:
    """What scoring needs besides its inputs, checked before they are read: Java for the COCO metrics, and the
    BERTScore model (a local folder, or in the cache when offline, or on a hub that answers)."""
    if cfg.needs_java:
        check_java()
    if cfg.use_bertscore:
        resolve_bertscore_model(cfg.bertscore_model, cfg.bertscore_layers)


def _probe_hub(name: str, how: str) -> None:
    """One request to the hub before a download, so that an unreachable hub is one error at once instead of
    the retry loops with back-off that a download runs for every file."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise UrecaError(f"BERTScore model {name!r}: no such model on the Hugging Face hub; {how}") from None
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, proxy, HTTP errors
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UrecaError(f"BERTScore model {name!r} is not in the local Hugging Face cache and the hub cannot be "
                         f"reached ({msg}); {how}") from None


class BertScore:
    """A loaded bert-score scorer; ``pairs(cands, refs)`` gives P, R, F1 (0-1) for one reference each."""

    def __init__(self, cfg: ScoreConfig):
        self.model, self.layers = resolve_bertscore_model(cfg.bertscore_model, cfg.bertscore_layers)
        self.batch_size = cfg.batch_size
        with contextlib.redirect_stdout(sys.stderr):
            import torch
            import transformers
            from bert_score import BERTScorer

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
            device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                self.scorer = BERTScorer(model_type=self.model, num_layers=self.layers, device=device,
                                         batch_size=cfg.batch_size)
            except (OSError, ValueError, AssertionError, RuntimeError) as e:
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UrecaError(f"could not load BERTScore model {cfg.bertscore_model!r} ({msg}); pass a local "
                                 f"model folder with --bertscore-model DIR --bertscore-layers N, or "
                                 f"--no-bertscore") from None
        self.device = device

    def pairs(self, cands: list[str], refs: list[str]) -> tuple[list[float], list[float], list[float]]:
        if not cands:
            return [], [], []
        with contextlib.redirect_stdout(sys.stderr):
            P, R, F = self.scorer.score(cands, refs, batch_size=self.batch_size)
        return P.tolist(), R.tolist(), F.tolist()


# ------------------------------------------------------------------------------------------- uniqueness
def normalise(text: str) -> str:
    """Lowercase, drop punctuation (Unicode category P*), collapse whitespace: the duplicate test."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(text.split())


def images_of(groups: list[str]) -> list[list[int]]:
    """Indices of the regions of each image that has two regions or more, in first-seen order."""
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_image[g].append(i)
    return [idx for idx in by_image.values() if len(idx) >= 2]


def unique_at_1(sim: list[list[float]]) -> list[float]:
    """Per region of one image: 1/m if its own reference is among the m best-matching ones, else 0.

    ``sim[i][j]``: similarity of prediction i to the references of region j (k x k, k >= 2).
    """
    out = []
    for i, row in enumerate(sim):
        best = max(row)
        out.append(1.0 / sum(1 for v in row if v == best) if row[i] == best else 0.0)
    return out


def duplicates(predictions: list[str]) -> list[bool]:
    """Per prediction of one image: does another prediction of the image equal it after normalising?"""
    norm = [normalise(p) for p in predictions]
    counts = Counter(norm)
    return [counts[n] > 1 for n in norm]


# ------------------------------------------------------------------------------------------- scoring
def _shown(text: str, limit: int = 24) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def without_empty_references(m: Matched, tokenized: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    """The PTB-tokenized references with those that tokenize to nothing left out (see the module docstring), and
    the warnings that say so. A region left with none is an ``InputError`` naming where its references are."""
    out, dropped = [], []
    for i, toks in enumerate(tokenized):
        kept = [t for t in toks if t.strip()]
        empty = [m.references[i][k] for k, t in enumerate(toks) if not t.strip()]
        if not kept:
            where = m.reference_where[i] if i < len(m.reference_where) else None
            raise InputError(f"id {m.ids[i]!r}: its reference{'s' if len(empty) > 1 else ''} "
                             f"{', '.join(_shown(e) for e in empty)} tokenize{'' if len(empty) > 1 else 's'} to "
                             f"nothing (the PTB tokenizer drops punctuation and symbols), and pycocoevalcap needs at "
                             f"least one reference per region: write a caption or leave the region out",
                             source=where)
        dropped += [(m.ids[i], e) for e in empty]
        out.append(kept)
    warnings = []
    if dropped:
        shown = ", ".join(f"{rid!r}: {_shown(text)}" for rid, text in dropped[:3]) + (", ..." if len(dropped) > 3
                                                                                       else "")
        warnings.append(f"{len(dropped)} reference(s) tokenize to nothing and were left out of BLEU, METEOR, ROUGE-L "
                        f"and CIDEr ({shown}), which pycocoevalcap scores as it would without them")
    return out, warnings


def score(m: Matched, cfg: ScoreConfig) -> ScoreResult:
    """Every figure for matched predictions and references (see the module docstring)."""
    n = len(m.ids)
    clock = Clock()
    if cfg.needs_java:
        check_java()
    bert = None
    if cfg.use_bertscore:  # load (or fail) before the slow Java work
        with clock("bertscore_load"):
            bert = BertScore(cfg)
    items: list[dict[str, Any]] = [{"id": rid, "image_id": g} for rid, g in zip(m.ids, m.groups, strict=True)]
    warnings: list[str] = []
    summary: dict[str, Any] = {"count": n}
    multi = images_of(m.groups) if cfg.uniqueness else []
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON
        gts: dict[int, list[str]] = {}
        res: dict[int, list[str]] = {}
        if cfg.needs_java:
            with clock("ptb_tokenizer"):
                tok_p, tok_r = ptb_tokenize(m.predictions, m.references)
            tok_r, warnings = without_empty_references(m, tok_r)
            gts = dict(enumerate(tok_r))
            res = {i: [p] for i, p in enumerate(tok_p)}
        if "bleu" in cfg.metrics:
            from pycocoevalcap.bleu.bleu import Bleu

            with clock("bleu"):
                corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
            for k in range(4):
                summary[f"Bleu_{k + 1}"] = 100 * corpus[k]
                for item, v in zip(items, per[k], strict=True):
                    item[f"Bleu_{k + 1}"] = 100 * v
        if "meteor" in cfg.metrics:
            with clock("meteor"):
                corpus, per = meteor_score(gts, res)
            summary["METEOR"] = 100 * corpus
            for item, v in zip(items, per, strict=True):
                item["METEOR"] = 100 * v
        rouge_per = None
        if "rouge" in cfg.metrics:
            from pycocoevalcap.rouge.rouge import Rouge

            with clock("rouge"):
                corpus, rouge_per = Rouge().compute_score(gts, res)
            summary["ROUGE_L"] = 100 * float(corpus)
            for item, v in zip(items, rouge_per, strict=True):
                item["ROUGE_L"] = 100 * float(v)
        if "cider" in cfg.metrics:
            from pycocoevalcap.cider.cider import Cider

            with clock("cider"):
                corpus, per = Cider().compute_score(gts, res)
            summary["CIDEr"] = 100 * float(corpus)
            for item, v in zip(items, per, strict=True):
                item["CIDEr"] = 100 * float(v)
        sim_pairs: dict[tuple[str, str], float] = {}
        if bert is not None:
            with clock("bertscore"):
                sim_pairs = _bertscore(bert, m, multi, items, summary)
        if cfg.uniqueness:
            with clock("uniqueness"):
                _uniqueness(m, cfg, multi, items, summary, sim_pairs, gts, res)
    summary["meta"] = {
        "count": n,
        "left_out_predictions": m.left_out_predictions,
        "left_out_references": m.left_out_references,
        "metrics": list(cfg.metrics),
        "bertscore_model": bert.model if bert else None,
        "bertscore_layers": bert.layers if bert else None,
        "unique@1_similarity": cfg.similarity if cfg.uniqueness else None,
        "tokenizer": "PTB (pycocoevalcap)" if cfg.needs_java else None,
    }
    return ScoreResult(summary, items, clock.wall, clock.cpu, warnings)


def _bertscore(bert: BertScore, m: Matched, multi: list[list[int]], items: list[dict], summary: dict) -> dict:
    """BERTScore of every region (best over its references, as bert-score does), in one bert-score call
    that also scores the distinct (prediction, reference) pairs unique@1 compares; returns those F1s."""
    cands, refs, bounds = [], [], []
    for p, rs in zip(m.predictions, m.references, strict=True):
        bounds.append((len(cands), len(cands) + len(rs)))
        cands += [p] * len(rs)
        refs += rs
    n_main = len(cands)
    extra: dict[tuple[str, str], int] = {}
    for idx in multi:
        for i in idx:
            for j in idx:
                for r in m.references[j]:
                    key = (m.predictions[i], r)
                    if key not in extra:
                        extra[key] = n_main + len(extra)
    cands += [k[0] for k in extra]
    refs += [k[1] for k in extra]
    P, R, F = bert.pairs(cands, refs)
    sums = [0.0, 0.0, 0.0]
    for item, (b, e) in zip(items, bounds, strict=True):
        best = [max(P[b:e]), max(R[b:e]), max(F[b:e])]
        for k, name in enumerate(("BERTScore_P", "BERTScore_R", "BERTScore_F1")):
            item[name] = 100 * best[k]
            sums[k] += best[k]
    for k, name in enumerate(("BERTScore_P", "BERTScore_R", "BERTScore_F1")):
        summary[name] = 100 * sums[k] / len(items)
    return {key: F[pos] for key, pos in extra.items()}


def _uniqueness(m: Matched, cfg: ScoreConfig, multi: list[list[int]], items: list[dict], summary: dict,
                bert_f1: dict[tuple[str, str], float], gts: dict, res: dict) -> None:
    rouge_cache: dict[tuple[str, tuple[str, ...]], float] = {}
    rouge = None
    if not cfg.use_bertscore:
        from pycocoevalcap.rouge.rouge import Rouge

        rouge = Rouge()

    def similarity(i: int, j: int) -> float:
        if rouge is None:
            return max(bert_f1[(m.predictions[i], r)] for r in m.references[j])
        key = (res[i][0], tuple(gts[j]))
        if key not in rouge_cache:
            rouge_cache[key] = rouge.calc_score([res[i][0]], gts[j])
        return rouge_cache[key]

    for item in items:  # regions alone in their image get no uniqueness figures
        item["duplicate"] = None
        item["unique@1"] = None
    dup_rates, u_rates, chance = [], [], []
    for idx in multi:
        dups = duplicates([m.predictions[i] for i in idx])
        u1 = unique_at_1([[similarity(i, j) for j in idx] for i in idx])
        for i, d, u in zip(idx, dups, u1, strict=True):
            items[i]["duplicate"] = d
            items[i]["unique@1"] = 100 * u
        dup_rates.append(sum(dups) / len(idx))
        u_rates.append(sum(u1) / len(idx))
        chance.append(1 / len(idx))
    have = bool(multi)
    summary["duplicate_rate"] = 100 * sum(dup_rates) / len(multi) if have else None
    summary["unique@1"] = 100 * sum(u_rates) / len(multi) if have else None
    summary["unique@1_chance"] = 100 * sum(chance) / len(multi) if have else None
    summary["images"] = len(multi)
    summary["regions_in_images"] = sum(len(idx) for idx in multi)
