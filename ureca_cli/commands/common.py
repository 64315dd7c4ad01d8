"""Options every streaming command shares, and the wrapper that turns errors into one line and exit 2."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import UrecaError
from ..stream import StreamConfig, parse_shard

Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write records to this file instead of stdout.", show_default=False),
]
class OnErrorChoice(StrEnum):
    stop = "stop"
    skip = "skip"


OnErrorOpt = Annotated[
    OnErrorChoice,
    typer.Option(
        "--on-error",
        help="stop: stop at the first bad image (exit 2). skip: report it, go on, and count it (exit 2 when "
             "every image failed).",
    ),
]
Failed = Annotated[
    Path | None,
    typer.Option("--failed", help="Append the input line of every failed image to this file.", show_default=False),
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Keep the whole images -o FILE already holds and skip them."),
]
Shard = Annotated[
    str | None,
    typer.Option("--shard", help="I/N: take images I, I+N, I+2N, ... (0-based), to split work over N machines.",
                 show_default=False),
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="Draw a progress bar on stderr. Default: only when stderr is a terminal and stdout is not a pipe.",
        show_default=False,
    ),
]


def stream_config(
    output: Path | None,
    on_error: OnErrorChoice | str,
    failed: Path | None,
    resume: bool,
    shard: str | None,
    progress: bool | None,
    jobs: int = 1,
) -> StreamConfig:
    return StreamConfig(
        output=None if output is not None and str(output) == "-" else output,  # -o -: stdout, not a file "-"
        on_error=OnErrorChoice(on_error).value,  # type: ignore[arg-type]
        failed=failed,
        resume=resume,
        shard=parse_shard(shard),
        progress=progress,
        jobs=jobs,
    )


def fail(command: str, message: str, code: int = 2) -> typer.Exit:
    """Print ``ureca <command>: error: <message>`` on stderr and return the Exit to raise."""
    typer.echo(f"ureca {command}: error: {message}", err=True)
    return typer.Exit(code)


def cli_errors(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command: ``UrecaError`` -> one line on stderr and exit 2; Ctrl-C -> exit 130; SIGTERM -> as
    Ctrl-C, exit 143; stdout's reader gone (a broken pipe) -> one line and exit 141, as a shell shows a process
    that SIGPIPE killed.

    Set ``URECA_DEBUG=1`` to see the traceback of an unexpected error instead of its one-line summary.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import signal
            import threading

            from ..errors import Terminated, raise_terminated
            from ..stream import StopRun

            old_term = None
            try:
                if threading.current_thread() is threading.main_thread():
                    old_term = signal.signal(signal.SIGTERM, raise_terminated)
                return fn(*args, **kwargs)
            except StopRun as e:  # the stage already printed the message
                raise typer.Exit(e.exit_code) from None
            except UrecaError as e:
                raise fail(command, str(e), e.exit_code) from None
            except Terminated:
                raise typer.Exit(143) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except BrokenPipeError:  # `ureca score ... | head`: the reader went away (streams: run_stage says so)
                from ..output import silence_stdout

                silence_stdout()  # the flush at exit would fail again
                raise fail(command, "stdout's reader is gone (did the next command in the pipe stop?)", 141) from None
            except typer.Exit:
                raise
            except Exception as e:  # noqa: BLE001
                if os.environ.get("URECA_DEBUG"):
                    raise
                raise fail(command, f"unexpected {type(e).__name__}: {e} (URECA_DEBUG=1 shows the traceback)", 1) from None
            finally:
                if old_term is not None:
                    signal.signal(signal.SIGTERM, old_term)

        return wrapper

    return decorate


def option_group(names: list[str], param: str, parameter: Callable[[str], inspect.Parameter],
                 build: Callable[[dict[str, Any]], Any]) -> Callable[[Callable], Callable]:
    """Decorate a command: its ``param`` parameter becomes one option per name in ``names`` (each made by
    ``parameter(name)``), and the command receives ``build({name: value given})`` as ``param``."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        clash = [n for n in names if n in sig.parameters]
        if param not in sig.parameters or clash:
            raise TypeError(f"{fn.__name__}: needs a {param!r} parameter and none named {clash}")
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name == param:
                params += [parameter(n) for n in names]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[param] = build({n: kwargs.pop(n) for n in names if n in kwargs})
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        annotations = {p.name: p.annotation for p in params}
        annotations["return"] = sig.return_annotation
        wrapper.__annotations__ = annotations
        return wrapper

    return decorate
