"""What annotate and refine share: many images in flight through chat backends, under the stream contract.

``InFlight`` is the base of ``annotate.Annotator`` and ``refine.Refiner``: how many images are worked on at once
(``images_in_flight``: twice the backends' concurrency, at least 2, at most 64, unless given), the
``stream.run_stage`` mapper that runs them and stops the requests still queued when the run ends early,
``ask`` (one chat request: stopped when the run stops or when stdout's reader is gone, counted, and with
``--save-prompts`` every image it sends written to ``DIR/<image_id>/<node id>_<kind>.<ext>``, the ids made into
names by ``records.file_name``), ``run`` (a stream of records through the stage, after checking that every
backend can answer), and ``close``.

When the stage writes to a pipe whose reader went away (the next stage stopped), no request is sent after
it is noticed: each request first looks at the pipe (``output.ReaderWatch``), so only those already in flight
finish, and ``run_stage`` says how many images were written and lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UrecaError
from ..records import file_name


def save_prompt_images(folder: Path, image_id: Any, node_id: Any, images: list[Any], names: list[str]) -> None:
    """Write the images of one request (``PIL`` images as PNG, ``EncodedImage``s as they are) to
    ``folder/<image_id>/<node id>_<name>.<ext>`` (``--save-prompts``: annotate, refine, and caption's baselines),
    the ids made into names by ``records.file_name``; ``node_id`` ``None``: ``<name>.<ext>`` (one picture for
    the whole image)."""
    from ..mllm import EncodedImage

    where = Path(folder) / file_name(image_id)
    where.mkdir(parents=True, exist_ok=True)
    for im, name in zip(images, names, strict=True):
        stem = name if node_id is None else f"{file_name(node_id)}_{name}"
        if isinstance(im, EncodedImage):
            (where / f"{stem}{im.suffix}").write_bytes(im.data)
        else:
            im.save(where / f"{stem}.png", compress_level=1)


class InFlight:
    """Images in flight over chat backends of ``concurrency`` requests at once (see the module docstring)."""

    def __init__(self, concurrency: int, images_in_flight: int | None = None, save_prompts: Path | None = None):
        self.concurrency = max(1, int(concurrency))
        self._images_in_flight = images_in_flight
        self.save_prompts = save_prompts
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._watch: Any = None  # output.ReaderWatch on stdout while a run writes to a pipe
        self.requests = 0  # chat calls made, for summaries and tests

    @property
    def images_in_flight(self) -> int:
        return self._images_in_flight or min(64, max(2, 2 * self.concurrency))

    def ask(self, backend: Any, parts: list[Any], image_id: Any, node_id: Any, names: list[str], settings: Any,
            then: tuple[Any, ...] = ()) -> str:
        """One chat request of ``parts`` (text, ``PIL`` images, ``EncodedImage``s, in order) to ``backend``; the
        images are saved first under ``names`` with ``--save-prompts``. ``then``: messages that follow in the same
        conversation (the model's answer and a reminder, when a question is asked again; the images were saved
        the first time). Raises when the run has stopped."""
        from ..mllm import user

        if self._watch is not None and self._watch.gone():
            self._abort.set()  # the output would go nowhere: the run stops (run_stage says so)
        if self._abort.is_set():
            raise UrecaError("stopped")
        if self.save_prompts is not None and not then:
            save_prompt_images(self.save_prompts, image_id, node_id, [p for p in parts if not isinstance(p, str)],
                               names)
        with self._lock:
            self.requests += 1
        return backend.chat([user(*parts), *then], settings)

    def mapper(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """A ``run_stage`` mapper: ``images_in_flight`` images at once, results in input order; stops the
        requests still queued when the run stops early."""
        from ..stream import abortable_map

        return abortable_map(fn, items, jobs=self.images_in_flight, abort=self._abort)

    def backends(self) -> list[Any]:
        """The chat backends this stage sends requests to (subclasses name theirs)."""
        return []

    def run(self, name: str, items: Iterable[Any], work: Callable[[Any], Any], scfg: Any, *,
            input_key: Callable[[Any], Any], output_key: Callable[[dict], Any], in_flight: bool = True,
            group_key: Callable[[dict], Any] | None = None) -> Any:
        """``work`` over ``items`` under the stream contract (``stream.run_stage``; an image is one ``image_id``,
        ``group_key`` when it writes several lines each), ``images_in_flight`` images at once (one at a time when
        ``in_flight`` is false: the stage sends no request); closes the stage after. Every backend is checked
        first (``ChatBackend.check``), so a server that cannot be reached fails before the first input line is
        read. Returns run_stage's summary."""
        from ..stream import ReaderWatch, run_stage

        def checked() -> Iterator[Any]:
            """``items``, once every backend is checked: run_stage asks for the first item after it has read
            what ``--resume`` needs from the output, and before anything of the input is read."""
            for backend in {id(b): b for b in self.backends()}.values():
                backend.check()
            yield from items

        self._watch = ReaderWatch.of(scfg.output)
        try:
            return run_stage(name, checked() if in_flight else items, work, scfg, input_key=input_key,
                             output_key=output_key, mapper=self.mapper if in_flight else None, unit="images",
                             key_name="image_id", group_key=group_key, watch=self._watch)
        finally:
            self._watch = None
            self.close()

    def close(self) -> None:
        """Stop every request still queued, and release what the stage holds (subclasses add their pools)."""
        self._abort.set()
