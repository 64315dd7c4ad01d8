"""completions/ and README.md stay in step with the app."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from ureca_cli.completions import FILENAMES, SHELLS, _tree, generate

from .conftest import ROOT


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_scripts_are_fresh(shell):
    committed = (ROOT / "completions" / FILENAMES[shell]).read_text()
    assert committed == generate(shell), f"completions/{FILENAMES[shell]} is stale: run `make completions`"


def test_bash_completion_completes_subcommands_and_options():
    script = ROOT / "completions" / FILENAMES["bash"]
    probe = (
        f"source {script}; COMP_WORDS=(ureca sc); COMP_CWORD=1; _ureca; echo ${{COMPREPLY[@]}}; "
        "COMP_WORDS=(ureca tree --he); COMP_CWORD=2; _ureca; echo ${COMPREPLY[@]}"
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "score"
    assert out[1] == "--help"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_script_parses():
    subprocess.run(["zsh", "-n", str(ROOT / "completions" / FILENAMES["zsh"])], check=True)


def _readme_commands() -> list[list[str]]:
    """Every `ureca ...` command line in README.md's code blocks, split into words."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    blocks += re.findall(r"(?m)^    (.*)$", text)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            for part in re.split(r"\||&&|;", line.split("#")[0]):
                words = part.strip().split()
                if words and words[0] == "ureca" and len(words) > 1:
                    try:
                        commands.append(shlex.split(part.strip()))
                    except ValueError:
                        commands.append(words)
    return commands


def test_readme_examples_use_real_subcommands_and_options():
    _, cmds = _tree()
    seen = _readme_commands()
    for words in seen:
        name = words[1]
        if name.startswith("-"):
            continue
        assert name in cmds, f"README uses `ureca {name}`, which does not exist"
        known = {n for p in cmds[name].params for n in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        known |= {"--help", "-h"}
        for w in words[2:]:
            if w.startswith("--"):
                opt = w.split("=")[0]
                assert opt in known, f"README: `ureca {name}` has no option {opt}"
