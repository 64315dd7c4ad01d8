"""The one exception type the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations


class UrecaError(Exception):
    """A problem a person can act on: bad input, a missing file, a wrong option.

    The message is one line and names the file, line or field at fault. The CLI prints it as
    ``ureca <command>: error: <message>`` and exits with status 2; it never shows a traceback.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(UrecaError):
    """One input record or file is bad. Under ``--on-error skip`` the run goes on without it."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        where = ""
        if source:  # None or "" (a caller with no place to name): no prefix, never a bare ": "
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + str(message))
        self.source = source
        self.line = line


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``kill``, Slurm at a job's time limit and torchrun send): handled as Ctrl-C is, so what is
    written stays whole and the stage says how far it got, then exit 143 (128 + 15), as a shell shows it."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (a library's errors run to many lines), else its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class ItemFailed(UrecaError):
    """Work on one unit (an image) failed for a reason other than its input (a server gave up, say)."""


def check_model_name(flag: str, name: str) -> None:
    """Fail with one line when ``name`` reads as a local folder (``/x``, ``./x``, ``~/x``, ``a/b/c``) that does
    not exist, before transformers takes it for a malformed hub id and says so in its own words."""
    import os
    from pathlib import Path

    if Path(name).expanduser().exists():
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        raise UrecaError(f"{flag} {name}: no such folder")
