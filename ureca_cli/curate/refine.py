"""Stage 4 of curation: uniqueness refinement, optional verification, and export (``ureca refine``).

For each image record (one line of ``ureca annotate``'s output):

1. every captioned node is embedded with DINOv2 (``features.py``: the region's blurred-background crop, or
   masked pooling over one pass on the whole image); cosine similarity over the image's captioned nodes gives
   each node its similar set, those above ``threshold``, most similar first, at most ``max_similar``;
2. each node with a non-empty similar set gets a set-of-mark image (``visual/setofmark.py``: the node as index 0
   in blue, its look-alikes 1, 2, ...) and the refinement prompt with its caption; the answer is stored as
   ``unique_caption`` and becomes ``caption``. Every node embedded gets ``similar``: ``[{"id", "score"}]``;
3. with ``verify``, a judge model answers True or False for each captioned node's final caption, shown the
   region as annotate shows it (outlined in its context, and its blurred-background crop); the answer is
   stored as ``verified``. An answer that is neither is followed, in the same conversation, by one reminder of
   the two words expected (``verify_retry.txt``); a second such answer leaves the node unverified with
   ``verified: null`` (counted as ``undecided``), and the run goes on. ``drop_unverified`` removes the nodes not
   judged True (False or undecided; their children move up to the removed node's parent);
4. the record is written as it is, or exported (``export.py``): ``flat`` region records or ``internvl``.

Every field a node had is kept. The refinement prompt starts from the node's ``long_caption`` (annotate's
paragraph; ``caption`` when there is none), so running refine again on its own output redoes the same job
instead of refining a refined caption. The record gains ``refine``: the models, backend, prompt version,
generation settings, feature settings and counts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import prompts
from .. import records as R
from ..errors import InputError, UrecaError
from ..images import load_image
from ..masks import decode, node_mask
from ..stream import check_output_folder
from ..visual.prompter import VisualPrompter, VisualSettings
from ..visual.setofmark import MarkSettings, set_of_mark
from .export import DEFAULT_QUESTION, check_format, export
from .features import FeatureConfig, RegionEmbedder, cosine_matrix, similar_sets
from .inflight import InFlight

STAMP = R.REFINE  # the record-level field that says how captions were refined
TEMPLATES = ("refine", "verify", "verify_retry")


def load_templates(folder: Path | None = None) -> Any:
    """The refine and verify templates (``$caption``) and the judge's reminder (``verify_retry``, ``$caption``
    optional), with any ``refine.txt``/``verify.txt``/``verify_retry.txt`` in ``folder`` (``--prompts DIR``)
    taking the package's place; versioned as annotate's are (``ureca-prompts-N+hash``)."""
    return prompts.load_templates(folder, TEMPLATES, {"refine": ("caption",), "verify": ("caption",)})


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class RefineConfig:
    """Settings of one ``ureca refine`` run (the command's options map onto these fields)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    threshold: float = 0.8
    max_similar: int | None = 8  # None: no cap
    refine: bool = True
    verify: bool = False
    drop_unverified: bool = False
    visual: VisualSettings = field(default_factory=VisualSettings)
    marks: MarkSettings = field(default_factory=MarkSettings)
    generation: Any = None  # mllm.GenerationSettings; None: the backend's defaults
    prompts: Path | None = None  # folder of templates overriding the package's
    save_prompts: Path | None = None  # write every image sent here: DIR/<image_id>/<node id>_<kind>.png
    images_in_flight: int | None = None  # None: twice the backend's concurrency, at least 2, at most 64
    format: str = "records"
    question: str = DEFAULT_QUESTION

    def __post_init__(self):
        if not -1.0 <= self.threshold <= 1.0:
            raise UrecaError(f"--threshold {self.threshold}: a cosine similarity lies in [-1, 1]")
        if self.max_similar is not None and self.max_similar < 1:
            raise UrecaError(f"--max-similar {self.max_similar}: needs at least 1 (0 on the command line: no cap)")
        if self.drop_unverified and not self.verify:
            raise UrecaError("--drop-unverified needs --verify")
        check_format(self.format)
        if not self.question.strip():
            raise UrecaError("--question: needs some text")
        if self.images_in_flight is not None and self.images_in_flight < 1:
            raise UrecaError(f"--images-in-flight {self.images_in_flight}: needs at least 1")
        if self.prompts is not None and not Path(self.prompts).is_dir():
            raise UrecaError(f"--prompts {self.prompts}: not a folder")
        check_output_folder("--save-prompts", self.save_prompts)

    @property
    def needs_model(self) -> bool:
        return self.refine or self.verify


def check_captioned(rec: dict, where: str) -> None:
    """Refuse an image record with regions to caption (main objects or parts) but no caption on any node: a
    tree record that skipped ``ureca annotate``, which would otherwise pass through refined and exported as
    nothing, silently."""
    if any(True for _ in R.captioned_nodes(rec)):
        return
    if any(n.get(R.ROLE) in (R.ROLE_MAIN, R.ROLE_PART) for n in rec[R.NODES]):
        raise InputError("no node has a caption (a tree record? caption it with ureca annotate first)",
                         source=where)


def parse_verdict(answer: str) -> bool | None:
    """``True``/``False`` from a judge's answer (its first word, case and punctuation ignored), else ``None``."""
    words = re.findall(r"[A-Za-z]+", answer)
    if not words:
        return None
    first = words[0].lower()
    return True if first == "true" else False if first == "false" else None


# ----------------------------------------------------------------------------------------------- stage
class Refiner(InFlight):
    """Refines (and verifies, and exports) image records.

    ``backend`` is the chat model that rewrites captions, ``judge`` the one that verifies (default: the same);
    either may be ``None`` when the config does not need it. ``__call__(rec)`` is thread-safe: ``mapper``
    runs ``images_in_flight`` images at once, and their requests share one pool of workers as large as the
    backend's concurrency, so the backend stays full across image boundaries.
    """

    def __init__(self, cfg: RefineConfig, backend: Any = None, judge: Any = None,
                 embedder: RegionEmbedder | None = None):
        self.cfg = cfg
        self.backend = backend
        self.judge = judge if judge is not None else backend
        if cfg.refine and self.backend is None:
            raise UrecaError("refinement needs a chat backend")
        if cfg.verify and self.judge is None:
            raise UrecaError("--verify needs a chat backend for the judge")
        self.embedder = embedder or (RegionEmbedder(cfg.features) if cfg.refine else None)
        if self.embedder is not None:
            self.embedder.model  # noqa: B018 - load now: a bad --features-model is one error, not one per image
        self.templates = load_templates(cfg.prompts)
        workers = max([1] + [int(getattr(b, "concurrency", 1) or 1) for b in (self.backend, self.judge) if b])
        super().__init__(workers, cfg.images_in_flight, cfg.save_prompts)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ureca-refine")

    def backends(self) -> list[Any]:
        return [b for b in (self.backend, self.judge) if b is not None]

    def stamp(self) -> dict:
        """What each record says about how it was refined (models, backend, prompts, settings)."""
        out: dict[str, Any] = {"prompt_version": self.templates.version}
        if self.cfg.refine:
            f = self.cfg.features
            out.update(self.backend.describe())
            out["features"] = {"model": f.model, "mode": f.mode, "threshold": self.cfg.threshold,
                               "max_similar": self.cfg.max_similar}
        if self.cfg.verify:
            out["judge"] = self.judge.describe()
        out["generation"] = self._settings().to_dict()
        return out

    def _settings(self) -> Any:
        from ..mllm import GenerationSettings

        return self.cfg.generation or GenerationSettings()

    def _ask(self, backend: Any, rec: dict, node: dict, images: list[tuple[str, Any]], text: str) -> str:
        """One chat request: ``images`` (name, PIL image) then ``text``."""
        return self.ask(backend, [*(im for _, im in images), text], rec[R.IMAGE_ID], node[R.ID],
                        [name for name, _ in images], self._settings())

    def _run_all(self, jobs: list, fn: Callable[[Any], Any]) -> list:
        """``fn(job)`` for every job on the shared pool, results in order; the first error fails them all."""
        futures = [self._pool.submit(fn, j) for j in jobs]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        super().close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------------------------------------- one image
    def __call__(self, rec: Any) -> dict | list[dict]:
        """Refine (and verify) one image record in place; returns it, or its lines in the output format."""
        where = f"image {rec.get(R.IMAGE_ID)!s}" if isinstance(rec, dict) and R.IMAGE_ID in rec else "image record"
        R.check_image_record(rec, where)
        check_captioned(rec, where)
        if not self.cfg.needs_model:
            return export(rec, self.cfg.format, question=self.cfg.question)
        nodes = list(R.captioned_nodes(rec))
        h, w = rec[R.HEIGHT], rec[R.WIDTH]
        packed: dict[int, np.ndarray] = {}  # masks kept as bits: 100 masks of 1500x2250 take 42 MB, not 340
        lock = threading.Lock()

        def mask(i: int) -> np.ndarray:
            """Node ``nodes[i]``'s ``HxW uint8`` 0/1 mask, decoded once and kept bit-packed while the image runs."""
            with lock:
                bits = packed.get(i)
            if bits is not None:
                return np.unpackbits(bits, count=h * w).reshape(h, w)
            m = node_mask(nodes[i], h, w, where)
            with lock:
                packed[i] = np.packbits(m)
            return m

        counts: dict[str, int] = {"refined": 0} if self.cfg.refine else {}
        if nodes:
            image = load_image(rec[R.IMAGE], width=w, height=h, where=where)
            prompter = VisualPrompter(image, self.cfg.visual)
            if self.cfg.refine:
                counts["refined"] = self._refine(rec, nodes, image, prompter, mask)
            if self.cfg.verify:
                counts.update(self._verify(rec, nodes, prompter, mask))
        stamp = self.stamp()
        stamp.update(counts)
        rec[STAMP] = stamp
        return export(rec, self.cfg.format, question=self.cfg.question)

    def _embed(self, nodes: list[dict], image: Any, prompter: VisualPrompter, mask: Any) -> np.ndarray:
        """``(len(nodes), D)`` L2-normalised embeddings of the nodes' regions."""
        if self.cfg.features.mode == "masked-pool":
            return self.embedder.embed_masked(image, (mask(i) for i in range(len(nodes))))
        return self.embedder.embed_crops([prompter.blurred_crop(mask(i)) for i in range(len(nodes))])

    def _refine(self, rec: dict, nodes: list[dict], image: Any, prompter: VisualPrompter, mask: Any) -> int:
        emb = self._embed(nodes, image, prompter, mask)
        sets = similar_sets(cosine_matrix(emb), self.cfg.threshold, self.cfg.max_similar)
        for node, row in zip(nodes, sets, strict=True):
            node[R.SIMILAR] = [{"id": nodes[j][R.ID], "score": round(s, 4)} for j, s in row]
        jobs = [i for i, row in enumerate(sets) if row]

        def ask(i: int) -> str:
            node = nodes[i]
            som = set_of_mark(image, mask(i), [mask(j) for j, _ in sets[i]], self.cfg.marks)
            source = node.get(R.LONG_CAPTION) if isinstance(node.get(R.LONG_CAPTION), str) else node[R.CAPTION]
            text = self.templates.render("refine", caption=source.strip())
            return self._ask(self.backend, rec, node, [("setofmark", som)], text)

        answers = self._run_all(jobs, ask)
        for i, answer in zip(jobs, answers, strict=True):
            nodes[i][R.UNIQUE_CAPTION] = answer
            nodes[i][R.CAPTION] = answer
        return len(jobs)

    def _main_mask(self, rec: dict, node: dict) -> np.ndarray | None:
        """The ``HxW`` mask of the main object a part belongs to, or ``None`` for a main object (or no roles)."""
        if node.get(R.ROLE) != R.ROLE_PART:
            return None
        index = R.node_index(rec)
        seen = set()
        parent = node.get(R.PARENT)
        while parent is not None and parent in index and parent not in seen:
            seen.add(parent)
            anc = index[parent]
            if anc.get(R.ROLE) == R.ROLE_MAIN:
                return decode(anc[R.RLE], f"node {anc[R.ID]!r}")
            parent = anc.get(R.PARENT)
        return None

    def _verify(self, rec: dict, nodes: list[dict], prompter: VisualPrompter, mask: Any) -> dict:
        from ..mllm import Message, user

        def ask(i: int) -> bool | None:
            node = nodes[i]
            context = prompter.contour_in_context(mask(i), self._main_mask(rec, node))
            crop = prompter.blurred_crop(mask(i))
            text = self.templates.render("verify", caption=node[R.CAPTION].strip())
            images = [("verify_context", context), ("verify_crop", crop)]
            answer = self._ask(self.judge, rec, node, images, text)
            verdict = parse_verdict(answer)
            if verdict is None:  # once more, in the same conversation, with the two words it may answer
                again = (Message("assistant", (answer,)), user(self.templates.render("verify_retry", caption=node[R.CAPTION].strip())))
                verdict = parse_verdict(self.ask(self.judge, [context, crop, text], rec[R.IMAGE_ID], node[R.ID],
                                                 [name for name, _ in images], self._settings(), then=again))
            return verdict

        verdicts = self._run_all(list(range(len(nodes))), ask)
        for node, v in zip(nodes, verdicts, strict=True):
            node[R.VERIFIED] = v
        judged_true = sum(v is True for v in verdicts)
        out = {"verified": judged_true, "unverified": len(verdicts) - judged_true,
               "undecided": sum(v is None for v in verdicts)}
        if self.cfg.drop_unverified:
            out["dropped"] = drop_nodes(rec, {n[R.ID] for n, v in zip(nodes, verdicts, strict=True) if v is not True})
        return out


def drop_nodes(rec: dict, ids: set) -> int:
    """Remove the nodes ``ids`` from an image record; each removed node's children move up to its parent
    (their ``depth`` drops by one per removed ancestor). Returns how many were removed."""
    if not ids:
        return 0
    index = R.node_index(rec)

    def kept_parent(pid: Any) -> Any:
        seen = set()
        while pid is not None and pid in ids and pid in index and pid not in seen:
            seen.add(pid)
            pid = index[pid].get(R.PARENT)
        return pid

    def removed_above(node: dict) -> int:
        n, pid, seen = 0, node.get(R.PARENT), set()
        while pid is not None and pid in index and pid not in seen:
            seen.add(pid)
            n += pid in ids
            pid = index[pid].get(R.PARENT)
        return n

    kept = [n for n in rec[R.NODES] if n[R.ID] not in ids]
    shifts = {n[R.ID]: removed_above(n) for n in kept}
    for node in kept:
        if R.PARENT in node:
            node[R.PARENT] = kept_parent(node[R.PARENT])
        if isinstance(node.get(R.DEPTH), int) and shifts[node[R.ID]]:
            node[R.DEPTH] -= shifts[node[R.ID]]
    children: dict[Any, list] = {}
    for node in kept:
        children.setdefault(node.get(R.PARENT), []).append(node[R.ID])
    for node in kept:
        if R.CHILDREN in node and isinstance(node[R.CHILDREN], list):
            # keep the existing order of surviving children, then the adopted grandchildren
            own = [c for c in node[R.CHILDREN] if c not in ids]
            node[R.CHILDREN] = own + [c for c in children.get(node[R.ID], []) if c not in own]
    removed = len(rec[R.NODES]) - len(kept)
    rec[R.NODES] = kept
    return removed


def run(inputs: list[str] | None, refiner: Refiner, scfg: Any) -> Any:
    """Refine the image records of ``inputs`` (JSONL paths; none or ``-``: stdin) under the stream contract
    (``stream.run_stage``; ``scfg`` is the ``StreamConfig``), writing each in ``refiner.cfg.format``. Returns
    run_stage's summary."""
    from ..stream import iter_jsonl
    from .export import output_image_key

    def input_key(rec: Any) -> Any:
        return str(rec[R.IMAGE_ID]) if isinstance(rec, dict) and R.IMAGE_ID in rec else None

    items = (item for path in (inputs or ["-"]) for item in iter_jsonl(path))
    return refiner.run("refine", items, refiner, scfg, input_key=input_key, output_key=output_image_key,
                       in_flight=refiner.cfg.needs_model,
                       group_key=output_image_key if refiner.cfg.format != "records" else None)
