"""Helpers for loading transformers models quietly and safely, shared by the model, SAM and chat backends:
``quiet_progress`` (no progress bars) and ``quiet_peft`` (no deprecation warning from peft's wrapping)."""

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


class quiet_peft:  # noqa: N801 - a context manager, like quiet_progress
    """peft's ``PeftModel`` reads the base's ``is_gradient_checkpointing`` when it wraps it (``get_peft_model``,
    ``PeftModel.from_pretrained``), which transformers 5 deprecates with a FutureWarning on every read: that one
    warning off inside a ``with`` (every other warning still shows)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
