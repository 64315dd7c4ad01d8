"""JSONL out: each item's lines whole or not at all, what ``--resume`` reads back, and stdout's reader.

``JsonlWriter`` writes one item's records (an image's line, or all its region lines) in one ``write`` of their
bytes and counts the item with them:

- a short write (a full disk or a file-size limit first takes part of the bytes, then fails) is finished, and
  when the rest fails the file is cut back to the end of the last whole item; the error names the file, and
  ``--resume`` goes on from the items that are there;
- a Ctrl-C cannot land between an item's bytes reaching the file and its count (the summary says what the
  file holds);
- with ``resume=True`` the file is kept; a torn last line (a run killed in the middle of a write) is cut off,
  and where an item is several lines (``group(line)`` names the image a line belongs to) the lines before it
  of the same image go too, so the image is written again whole rather than left in part (when the cut fell
  just where an image starts, the image before it is written again: nothing is lost nor doubled); ``done``
  holds the keys of the lines left in the file.

``ReaderWatch`` tells whether the process reading stdout (the next stage in a pipe) has gone away, with one
``poll`` of the pipe, so a stage can stop before it starts more work whose output would go nowhere.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from .errors import UrecaError


def dumps(obj: Any) -> bytes:
    """One JSONL line (with its newline) for ``obj``; numpy values are written as JSON numbers."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def counted(n: int, unit: str) -> str:
    """``"1 image"``, ``"2 images"``: ``unit`` is the plural, its last ``s`` dropped for one."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def stdout_binary(hint: str = "give -o FILE") -> Any:
    """``sys.stdout.buffer``, or one clear error when the process was started with stdout closed."""
    if sys.stdout is None or getattr(sys.stdout, "buffer", None) is None:
        raise UrecaError(f"stdout is closed: {hint}")
    return sys.stdout.buffer


def silence_stdout() -> None:
    """Point stdout's file descriptor at the null device, so that the flush at exit of what its buffer still
    holds (after its reader went away, or its disk filled) does not fail a second time."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


