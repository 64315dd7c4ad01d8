"""`ureca train` (issue 7): not built yet."""

from __future__ import annotations

import typer

from .common import fail


def train(ctx: typer.Context) -> None:
    """Not built yet: this subcommand arrives with issue 7."""
    raise fail("train", "not built yet (issue 7); see README.md for what works today")
