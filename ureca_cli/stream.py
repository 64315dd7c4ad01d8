"""The stream contract: JSONL in and out, ordered concurrent work, errors, resume, shards, progress.

Every stage is "records in, records out". A stage hands ``run_stage`` its input items and a function that
turns one item (one image) into output records; this module does the rest the same way for every stage:

- output is one JSON object per line (orjson), flushed per item, to stdout or ``-o FILE``; an item's lines
  are all there or none (``output.JsonlWriter``: one ``write`` of their bytes, a short write finished or cut
  back, a full disk one error naming the file), so an interrupted run leaves only whole images;
- results come out in input order, also when ``jobs > 1`` runs the work in processes or threads (processes
  that exit when the run dies: ``workers.py``);
- ``--on-error stop`` (default) stops at the first bad item with exit status 2; ``skip`` reports it, goes
  on and counts it, and exits 2 when nothing succeeded; ``--failed FILE`` receives the input line of every
  failed item, to be run again;
- ``--resume`` reads the output file, keeps its whole images and skips the items already there; an input
  that names an image (its resume key) twice is refused at the second line, since resuming could not tell
  the two apart;
- ``--shard I/N`` keeps items ``I, I+N, I+2N, ...`` (0-based), so N machines split a dataset;
- when stdout is a pipe whose reader went away (the next stage stopped), no further item starts: one line
  says how many were written and lost, exit status 141 (``ReaderGone``);
- progress is drawn on stderr only where it cannot garble a pipe of stages (see ``want_progress``).
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from .errors import InputError, UrecaError
from .output import JsonlWriter, LineSink, ReaderWatch, counted, silence_stdout
from .output import dumps as dumps  # noqa: PLC0414 - the stages' one JSONL line, as before output.py
from .output import stdout_binary as stdout_binary  # noqa: PLC0414
from .workers import worker_init

OnError = Literal["stop", "skip"]


# ----------------------------------------------------------------------------------------------- config
def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` stays ``None``."""
    if text is None or text == "":
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UrecaError(f"--shard {text!r}: expected I/N with whole numbers, such as 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UrecaError(f"--shard {text!r}: needs N >= 1 and 0 <= I < N (shards are numbered from 0)")
    return i, n


@dataclass(frozen=True)
class StreamConfig:
    """How a stage reads, writes and survives errors. Every stage's CLI fills one of these."""

    output: Path | None = None  # None: stdout
    on_error: OnError = "stop"
    failed: Path | None = None
    resume: bool = False
    shard: tuple[int, int] | None = None
    progress: bool | None = None  # None: decide from the terminal (want_progress)
    jobs: int = 1

    def __post_init__(self):
        if self.on_error not in ("stop", "skip"):
            raise UrecaError(f"--on-error {self.on_error!r}: choose stop or skip")
        if self.resume and self.output is None:
            raise UrecaError("--resume needs an output file (-o FILE): it skips what that file already holds")
        if self.jobs < 1:
            raise UrecaError(f"--jobs {self.jobs}: needs at least 1")
        if self.output is not None and self.failed is not None and Path(self.output) == Path(self.failed):
            raise UrecaError("--failed must name a different file from -o")
        for flag, path in (("-o", self.output), ("--failed", self.failed)):
            if path is not None:
                check_not_dir(flag, path)


def check_output_not_input(cfg: StreamConfig, inputs: Iterable[str | Path]) -> None:
    """Refuse ``-o FILE`` or ``--failed FILE`` naming one of the stage's input files: writing it would cut off
    the records not yet read (or append to what is being read)."""
    for flag, out in (("-o", cfg.output), ("--failed", cfg.failed)):
        if out is None or not Path(out).exists():
            continue
        for path in inputs:
            if str(path) != "-" and Path(path).exists() and os.path.samefile(path, out):
                raise UrecaError(f"{flag} {out} is the input file {path}: write to another file")


def check_not_dir(flag: str, path: Path) -> None:
    """An output file option may not name a folder."""
    if Path(path).is_dir():
        raise UrecaError(f"{flag} {path}: is a directory, expected a file name")


def check_writable_file(flag: str, path: Path) -> None:
    """An output file option, checked before the work starts: not a folder, and its folder exists or can be
    made (it is made here)."""
    path = Path(path)
    check_not_dir(flag, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UrecaError(f"{flag} {path}: cannot make its folder ({e.strerror or e})") from None


def check_output_folder(flag: str, path: Path | None) -> None:
    """A folder option the stage writes into (``--render``, ``--save-prompts``): it may not exist yet (it is
    made), but it may not be a file, which would fail every image."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise UrecaError(f"{flag} {path}: exists and is not a folder")


# ----------------------------------------------------------------------------------------------- input
@dataclass
class Item:
    """One unit of input: a parsed value, where it came from, and the raw line for ``--failed``."""

    value: Any
    where: str  # "file:line" or a path, for messages
    raw: bytes  # what --failed writes for this item (one line, no newline)
    error: InputError | None = None  # set when the item could not even be parsed


def stdin_binary(terminal_ok: bool = True) -> Any:
    """``sys.stdin.buffer``, or one clear error when the process was started with stdin closed (or, unless
    ``terminal_ok``, when stdin is a terminal: records are piped in, nobody types them, and the command would
    sit waiting with no word said)."""
    if sys.stdin is None or getattr(sys.stdin, "buffer", None) is None:
        raise UrecaError("stdin is closed: give an input file instead of -")
    if not terminal_ok and sys.stdin.isatty():
        raise UrecaError("no input: give an input file, or pipe records in (stdin is a terminal)")
    return sys.stdin.buffer


def open_binary(path: str | Path, expected: str = "a JSONL file") -> Any:
    """A binary file object for ``path``; ``-`` is stdin. Errors name the file and say ``expected``."""
    if str(path) == "-":
        return stdin_binary(terminal_ok=False)
    p = Path(path)
    if p.is_dir():
        raise UrecaError(f"{p}: is a directory, expected {expected}")
    try:
        return p.open("rb")
    except FileNotFoundError:
        raise UrecaError(f"{p}: no such file") from None
    except PermissionError:
        raise UrecaError(f"{p}: permission denied") from None
    except OSError as e:
        raise UrecaError(f"{p}: cannot open ({e.strerror})") from None


def jsonl_items(lines: Iterable[bytes], name: str) -> Iterator[Item]:
    """Items of JSONL ``lines`` (bytes, as a binary file yields them) from the source ``name``: blank lines are
    skipped, a line that is not JSON becomes an error item naming ``name:line``. The one JSONL parser."""
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            err = InputError(f"not valid JSON ({e})", source=name, line=lineno)
            yield Item(None, where, line, err)
            continue
        yield Item(value, where, line)


def iter_jsonl(path: str | Path) -> Iterator[Item]:
    """Items of a JSONL file (``-`` for stdin); blank lines are skipped, bad lines become error items."""
    name = "<stdin>" if str(path) == "-" else str(path)
    fh = open_binary(path)
    try:
        yield from jsonl_items(fh, name)
    except UnicodeDecodeError as e:
        raise UrecaError(f"{name}: not UTF-8 text ({e})") from None
    finally:
        if str(path) != "-":
            fh.close()


def read_json_file(path: str | Path) -> Any:
    """A whole JSON document; errors name the file and say what is wrong."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", source=str(p)) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a JSON file", source=str(p)) from None
    except PermissionError:
        raise InputError("permission denied", source=str(p)) from None
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", source=str(p)) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e})", source=str(p)) from None


