"""DLC-Bench scoring with an LLM judge, by the protocol of Describe Anything's ``eval_model_outputs.py``.

For every region of the benchmark (a key of ``qa.json``) the judge, shown only the predicted caption, answers
the recognition question first (is the object likely a ``<class name>``, or an object of a similar type: the
benchmark's own question, built from ``class_names.json`` with the article and plural its script uses), then
each of the region's questions; every question lists its choices as ``A. text`` lines. Each answer is matched
to a choice (``parse_choice``: the script's rules) and scores that choice's value (0 when no choice matches).
A region whose recognition answer is "No" has every positive and negative value capped at 0 (``min(0, v)``):
its attributes earn nothing, its mistakes still count. Per region, Pos is the mean of its positive values and
Neg the mean of its negative ones (a region with no negative question has no Neg); over the benchmark, Pos is
the mean over regions, Neg the mean over regions that have negatives, and Avg = (Pos + Neg) / 2, all x 100.
Every question is asked, as the script does, also after a failed recognition; requests use temperature 0 and
at most 300 new tokens.

Where the script would stop with an error, this module goes on and says so: a recognition answer that matches
neither choice counts as "No" and an answer naming a letter past the choices matches nothing; both are counted
in ``meta.unparsed``. The instruction around each question is in our own words (``prompts/dlc_judge.txt``,
replaceable with ``--judge-prompts DIR``); the questions, the choices and the scoring are the benchmark's.

The judge is any OpenAI-compatible server behind ``mllm``'s HTTP backend (concurrency, retries, one clear error
per failed request), and every answer is cached on disk by content (``JudgeCache``: a hash of the model, the
prompt and the settings), so a rerun, or a run after a failure, asks only for what is missing.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..datasets.dlc import LETTERS
from ..errors import UrecaError
from .readers import Entry

MAX_NEW_TOKENS = 300  # the benchmark's judge settings: greedy, at most 300 tokens
RECOGNITION = "recognition"
CAP = True  # a failed recognition caps every value of the region at 0 (the benchmark's rule)


# ------------------------------------------------------------------------------------------- questions
_ENGINE: Any = None


def _inflect() -> Any:
    global _ENGINE
    if _ENGINE is None:
        try:
            import inflect
        except ImportError:
            raise UrecaError("DLC-Bench's recognition question needs the `inflect` package (pip install "
                             "'ureca[score]')") from None
        _ENGINE = inflect.engine()
    return _ENGINE


def recognition_question(class_name: str) -> dict:
    """The benchmark's recognition question for ``class_name`` (plural or singular, with its article), with its
    choices Yes (``correct``) and No (``incorrect``)."""
    engine = _inflect()
    plural = class_name != "bus" and engine.singular_noun(class_name) is not False  # inflect misreads "bus"
    if plural:
        text = (f"Is it likely that the objects in the description are {class_name} or objects of a similar type? "
                "Again, It does not have to be an exact match.")
    else:
        text = (f"Is it likely that the object in the description is {engine.a(class_name)} or an object of a "
                "similar type? Again, It does not have to be an exact match.")
    return {"question": text, "choices": [["Yes", "correct"], ["No", "incorrect"]], "type": RECOGNITION}


def question_text(q: dict) -> str:
    """A question and its choices as the judge reads them: the question, then ``A. text`` lines."""
    lines = [q["question"]] + [f"{LETTERS[i]}. {text}" for i, (text, _) in enumerate(q["choices"])]
    return "\n".join(lines)


def parse_choice(answer: str, choices: Sequence[str]) -> int | None:
    """The index of the choice a judge's ``answer`` picks, by the benchmark script's rules, else ``None``.

    Compared in lower case: the answer equal to a choice, to ``"<letter>. <choice>"`` or to the letter wins at
    once; else the one choice found inside the answer; else a leading ``"<letter>."``; else, of several choices
    found inside, the one that starts last (the longest where two start there); else, of the choices that hold
    the whole answer, the longest; else a lone letter, or a letter and a line break. A letter past the choices
    matches nothing.
    """
    pred = answer.strip().lower()
    if not pred:
        return None
    letters = LETTERS.lower()
    found = []  # (index, where it starts in the answer, its length)
    for i, choice in enumerate(choices):
        c = choice.strip().lower()
        if pred in (c, f"{letters[i]}. {c}", letters[i]):
            return i
        if c in pred:
            found.append((i, pred.index(c), len(c)))
    if len(found) == 1:
        return found[0][0]

    def letter(k: int) -> int | None:
        return k if k < len(choices) else None

    if len(pred) > 1 and pred[0] in letters and pred[1] == ".":
        return letter(letters.index(pred[0]))
    if found:
        last = max(start for _, start, _ in found)
        return max((f for f in found if f[1] == last), key=lambda f: f[2])[0]
    if len(pred) == 1 and pred in letters:
        return None  # a letter past the choices
    inside = [(i, len(c.strip())) for i, c in enumerate(choices) if pred in c.strip().lower()]
    if inside:
        return max(inside, key=lambda f: f[1])[0]
    if pred[0] in letters and (len(pred) == 1 or pred[1] == "\n"):
        return letter(letters.index(pred[0]))
    return None


def score_region(questions: list[dict], answers: list[str]) -> dict:
    """One region's figures from its questions (the recognition question first) and the judge's answers:
    ``recognised``, ``pos`` (mean of positive values), ``neg`` (mean of negative values, ``None`` without
    negatives), ``score`` (mean of all of them), ``unparsed`` and one detail per question (0-1 scale)."""
    if len(questions) != len(answers) or not questions or questions[0]["type"] != RECOGNITION:
        raise ValueError("the recognition question comes first, and every question needs an answer")
    details, pos, neg, unparsed = [], [], [], 0
    recognised = None
    for q, answer in zip(questions, answers, strict=True):
        idx = parse_choice(answer, [c[0] for c in q["choices"]])
        unparsed += idx is None
        detail = {"type": q["type"], "question": q["question"], "answer": answer,
                  "choice": None if idx is None else LETTERS[idx]}
        if q["type"] == RECOGNITION:
            recognised = idx is not None and q["choices"][idx][1] == "correct"
            detail["result"] = "correct" if recognised else "incorrect"
        else:
            raw = q["choices"][idx][1] if idx is not None else 0
            value = min(0, raw) if CAP and not recognised else raw
            detail.update(value=value, raw_value=raw)
            (pos if q["type"] == "positive" else neg).append(value)
        details.append(detail)
    if not pos:
        raise ValueError("a region needs at least one positive question")
    return {"recognised": recognised, "pos": sum(pos) / len(pos), "neg": sum(neg) / len(neg) if neg else None,
            "score": (sum(pos) + sum(neg)) / (len(pos) + len(neg)), "unparsed": unparsed, "questions": details}


def summarize(regions: list[dict]) -> dict:
    """Pos (mean over regions), Neg (mean over regions with negatives) and Avg = (Pos + Neg) / 2, on 0-100."""
    if not regions:
        raise UrecaError("no DLC-Bench region to score")
    pos = 100 * sum(r["pos"] for r in regions) / len(regions)
    negs = [r["neg"] for r in regions if r["neg"] is not None]
    neg = 100 * sum(negs) / len(negs) if negs else None
    avg = (pos + neg) / 2 if neg is not None else None
    return {"Pos": pos, "Neg": neg, "Avg": avg, "regions_with_negatives": len(negs)}


# ------------------------------------------------------------------------------------------- the judge
def default_cache() -> Path:
    """``$XDG_CACHE_HOME/ureca/judge`` (``~/.cache/ureca/judge``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ureca" / "judge"


class JudgeCache:
    """The judge's answers on disk by content: ``<folder>/answers.jsonl``, one line ``{"key", "model",
    "answer"}`` per answer, appended and flushed as each arrives (a torn last line is skipped on reading).
    ``key(model, prompt, settings)`` is a SHA-256 of the three, so a changed prompt or model asks again."""

    FILE = "answers.jsonl"

    def __init__(self, folder: Path):
        import orjson

        self.path = Path(folder) / self.FILE
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UrecaError(f"--judge-cache {folder}: cannot create the folder ({e.strerror})") from None
        self.answers: dict[str, str] = {}
        if self.path.is_file():
            with open(self.path, "rb") as fh:
                for line in fh:
                    try:
                        rec = orjson.loads(line)
                        self.answers[rec["key"]] = rec["answer"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, prompt: str, settings: Any) -> str:
        import orjson

        return hashlib.sha256(orjson.dumps([model, prompt, settings.to_dict()])).hexdigest()

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, model: str, answer: str) -> None:
        import orjson

        with self._lock:
            self.answers[key] = answer
            try:
                with open(self.path, "ab") as fh:
                    fh.write(orjson.dumps({"key": key, "model": model, "answer": answer}) + b"\n")
            except OSError as e:
                raise UrecaError(f"--judge-cache {self.path.parent}: cannot write ({e.strerror})") from None


