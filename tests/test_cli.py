"""The CLI as a user meets it: six subcommands, help that works, errors as one line."""

from __future__ import annotations

import subprocess
import sys

SUBCOMMANDS = ("tree", "annotate", "refine", "train", "caption", "score")


def test_help_lists_the_six_subcommands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in result.stdout


def test_each_subcommand_has_help(cli):
    for name in SUBCOMMANDS:
        result = cli(name, "--help")
        assert result.exit_code == 0, (name, result.stdout)


def test_python_dash_m_and_fast_start():
    out = subprocess.run([sys.executable, "-m", "ureca_cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ureca ")
    # --help must not import torch, transformers, PIL or numpy (shell completion stays instant)
    code = ("import sys, typer; from ureca_cli.cli import app; typer.main.get_command(app); "
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'PIL', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