# -------------------------------------------------------------------------------------------- progress
def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def want_progress(output: Path | None, forced: bool | None = None) -> bool:
    """Draw a progress bar only where it cannot garble a pipe of stages.

    In ``ureca tree x | ureca annotate | ureca refine -o out.jsonl`` all three share one terminal on stderr;
    only the last stage (whose stdout is not a pipe) draws, the others print a one-line summary at the end.
    ``--progress``/``--no-progress`` decide it outright.
    """
    if forced is not None:
        return forced
    if sys.stderr is None or not sys.stderr.isatty():
        return False
    if output is None and (sys.stdout is None or _is_pipe(sys.stdout.fileno())):
        return False
    return True


class Reporter:
    """Messages and progress on stderr for one stage run; messages never break a drawn bar."""

    def __init__(self, name: str, *, show: bool, total: int | None = None, unit: str = "images"):
        from rich.console import Console

        self.name = name
        # a closed stderr (2>&-) silences the messages; the data still goes out and the exit status still says
        err = None if sys.stderr is not None else open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run
        self.console = Console(file=err, stderr=err is None, highlight=False, soft_wrap=True)
        self._progress = None
        self._task = None
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn(f"[bold]{name}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(name, total=total)

    def say(self, message: str, style: str | None = None) -> None:
        from rich.markup import escape

        text = escape(f"ureca {self.name}: {message}")
        self.console.print(f"[{style}]{text}[/]" if style else text)

    def error(self, message: str) -> None:
        self.say(f"error: {message}", style="red")

    def warn(self, message: str) -> None:
        self.say(f"warning: {message}", style="yellow")

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_total(self, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# ------------------------------------------------------------------------------------- ordered workers
Outcome = tuple[bool, Any]  # (True, result) or (False, error message)


def call_safely(fn: Callable[[Any], Any], arg: Any) -> Outcome:
    """Run ``fn(arg)``; an exception becomes ``(False, one-line message)`` instead of crossing a process."""
    try:
        return True, fn(arg)
    except UrecaError as e:
        return False, str(e)
    except MemoryError:
        return False, "out of memory"
    except Exception as e:  # noqa: BLE001 - reported as one line; URECA_DEBUG=1 shows the traceback
        if os.environ.get("URECA_DEBUG"):
            import traceback

            traceback.print_exc()
        return False, f"unexpected {type(e).__name__}: {e}"


def ordered_map(
    fn: Callable[[Any], Any],
    args: Iterable[Any],
    *,
    jobs: int = 1,
    kind: Literal["process", "thread"] = "process",
    window: int | None = None,
    on_exit: Callable[[], None] | None = None,
) -> Iterator[tuple[Any, Outcome]]:
    """Yield ``(arg, outcome)`` in the order of ``args``, running up to ``jobs`` calls at once.

    At most ``window`` (default ``4 * jobs``) calls are queued ahead of the one being yielded, so memory
    stays bounded on long streams. ``kind="process"`` needs ``fn`` and ``args`` to pickle; its worker processes
    leave Ctrl-C to this one and exit when it dies (``workers.worker_init``). ``on_exit`` is called as the map
    ends, early or not, before it waits for the calls still running (so it can tell them to give up).
    """
    if jobs <= 1:
        for arg in args:
            yield arg, call_safely(fn, arg)
        return
    window = window or 4 * jobs
    pool: Executor
    if kind == "process":
        import pickle

        try:  # an unpicklable fn would fail in the pool's feeder thread and hang the shutdown
            pickle.dumps(fn)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"ordered_map(kind='process') needs a picklable function, got {fn!r} ({e})") from None
        pool = ProcessPoolExecutor(jobs, initializer=worker_init, initargs=(os.getpid(),))
    else:
        pool = ThreadPoolExecutor(jobs)
    pending: deque = deque()
    try:
        for arg in args:
            pending.append((arg, pool.submit(call_safely, fn, arg)))
            while len(pending) >= window:
                a, fut = pending.popleft()
                yield a, fut.result()
        while pending:
            a, fut = pending.popleft()
            yield a, fut.result()
    finally:
        if on_exit is not None:
            on_exit()
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def abortable_map(fn: Callable[[Any], Any], items: Iterable[Any], *, jobs: int,
                  abort: Any) -> Iterator[tuple[Any, Outcome]]:
    """``ordered_map`` over ``jobs`` threads for stages whose items share a pool of requests: ``abort`` (a
    ``threading.Event``) is cleared as the run starts and set when it ends, early or not (before the items
    still running are waited for), so that requests queued for items that will never be written give up."""
    abort.clear()
    try:
        yield from ordered_map(fn, items, jobs=jobs, kind="thread", on_exit=abort.set)
    finally:
        abort.set()


# ----------------------------------------------------------------------------------------------- driver
@dataclass
class Summary:
    written_items: int = 0
    written_records: int = 0
    failed: int = 0
    resumed: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)