def ask(backend: Any, prompts: list[str], cache: JudgeCache, settings: Any,
        progress: Callable[[int], None] | None = None) -> tuple[list[str], int]:
    """The judge's answer to every prompt (cached ones from ``cache``, the rest asked ``backend.concurrency`` at a
    time and cached as each arrives); returns the answers and how many requests were made. A failed request
    stops the run with one error once the requests in flight have landed (and been cached)."""
    from ..mllm import BackendError, user

    model = backend.model
    keys = [cache.key(model, p, settings) for p in prompts]
    todo: dict[str, str] = {}
    for k, p in zip(keys, prompts, strict=True):
        if cache.get(k) is None:
            todo.setdefault(k, p)
    failure: BackendError | None = None
    with ThreadPoolExecutor(max(1, min(backend.concurrency, len(todo) or 1))) as pool:
        pending = {pool.submit(backend.chat, [user(p)], settings): k for k, p in todo.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                k = pending.pop(fut)
                try:
                    cache.put(k, model, fut.result())
                except BackendError as e:
                    if failure is None:
                        failure = e
                        for other in pending:
                            other.cancel()
                if progress is not None:
                    progress(1)
            pending = {f: k for f, k in pending.items() if not f.cancelled()}
    if failure is not None:
        got = sum(1 for k in todo if cache.get(k) is not None)
        raise UrecaError(f"DLC-Bench judge: {failure}; {got} of {len(todo)} new answers are cached in "
                         f"{cache.path}, so a rerun asks only for the rest")
    return [cache.get(k) for k in keys], len(todo)  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- a run
@dataclass(frozen=True)
class JudgeConfig:
    """The judge of ``ureca score`` on DLC-Bench: servers (``base_urls``, ending in /v1), ``model`` (None: the
    first the server lists), the HTTP backend's options, the answer cache's folder and the prompt folder."""

    base_urls: tuple[str, ...]
    model: str | None = None
    api_key_env: str | None = None
    concurrency: int = 8
    timeout: float = 120.0
    retries: int = 6
    cache: Path | None = None  # None: default_cache()
    prompts: Path | None = None

    def __post_init__(self):
        if not self.base_urls:
            raise UrecaError("DLC-Bench is scored by an LLM judge: give its server with --judge-base-url URL "
                             "(an OpenAI-compatible server, such as `vllm serve meta-llama/Llama-3.1-8B-Instruct`)")
        if self.concurrency < 1:
            raise UrecaError(f"--judge-concurrency {self.concurrency}: needs at least 1")
        if self.prompts is not None and not Path(self.prompts).is_dir():
            raise UrecaError(f"--judge-prompts {self.prompts}: not a folder")

    def backend(self) -> Any:
        from ..mllm import make_backend

        return make_backend("openai", base_urls=list(self.base_urls), model=self.model,
                            api_key_env=self.api_key_env, concurrency=self.concurrency, timeout=self.timeout,
                            retries=self.retries)


@dataclass
class DlcResult:
    """``summary``: Pos, Neg, Avg (0-100), counts and ``meta``; ``items``: one dict per region."""

    summary: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)


