"""Shared fixtures: the offline switch, the path to ../shared/data, the CLI runner and a tiny checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; the test is skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def cli():
    """Run ``ureca ARGS`` in-process; returns the click Result (stdout and stderr kept apart)."""
    from typer.testing import CliRunner

    from ureca_cli.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A tiny random URECA checkpoint that listens to its mask (its mask projection scaled up), so regions of
    one image get their own captions. Read only: a test that changes it works on a copy."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ureca_cli.model import build_tiny_ureca, save_checkpoint

    model = build_tiny_ureca(seed=0)
    with torch.no_grad():
        model.mask_encoder.proj.weight.mul_(30)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "ureca-tiny")
