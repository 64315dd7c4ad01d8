"""Stages 2 and 3 of curation: a short phrase for every region top-down, then paragraphs bottom-up.

Input: tree records (``ureca tree``), one image per record, nodes with ``role`` ``main|part|dropped``.
For every main object and every non-dropped node below it:
- top-down (breadth-first from each main object): a short phrase from two images (the region contoured in its
  context, and its blurred-background crop), given the parent's short phrase and the phrases of the siblings
  before it (siblings ordered by area, largest first, then id). A main object's prompt has no parent.
- bottom-up: a leaf keeps its short phrase as its long caption; a parent gets one paragraph from its short
  phrase, its children's long captions and the full photo with the parent contoured.
Each captioned node gets ``short_caption``, ``long_caption`` and ``caption`` (= the long one); the record
gets ``annotate``: backend, model, prompt version, generation and visual settings.

Work is scheduled as a graph: a request is sent as soon as its inputs are ready, so many images and, within an
image, every ready node are in flight at once, up to the backend's concurrency (``Annotator``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import prompts
from .. import records as R
from ..errors import UrecaError
from ..images import load_image
from ..masks.boxed import boxed_node_mask
from ..mllm import ChatBackend, EncodedImage, GenerationSettings
from ..stream import check_output_folder
from ..visual.jpeg import JpegEncoder, Picture
from ..visual.prompter import VisualPrompter, VisualSettings
from .annotate_plan import ImageState, Plan, Workers, count_requests, plan_record, remaining_chain
from .inflight import InFlight

__all__ = ["AnnotateConfig", "Annotator", "count_requests", "load_templates", "plan_record", "run"]

TEMPLATE_NAMES = ("main_phrase", "part_phrase", "part_phrase_siblings", "paragraph")
ANNOTATE = R.ANNOTATE  # the record-level field that says how captions were made


def load_templates(folder: str | Path | None = None) -> prompts.Templates:
    """Annotate's templates (``ureca_cli/prompts``), with any in ``folder`` (``--prompts DIR``) taking their place."""
    return prompts.load_templates(folder, TEMPLATE_NAMES)


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AnnotateConfig:
    """Settings of the annotate stage (the CLI's options map onto these fields)."""

    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # drawn at the size InternVL's tiling keeps of each picture (VisualSettings.for_max_side: --max-side not given)
    visual: VisualSettings = field(default_factory=lambda: VisualSettings.for_max_side(None))
    prompts: Path | None = None  # folder of templates overriding the package's
    save_prompts: Path | None = None  # write every image sent here, by image and node
    images_in_flight: int | None = None  # None: twice the backend's concurrency, at most 64
    # processes that draw and JPEG-encode the prompt images (None: up to 4 for the HTTP backend, whose
    # requests then cost this process almost nothing; 0: draw them in threads, as PIL images)
    prepare_workers: int | None = None

    def __post_init__(self):
        if self.prepare_workers is not None and self.prepare_workers < 0:
            raise UrecaError(f"--prepare-workers {self.prepare_workers}: needs 0 or more")
        if self.images_in_flight is not None and self.images_in_flight < 1:
            raise UrecaError(f"--images-in-flight {self.images_in_flight}: needs at least 1")
        if self.prompts is not None and not Path(self.prompts).is_dir():
            raise UrecaError(f"--prompts {self.prompts}: not a folder")
        check_output_folder("--save-prompts", self.save_prompts)


