"""ureca: Unique Region Caption Anything, end to end, from the command line and from Python."""

__version__ = "0.1.0"