class _RunOne:
    """``item -> work(item.value)``, raising the error of an item that could not be parsed. Picklable."""

    def __init__(self, work: Callable[[Any], Any]):
        self.work = work

    def __call__(self, item: Item) -> Any:
        if item.error is not None:
            raise item.error
        return self.work(item.value)


class StopRun(UrecaError):
    """Raised when ``--on-error stop`` meets a failed item (or nothing succeeded under ``skip``); the message
    was already printed."""


class ReaderGone(StopRun):
    """Raised when the reader of stdout went away (the next stage in a pipe stopped); the message was already
    printed. Exit status 141, as a process killed by SIGPIPE shows in a shell."""

    exit_code = 141


def _key_or_none(key: Callable[[Any], Any], value: Any) -> Any:
    try:
        return key(value)
    except Exception:  # noqa: BLE001 - an unkeyable item is processed, and fails there
        return None


def run_stage(
    name: str,
    items: Iterable[Item],
    work: Callable[[Any], Any],
    cfg: StreamConfig,
    *,
    input_key: Callable[[Any], Any] | None = None,
    output_key: Callable[[dict], Any] | None = None,
    total: int | None = None,
    kind: Literal["process", "thread"] = "process",
    mapper: Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[tuple[Any, Outcome]]] | None = None,
    unit: str = "images",
    shard_key: Callable[[Any], Any] | None = None,
    key_name: str = "key",
    unique_keys: Callable[[Any], Iterable[Any]] | None = None,
    group_key: Callable[[dict], Any] | None = None,
    watch: ReaderWatch | None = None,
) -> Summary:
    """Run ``work`` over ``items`` under the stream contract and write its records.

    ``work(value)`` returns one record (a dict) or a list of records for one item; it raises ``UrecaError``
    (``InputError`` for bad input) to fail that item. ``input_key(value)`` and ``output_key(record)`` give
    the key ``--resume`` matches on (an image id, or the source file for ``tree``); an item whose key
    (``key_name`` in messages) an earlier item had fails, naming both lines, since ``--resume`` could not tell
    them apart (``unique_keys(value)``, when given, lists every key an item writes, such as each region id).
    ``mapper``, when given, replaces the built-in process/thread pool (it must yield in input order, as
    ``ordered_map`` does). ``shard_key(value)``, when given, names the image an item belongs to, so that
    ``--shard`` splits by image (the order in which images first appear) rather than by item: all regions of
    one image land on one shard. ``group_key(record)``: for a stage that writes several lines per image, the
    image a written line belongs to (``JsonlWriter``: a torn image is written again whole). ``watch``:
    the ``ReaderWatch`` on stdout (made here when not given); when the reader is gone the run stops before
    the next item starts, says so in one line and raises ``ReaderGone``.
    """
    start = time.monotonic()
    summary = Summary()
    writer = JsonlWriter(cfg.output, resume=cfg.resume, key=output_key, group=group_key)
    failed_sink = LineSink(cfg.failed)
    reporter = Reporter(name, show=want_progress(cfg.output, cfg.progress), total=total, unit=unit)
    watch = watch if watch is not None else ReaderWatch.of(cfg.output)
    keys_of = unique_keys or (None if input_key is None else lambda value: [input_key(value)])
    first_at: dict[Any, str] = {}  # every key met, and the item it came with
    started = 0  # items handed to the work

    groups: dict[Any, int] = {}

    def shard_index(index: int, item: Item) -> int:
        if shard_key is None or item.error is not None:
            return index
        try:
            key = shard_key(item.value)
        except Exception:  # noqa: BLE001 - an unkeyable item is a group of its own, and fails in work
            return index
        return groups.setdefault(key, len(groups))

    def repeated(item: Item) -> Item:
        """``item``, or an item failing with a message when one of its keys came before."""
        keys = _key_or_none(keys_of, item.value) if keys_of is not None else None
        for key in keys or ():
            if key is None:
                continue
            first = first_at.setdefault(key, item.where)
            if first != item.where:
                why = (f"{key_name} {key!r} appears twice (first at {first}); an input may hold each {key_name} "
                       f"once, so that --resume can tell them apart")
                return Item(item.value, item.where, item.raw, InputError(why, source=item.where))
        return item

    def gone() -> ReaderGone:
        lost = started - summary.written_items - summary.failed
        message = (f"stdout's reader is gone (did the next stage in the pipe stop?): stopped with "
                   f"{counted(summary.written_items, unit)} written, {lost} in flight lost")
        silence_stdout()
        reporter.error(message)
        return ReaderGone(message)

    def selected() -> Iterator[Item]:
        nonlocal started
        for index, item in enumerate(items):
            if cfg.shard is not None and shard_index(index, item) % cfg.shard[1] != cfg.shard[0]:
                continue
            if item.error is None:
                item = repeated(item)
            if item.error is None and writer.done and input_key is not None:
                key = _key_or_none(input_key, item.value)
                if key is not None and key in writer.done:
                    summary.resumed += 1
                    reporter.advance()
                    continue
            if watch is not None and watch.gone():  # no more work for output that would go nowhere
                raise gone()
            started += 1
            yield item

    run_one = _RunOne(work)  # a module-level callable, so kind="process" can pickle it

    if cfg.shard is not None and total is not None:
        i, n = cfg.shard
        reporter.set_total(len(range(i, total, n)))
    run = mapper or (lambda fn, xs: ordered_map(fn, xs, jobs=cfg.jobs, kind=kind))
    try:
        for item, (ok, result) in run(run_one, selected()):
            reporter.advance()
            if watch is not None and watch.gone():
                raise gone()
            if ok:
                try:
                    writer.write_many(result if isinstance(result, list) else [result])
                except BrokenPipeError:
                    raise gone() from None
                summary.written_items, summary.written_records = writer.items, writer.count
                continue
            summary.failed += 1
            message = result if str(result).startswith(item.where) else f"{item.where}: {result}"
            reporter.error(message)
            failed_sink.add(item.raw)
            if cfg.on_error == "stop":
                raise StopRun(message)
    except KeyboardInterrupt:
        reporter.close()
        held = f" ({cfg.output} holds {writer.items + len(writer.done)})" if writer.done else ""
        reporter.say(f"interrupted after {counted(writer.items, unit)} written{held}; run again with --resume -o "
                     f"FILE to go on", style="yellow")
        raise
    finally:
        reporter.close()
        writer.close()
        failed_sink.close()
        summary.seconds = time.monotonic() - start

    parts = [f"{counted(summary.written_items, unit)} written"]
    if summary.written_records != summary.written_items:
        parts[0] += f" ({counted(summary.written_records, 'records')})"
    if summary.resumed:
        parts.append(f"{summary.resumed} already done (--resume)")
    if summary.failed:
        parts.append(f"{summary.failed} failed and skipped" + (f" (inputs in {cfg.failed})" if cfg.failed else ""))
    line = ", ".join(parts) + f" in {summary.seconds:.1f} s"
    if summary.failed and not summary.written_items and not summary.resumed:
        line += f": every {unit[:-1] if unit.endswith('s') else unit} failed"
        reporter.say(line, style="red")
        raise StopRun(line)
    reporter.say(line)
    return summary