@contextmanager
def _no_interrupt(hold: bool) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs, when ``hold``: the first is raised as the block ends.
    (Python runs signal handlers in the main thread whichever thread the kernel hands the signal to, so the
    handlers are swapped for one that only notes the signal; blocking the signal in this thread would not stop
    the others.)"""
    if not hold or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    held = [s for s, h in old.items() if callable(h)]  # a default or ignored signal keeps its way
    pending: list[int] = []
    swapped: list[int] = []
    try:
        for s in held:
            signal.signal(s, lambda signum, frame: pending.append(signum))
            swapped.append(s)
        yield
    finally:
        for s in swapped:
            signal.signal(s, old[s])
        if pending:
            old[pending[0]](pending[0], None)  # KeyboardInterrupt (or Terminated), now that the item is counted


def _is_regular(fh: Any) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


class JsonlWriter:
    """Writes records one whole item at a time, to stdout or a file (see the module docstring).

    The file is opened on the first write, so a run that fails before producing anything leaves an existing
    file alone. ``key(record)`` names the item a written line belongs to (for ``--resume``).
    """

    def __init__(self, path: Path | None, *, resume: bool = False, key: Callable[[dict], Any] | None = None,
                 group: Callable[[dict], Any] | None = None):
        self.path = Path(path) if path is not None else None
        self.resume = resume
        self.done: set = set()
        self.count = 0  # records written by this run
        self.items = 0  # items (images) written by this run
        self._fh: Any = None
        self._regular = False  # -o FILE is a regular file: a failed write is cut back
        self._hold = False  # hold Ctrl-C back between an item's write and its count (not where a write may wait)
        self._end = 0  # where the last whole item ends, in a regular file
        if resume and self.path is not None and self.path.exists():
            self._load_done(key, group)

    def _load_done(self, key: Callable[[dict], Any] | None, group: Callable[[dict], Any] | None) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        keep = end
        lines: list[tuple[int, Any, Any]] = []  # (where the line starts, its key, its image)
        start = 0
        for lineno, line in enumerate(data[:end].split(b"\n")[:-1], 1):
            at, start = start, start + len(line) + 1
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UrecaError(f"{self.path}:{lineno}: --resume found a line that is not JSON") from None
            if not isinstance(value, dict):
                raise UrecaError(f"{self.path}:{lineno}: --resume found a line that is not a JSON object; -o names "
                                 f"another file than this stage's output?")
            lines.append((at, key(value) if key is not None else None, group(value) if group else None))
        if end < len(data) and group is not None and lines:  # a torn write: the image it cut goes whole
            last = lines[-1][2]
            while lines and lines[-1][2] == last:
                keep = lines.pop()[0]
        if keep < len(data):
            with self.path.open("r+b") as fh:
                fh.truncate(keep)
        self.done = {k for _, k, _ in lines}

    def _open(self) -> Any:
        if self.path is None:
            fh = stdout_binary()
            self._hold = _is_regular(fh)  # `> file`: a write there never waits on a reader
            return fh
        fh = _open_for_append(self.path, "-o", truncate=not self.resume)
        self._regular = self._hold = _is_regular(fh)
        if self._regular:
            self._end = os.fstat(fh.fileno()).st_size
        return fh

    def write(self, rec: Any) -> None:
        self.write_many([rec])

    def write_many(self, recs: list[Any]) -> None:
        """Write one item's records (an image's line, or its region lines; none at all counts the item too) in
        one ``write``: all of them reach the file, or none does and the error names the file."""
        data = b"".join(dumps(r) for r in recs)
        if data and self._fh is None:
            self._fh = self._open()
        with _no_interrupt(self._hold):
            if data and self.path is None:
                self._write_stdout(data)
            elif data:
                self._write_all(data)
            self.items += 1
            self.count += len(recs)

    def _write_stdout(self, data: bytes) -> None:
        try:
            self._fh.write(data)  # a BufferedWriter: takes all the bytes or raises
            self._fh.flush()
        except BrokenPipeError:
            raise  # the reader went away: the stage says so (stream.run_stage)
        except OSError as e:
            silence_stdout()  # what is left in its buffer would fail again at exit
            raise UrecaError(f"stdout: cannot write ({e.strerror or e})") from None

    def _write_all(self, data: bytes) -> None:
        try:
            _write_fully(self._fh, data)
        except OSError as e:
            why = f"-o {self.path}: cannot write ({e.strerror or e})"
            if not self._regular:
                raise UrecaError(why) from None
            whole = self.items + len(self.done)
            kept = f"the {counted(whole, 'images')} written whole" if whole else "nothing"
            try:
                os.ftruncate(self._fh.fileno(), self._end)
            except OSError:
                kept = "what it held, and part of the image it was writing"
            raise UrecaError(f"{why}; it keeps {kept}: run again with --resume to go on") from None
        self._end += len(data)

    def close(self) -> None:
        if self._fh is not None and self.path is not None:
            self._fh.close()
        self._fh = None


def _write_fully(fh: Any, data: bytes) -> None:
    """All of ``data`` to an unbuffered file, whose write may take only part of the bytes."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view) or 0:]


def _open_for_append(path: Path, flag: str, *, truncate: bool = False) -> Any:
    """``path`` opened unbuffered (each item's lines are one write(2) of their bytes), its folder made when
    missing; an OS error is one line naming ``flag`` and the file."""
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb" if truncate else "ab", buffering=0)
    except OSError as e:
        raise UrecaError(f"{flag} {path}: cannot write ({e.strerror or e})") from None


class LineSink:
    """Appends raw lines (such as failed inputs) to a file opened on first use."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fh: Any = None

    def add(self, raw: bytes) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._fh = _open_for_append(Path(self.path), "--failed")
        try:
            _write_fully(self._fh, raw.rstrip(b"\n") + b"\n")
        except OSError as e:
            raise UrecaError(f"--failed {self.path}: cannot write ({e.strerror or e})") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


# ------------------------------------------------------------------------------------------ stdout's reader
class ReaderWatch:
    """Whether the reader of stdout (a pipe or a socket) has gone away: ``gone()`` polls it once, without
    waiting, and stays true once it was. Thread-safe."""

    def __init__(self, fd: int):
        import select

        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, 0)  # POLLERR / POLLHUP are always reported
        self._lock = threading.Lock()
        self._gone = False

    @classmethod
    def of(cls, output: Path | None) -> ReaderWatch | None:
        """A watch on stdout where the stage writes there and it is a pipe or a socket; else ``None``."""
        import select

        if output is not None or sys.stdout is None or not hasattr(select, "poll"):
            return None
        try:
            fd = sys.stdout.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError, AttributeError):
            return None
        return cls(fd) if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None

    def gone(self) -> bool:
        import select

        if self._gone or not self._lock.acquire(blocking=False):
            return self._gone
        try:
            events = self._poll.poll(0)
        except OSError:
            events = []
        finally:
            self._lock.release()
        if any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in events):
            self._gone = True
        return self._gone
