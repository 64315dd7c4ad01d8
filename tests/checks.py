"""Assertions that several test modules share."""

from __future__ import annotations


def one_error_line(result, *needles: str, prefix: str | None = None) -> str:
    """A CLI run (a click Result) that failed as bad input must: exit 2, one non-empty line on stderr, no
    traceback, every needle in that line (and the line starting with ``prefix``, when given). Returns it."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    if prefix is not None:
        assert lines[0].startswith(prefix), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
