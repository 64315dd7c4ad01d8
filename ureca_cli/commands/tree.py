"""`ureca tree` (issue 2): placeholder until the tree stage lands."""

from __future__ import annotations

from .common import fail


def tree() -> None:
    """Build mask trees from SA-1B JSON files (arriving with issue 2)."""
    raise fail("tree", "not built yet (issue 2)")