def templates(cfg: JudgeConfig) -> Any:
    from ..prompts import load_templates

    return load_templates(cfg.prompts, ["dlc_judge"], {"dlc_judge": ("description", "question")})


def score_dlc(preds: dict[str, Entry], folder: Path, cfg: JudgeConfig, *, allow_missing: bool = False,
              backend: Any = None, progress: Callable[[int], None] | None = None) -> DlcResult:
    """Judge predicted captions (by region id, or by DLC-Bench's annotation id as DAM's files key them) against
    the benchmark in ``folder`` (see the module docstring)."""
    from ..datasets import ReadOptions
    from ..datasets import read as read_regions
    from ..datasets.dlc import load_class_names, load_questions
    from ..mllm import GenerationSettings
    from .readers import by_alias, one_sided

    qa = load_questions(folder)
    classes = load_class_names(folder)
    missing_class = [k for k in qa if k not in classes]
    if missing_class:
        raise UrecaError(f"{folder / 'class_names.json'}: no class name for annotation {missing_class[0]} "
                         f"(qa.json asks about it)")
    refs: dict[str, Entry] = {}
    by_key: dict[str, str] = {}
    for unit in read_regions(folder, "dlc", ReadOptions(need=())):
        if unit.error is not None:
            raise unit.error
        for region in unit.value:
            key = region["benchmark_id"]
            if key in qa:
                refs[region["id"]] = Entry([], region["image_id"], unit.where, alias=key)
                by_key[key] = region["id"]
    for key in qa:  # a question set for an annotation the file does not hold: named by its key alone
        if key not in by_key:
            refs[key] = Entry([], None, f"{folder / 'qa.json'}: key {key!r}", alias=key)
            by_key[key] = key
    preds = by_alias({k: v for k, v in preds.items() if not (k == "query" and k not in refs)}, refs)
    only_p, only_r = one_sided(preds, refs, allow_missing, "prediction id(s) are not DLC-Bench regions",
                               "DLC-Bench region(s) have no prediction", "judge the regions on both sides")
    ids = [i for i in refs if i in preds]
    if not ids:
        raise UrecaError("predictions and DLC-Bench share no region: nothing to judge")
    t = templates(cfg)
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0)
    plan: list[tuple[str, list[dict]]] = []
    prompts: list[str] = []
    for rid in ids:
        key = refs[rid].alias
        questions = [recognition_question(classes[key]), *qa[key]]
        plan.append((rid, questions))
        caption = preds[rid].captions[0]
        prompts += [t.render("dlc_judge", description=caption, question=question_text(q)) for q in questions]
    own = backend is None
    backend = backend or cfg.backend()
    try:
        cache = JudgeCache(cfg.cache or default_cache())
        answers, asked = ask(backend, prompts, cache, settings, progress)
        described = backend.describe()
    finally:
        if own:
            backend.close()
    items, regions, start, unparsed = [], [], 0, 0
    for rid, questions in plan:
        n = len(questions)
        region = score_region(questions, answers[start:start + n])
        start += n
        unparsed += region["unparsed"]
        regions.append(region)
        key = refs[rid].alias
        items.append({"id": rid, "benchmark_id": key, "image_id": refs[rid].image_id, "class_name": classes[key],
                      "prediction": preds[rid].captions[0], "recognised": region["recognised"],
                      "pos": 100 * region["pos"], "neg": None if region["neg"] is None else 100 * region["neg"],
                      "score": 100 * region["score"], "questions": region["questions"]})
    summary: dict[str, Any] = {"benchmark": "DLC-Bench", "count": len(ids), **summarize(regions)}
    summary["recognised"] = sum(1 for r in regions if r["recognised"])
    summary["meta"] = {
        "judge": described, "prompt_version": t.version, "questions": len(prompts), "asked": asked,
        "cached": len(prompts) - asked, "unparsed": unparsed, "cache": str(cache.path),
        "settings": settings.to_dict(), "left_out_predictions": len(only_p), "left_out_references": len(only_r),
    }
    return DlcResult(summary, items)
