"""What a chat model or a person is shown of regions: visual prompts (``prompter``: blur, contour, crop),
the set-of-mark image of refinement (``setofmark``) and the picture of a mask tree (``render``)."""

from .prompter import VisualPrompter, VisualSettings

__all__ = ["VisualPrompter", "VisualSettings"]