# -------------------------------------------------------------------------------------------- the engine
class Annotator(InFlight):
    """Captions tree records through one chat backend, keeping up to ``backend.concurrency`` requests busy.

    ``annotate(rec, where)`` is thread-safe: call it from many threads (one per image in flight, as
    ``run`` does) and every request of every image shares one pool of ``backend.concurrency`` workers.
    """

    def __init__(self, backend: ChatBackend, cfg: AnnotateConfig | None = None):
        self.cfg = cfg or AnnotateConfig()
        super().__init__(backend.concurrency, self.cfg.images_in_flight, self.cfg.save_prompts)
        self.backend = backend
        self.templates = load_templates(self.cfg.prompts)
        self._workers = Workers(max(1, backend.concurrency))
        self._images = 0
        workers = self.cfg.prepare_workers
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if backend.kind == "openai" and _can_spawn() else 0
        self.prepare_workers = workers
        self._prep: Any = None

    def backends(self) -> list[Any]:
        return [self.backend]

    def _prepare_pool(self) -> Any:
        with self._lock:
            if self._prep is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                from ..workers import worker_init

                ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
                self._prep = ProcessPoolExecutor(self.prepare_workers, mp_context=ctx, initializer=worker_init,
                                                 initargs=(os.getpid(),))
            return self._prep

    def provenance(self) -> dict[str, Any]:
        return {
            **self.backend.describe(),
            "prompt_version": self.templates.version,
            "generation": self.cfg.generation.to_dict(),
            "visual": self.cfg.visual.describe(),
        }

    # ----------------------------------------------------------------------------------- one request
    def _ask(self, parts: list[Any], image_id: str, node_id: Any, names: list[str]) -> str:
        return self.ask(self.backend, parts, image_id, node_id, names, self.cfg.generation)

    def _short(self, ctx: Any, nid: Any, parent_short: str | None, sibling_shorts: list[str]) -> str:
        context = ctx.context(nid)
        if parent_short is None:
            text = self.templates.render("main_phrase")
        else:
            if sibling_shorts:
                listed = "\n".join(f"- {s}" for s in sibling_shorts)
                text = self.templates.render("part_phrase_siblings", parent=parent_short, siblings=listed)
            else:
                text = self.templates.render("part_phrase", parent=parent_short)
        return self._ask([context, ctx.crop(nid), text], ctx.image_id, nid, ["context", "crop"])

    def _long(self, ctx: Any, nid: Any, short: str, child_longs: list[str]) -> str:
        image = ctx.full(nid)
        listed = "\n".join(f"- {c}" for c in child_longs)
        text = self.templates.render("paragraph", short=short, children=listed)
        return self._ask([image, text], ctx.image_id, nid, ["paragraph"])

    # ------------------------------------------------------------------------------------- one image
    def annotate(self, rec: dict, where: str = "<record>") -> dict:
        """Caption every node of one tree record (updated in place and returned); raises on failure.

        Requests are queued on the shared workers as soon as their inputs are ready; the worker that
        finishes a request queues the requests it unblocks, so no thread hop sits between a request and
        the next. Queued requests of images that came earlier go first, then those with the longest
        chain of requests still behind them.
        """
        plan = plan_record(rec, where)
        ctx: Any
        if self.prepare_workers > 0:
            images = self._prepare_pool().submit(prepare_images, rec, where, self.cfg.visual).result()
            ctx = _Prepared(str(rec[R.IMAGE_ID]), images)
        else:
            ctx = _ImageContext(rec, plan, where, self.cfg.visual)
        with self._lock:
            self._images += 1
            seq = self._images
        state = ImageState(plan)
        chain = remaining_chain(plan)

        def submit(kind: str, nid: Any) -> None:
            self._workers.submit((seq, -chain[kind, nid]), lambda: run(kind, nid))

        def run(kind: str, nid: Any) -> None:
            if state.done.is_set():
                return
            try:
                if self._abort.is_set():
                    raise UrecaError("stopped")
                if kind == "short":
                    p = state.parent_of.get(nid)
                    with state.lock:
                        parent = state.short[p] if p is not None else None
                        sibs = plan.kids[p] if p is not None else [nid]
                        before = [state.short[s] for s in sibs[: sibs.index(nid)]]
                    answer = self._short(ctx, nid, parent, before)
                else:
                    with state.lock:
                        own, kids = state.short[nid], [state.long[c] for c in plan.kids[nid]]
                    answer = self._long(ctx, nid, own, kids)
            except BaseException as e:  # noqa: BLE001 - the image fails with this error
                state.fail(e)
                return
            for nxt in state.record(kind, nid, answer):
                submit(*nxt)

        for m in plan.mains:
            submit("short", m)
        if not plan.mains:
            state.done.set()
        state.done.wait()
        if state.error is not None:
            raise state.error
        for nid in plan.order:
            node = plan.nodes[nid]
            node[R.SHORT_CAPTION] = state.short[nid]
            node[R.LONG_CAPTION] = state.long[nid]
            node[R.CAPTION] = state.long[nid]
        rec[ANNOTATE] = self.provenance()
        return rec

    # ------------------------------------------------------------------------------------ many images
    def close(self) -> None:
        super().close()
        self._workers.close()
        if self._prep is not None:
            self._prep.shutdown(wait=True, cancel_futures=True)
            self._prep = None


