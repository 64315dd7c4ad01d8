"""Captioning regions: with a URECA checkpoint (``captioner``) or a plain chat model (``baselines``)."""
