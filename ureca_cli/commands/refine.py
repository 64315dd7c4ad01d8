"""`ureca refine` (issue 6): not built yet."""

from __future__ import annotations

import typer

from .common import fail


def refine(ctx: typer.Context) -> None:
    """Not built yet: this subcommand arrives with issue 6."""
    raise fail("refine", "not built yet (issue 6); see README.md for what works today")
