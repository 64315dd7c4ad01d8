"""The ``ureca`` command: wiring only. Each subcommand lives in ``ureca_cli.commands.<name>``."""

from __future__ import annotations

import typer

from . import __version__
from .commands import annotate, caption, convert, refine, score, train, tree

app = typer.Typer(
    name="ureca",
    help=(
        "URECA, Unique Region Caption Anything: mask trees from SA-1B, a caption for every region that tells it "
        "apart from the others, a region captioner to train, and its scores.\n\n"
        "Stages stream JSONL, one image per line, so they pipe into each other:\n\n"
        "  ureca tree sa_1.json | ureca annotate | ureca refine -o regions.jsonl\n\n"
        "  ureca train regions.jsonl --out runs/ureca-1b\n\n"
        "  ureca caption img.jpg --mask m.png --model runs/ureca-1b\n\n"
        "  ureca score preds.jsonl refs.jsonl"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

app.command("tree", no_args_is_help=False)(tree.tree)
app.command("annotate")(annotate.annotate)
app.command("refine")(refine.refine)
app.command("train")(train.train)
app.command("caption")(caption.caption)
app.command("score")(score.score)
app.command("convert")(convert.convert)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ureca {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """URECA command-line toolkit."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
