"""`ureca score` (issue 3): not built yet."""

from __future__ import annotations

import typer

from .common import fail


def score(ctx: typer.Context) -> None:
    """Not built yet: this subcommand arrives with issue 3."""
    raise fail("score", "not built yet (issue 3); see README.md for what works today")
