"""`ureca caption` (issue 4): not built yet."""

from __future__ import annotations

import typer

from .common import fail


def caption(ctx: typer.Context) -> None:
    """Not built yet: this subcommand arrives with issue 4."""
    raise fail("caption", "not built yet (issue 4); see README.md for what works today")
