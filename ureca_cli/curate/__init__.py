"""Curation, stages 1-4 of the paper: mask trees (``tree``), captions top-down and bottom-up (``annotate``),
unique captions, verification and export (``refine``)."""
