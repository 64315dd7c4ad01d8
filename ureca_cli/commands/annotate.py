"""`ureca annotate` (issue 5): not built yet."""

from __future__ import annotations

import typer

from .common import fail


def annotate(ctx: typer.Context) -> None:
    """Not built yet: this subcommand arrives with issue 5."""
    raise fail("annotate", "not built yet (issue 5); see README.md for what works today")