class _ImageContext:
    """One image in flight: the photo, its prompter, and node masks decoded on demand, each only over its own
    box (``masks.BoxedMask``), and kept while the image is in flight."""

    def __init__(self, rec: dict, plan: Plan, where: str, visual: VisualSettings):
        self.image_id = str(rec[R.IMAGE_ID])
        self.plan = plan
        self.where = where
        self.width, self.height = rec[R.WIDTH], rec[R.HEIGHT]
        image = load_image(rec[R.IMAGE], width=self.width, height=self.height, where=where)
        self.prompter = VisualPrompter(image, visual)
        self._masks: dict[Any, Any] = {}
        self._full: dict[Any, Any] = {}  # node -> its paragraph picture (visual.jpeg.Picture)
        self._lock = threading.Lock()

    def context(self, nid: Any, layered: bool = False):
        """Top-down picture 1: a main object's whole photo contoured (the same image as its paragraph's),
        a part's main-object crop with the part contoured. ``layered``: as a ``visual.jpeg.Picture``."""
        main = self.plan.main_of[nid]
        if main == nid:
            return self.full(nid, layered)
        pic = self.prompter.picture("contour_in_context", self.mask(nid), self.mask(main))
        return pic if layered else pic.image()

    def crop(self, nid: Any, layered: bool = False):
        """Top-down picture 2: the region sharp on a blurred background, cropped to its pixel box."""
        pic = self.prompter.picture("blurred_crop", self.mask(nid))
        return pic if layered else pic.image()

    def full(self, nid: Any, layered: bool = False):
        """The whole photo with node ``nid`` contoured, made once (a main object's context and its
        paragraph use the same image, so the HTTP backend encodes it once)."""
        with self._lock:
            pic = self._full.get(nid)
        if pic is None:
            pic = self.prompter.picture("full_contour", self.mask(nid))
            with self._lock:
                pic = self._full.setdefault(nid, pic)
        return pic if layered else pic.image()

    def mask(self, nid: Any):
        """The mask of node ``nid`` as a ``masks.BoxedMask`` (its box's window: what the prompts need of it)."""
        with self._lock:
            m = self._masks.get(nid)
        if m is None:
            m = boxed_node_mask(self.plan.nodes[nid], self.height, self.width, self.where)
            with self._lock:
                self._masks[nid] = m
        return m


def _can_spawn() -> bool:
    """Whether worker processes can be spawned: not when ``__main__`` is a file that cannot be re-imported
    (a script fed on stdin, ``python -``)."""
    import sys

    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or Path(main_file).is_file()


class _Prepared:
    """The prompt images of one image, drawn and encoded beforehand in a worker process."""

    def __init__(self, image_id: str, images: dict[str, dict[Any, EncodedImage]]):
        self.image_id = image_id
        self.images = images

    def context(self, nid: Any) -> EncodedImage:
        return self.images["context"][nid]

    def crop(self, nid: Any) -> EncodedImage:
        return self.images["crop"][nid]

    def full(self, nid: Any) -> EncodedImage:
        return self.images["full"][nid]


def prepare_images(rec: dict, where: str, visual: VisualSettings) -> dict[str, dict[Any, EncodedImage]]:
    """Every prompt image one tree record needs, JPEG-encoded: ``{"context"|"crop"|"full": {node: image}}``
    (``full`` for nodes with children). Runs in a worker process; raises ``InputError`` on bad input.

    Each node's pictures are made in turn (full, context, crop), parents before children, so a main object's
    backdrop is still cached when its parts' context pictures are drawn; the JPEG encoder encodes each backdrop
    once and, for a contoured picture, only the rows its contour touches (``visual.jpeg``)."""
    plan = plan_record(rec, where)
    ctx = _ImageContext(rec, plan, where, visual)
    encoder = JpegEncoder()

    def encoded(pic: Picture) -> EncodedImage:
        return EncodedImage(encoder.encode(pic), "image/jpeg", pic.size)

    out: dict[str, dict[Any, EncodedImage]] = {"context": {}, "crop": {}, "full": {}}
    for nid in plan.order:
        if plan.kids[nid] or plan.main_of[nid] == nid:
            out["full"][nid] = encoded(ctx.full(nid, layered=True))
        if plan.main_of[nid] == nid:
            out["context"][nid] = out["full"][nid]
        else:
            out["context"][nid] = encoded(ctx.context(nid, layered=True))
        out["crop"][nid] = encoded(ctx.crop(nid, layered=True))
    return out


def run(input: str | Path, annotator: Annotator, cfg: Any) -> Any:
    """Annotate the tree records of ``input`` (a JSONL path, ``-`` for stdin) under the stream contract
    (``stream.run_stage``: input order, ``--resume``, ``--failed``, ``--on-error``, ``--shard``); ``cfg`` is the
    ``StreamConfig``. Returns run_stage's summary."""
    from ..stream import Item, iter_jsonl

    def items() -> Iterator[Item]:
        for it in iter_jsonl(input):  # the work sees (record, "file:line") so messages name the line
            yield Item((it.value, it.where), it.where, it.raw, it.error)

    def work(pair: tuple[dict, str]) -> dict:
        rec, where = pair
        return annotator.annotate(rec, where)

    def input_key(pair: tuple[Any, str]) -> str | None:
        rec = pair[0]
        return str(rec[R.IMAGE_ID]) if isinstance(rec, dict) and R.IMAGE_ID in rec else None

    return annotator.run("annotate", items(), work, cfg, input_key=input_key,
                         output_key=lambda rec: str(rec.get(R.IMAGE_ID)))
