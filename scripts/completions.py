"""Regenerate completions/ from the Typer app (``make completions``)."""

from pathlib import Path

from ureca_cli.completions import write_all

if __name__ == "__main__":
    for path in write_all(Path(__file__).resolve().parents[1] / "completions"):
        print(f"wrote {path}")
