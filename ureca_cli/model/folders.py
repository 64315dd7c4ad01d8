"""Local model folders checked before transformers loads them, so a damaged one is one line naming the file.

``check_model_folder(folder, flag, model_types)`` looks at a ``save_pretrained`` folder (an InternVL base, a
DINOv2 model): ``config.json`` must be a JSON object whose ``model_type`` is one of ``model_types``; the weights
must be safetensors (pickles refused, never opened: ``loading.check_safetensors``), every shard an index lists
present, and every weights file whole (``shards.read_header``: the header parses and every tensor's bytes lie
inside the file). Only headers are read, so the check costs milliseconds at any model size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UrecaError
from ..loading import check_safetensors
from ..stream import read_json_file
from .released import describe_folder, weight_files
from .shards import read_header


def check_model_folder(folder: str | Path, flag: str, model_types: Sequence[str] = ()) -> None:
    """Refuse a local model folder that transformers would fail to load, naming the file and what is wrong
    (see the module docstring); a name that is not a local folder (a hub id) passes."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return
    check_safetensors(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise UrecaError(f"{flag} {folder}: not a model folder (no config.json); {describe_folder(folder)}")
    data = read_json_file(config)
    if not isinstance(data, dict):
        raise UrecaError(f"{config}: not a model configuration (a JSON object is expected)")
    kind = data.get("model_type")
    if model_types and kind not in model_types:
        raise UrecaError(f"{config}: model_type {kind!r}; {flag} needs {' or '.join(map(repr, model_types))}")
    for shard in weight_files(folder)[0]:
        read_header(shard)
