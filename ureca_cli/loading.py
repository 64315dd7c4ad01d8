"""Helpers for loading transformers models quietly and safely, shared by the model, SAM and chat backends."""

from __future__ import annotations


class quiet_progress:  # noqa: N801 - used as a context manager, like contextlib's lower-case names
    """transformers' progress bars (loading or writing weights) off inside a ``with``; restored after."""

    def __enter__(self):
        from transformers.utils import logging

        self._was = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        if self._was:
            logging.enable_progress_bar()
