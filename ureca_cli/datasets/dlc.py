"""DLC-Bench (Describe Anything's detailed localized captioning benchmark), its released folder as it is:

    DLC-bench/
      annotations.json   COCO instances: images [{id, file_name, height, width}], annotations [{id, image_id,
                         segmentation (RLE or polygons), bbox, area, category_id}]
      class_names.json   {annotation id: class name}
      qa.json            {annotation id: [{"question", "choices": [[text, score], ...], "type": "positive" |
                         "negative", ...}, ...]}
      images/            the images, by file_name

A region is an annotation: id ``"<file stem>/<annotation id>"``, ``image_id`` the file's stem, its mask, its
``class_name`` and ``benchmark_id`` (the annotation id, the key of DAM's own prediction files). There are no
reference captions: ``ureca score`` judges predictions with the questions (``evaluate/dlc.py``), which
``load_questions`` reads and checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..stream import Item
from . import Reader, ReadOptions
from .coco_regions import Coco, region

FILES = ("annotations.json", "class_names.json", "qa.json")
TYPES = ("positive", "negative")
LETTERS = "ABCDE"  # the benchmark labels choices A-E


def detect(path: Any) -> bool:
    return isinstance(path, Path) and all((path / f).is_file() for f in FILES)


def _json(folder: Path, file: str) -> Any:
    from ..stream import read_json_file

    path = folder / file
    if not path.is_file():
        raise InputError(f"no {file} in the DLC-Bench folder (it needs {', '.join(FILES)} and images/)",
                         source=str(folder))
    return read_json_file(path)


def load_class_names(folder: Path) -> dict[str, str]:
    """``class_names.json`` checked: ``{annotation id: non-empty class name}``."""
    name = str(folder / "class_names.json")
    doc = _json(folder, "class_names.json")
    if not isinstance(doc, dict):
        raise InputError(f"expected an object {{annotation id: class name}}, got {type(doc).__name__}", source=name)
    for key, value in doc.items():
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"key {key!r}: the class name should be a non-empty string, got {value!r}", source=name)
    return doc


def load_questions(folder: Path) -> dict[str, list[dict]]:
    """``qa.json`` checked: ``{annotation id: [question, ...]}``, each question ``{"question": str, "choices":
    [[text, score], ...] (2 to 5, scores numbers), "type": "positive" | "negative"}``, at least one positive
    question per region (the benchmark averages them)."""
    name = str(folder / "qa.json")
    doc = _json(folder, "qa.json")
    if not isinstance(doc, dict):
        raise InputError(f"expected an object {{annotation id: [questions]}}, got {type(doc).__name__}", source=name)
    for key, questions in doc.items():
        where = f"{name}: key {key!r}"
        if not isinstance(questions, list) or not questions:
            raise InputError("should be a non-empty list of questions", source=where)
        for i, q in enumerate(questions):
            qw = f"{where} [{i}]"
            if not isinstance(q, dict):
                raise InputError(f"expected a question object, got {type(q).__name__}", source=qw)
            if not isinstance(q.get("question"), str) or not q["question"].strip():
                raise InputError("missing or empty field 'question'", source=qw)
            if q.get("type") not in TYPES:
                raise InputError(f"field 'type' should be 'positive' or 'negative', got {q.get('type')!r}", source=qw)
            choices = q.get("choices")
            if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
                raise InputError(f"field 'choices' should be a list of 2 to {len(LETTERS)} [text, score] pairs",
                                 source=qw)
            for j, c in enumerate(choices):
                if (not isinstance(c, list) or len(c) != 2 or not isinstance(c[0], str) or not c[0].strip()
                        or isinstance(c[1], bool) or not isinstance(c[1], int | float)):
                    raise InputError(f"field 'choices[{j}]' should be [text, score] (a string and a number), got "
                                     f"{c!r}", source=qw)
        if not any(q["type"] == "positive" for q in questions):
            raise InputError("has no positive question (the benchmark averages them)", source=where)
    return doc


def _image_path(folder: Path, file_name: str, opts: ReadOptions) -> str:
    own = folder / "images" / file_name
    if opts.images is None and own.is_file():
        return str(own.resolve())
    return file_name


def read(folder: Path, opts: ReadOptions) -> Iterator[Item]:
    name = str(folder / "annotations.json")
    coco = Coco(_json(folder, "annotations.json"), name)
    classes = load_class_names(folder)
    for key, img in coco.images.items():
        image = _image_path(folder, img["file_name"], opts)
        for ann, where in coco.anns.get(key, []):
            try:
                aid = str(ann["id"])
                rec = region(coco, key, aid, None, ann=ann, where=where, image=image)
                if aid in classes:
                    rec["class_name"] = classes[aid]
            except InputError as e:
                yield Item(None, where, b"", e)
                continue
            yield Item([rec], where, b"")


READER = Reader("dlc", "DLC-Bench: the released folder (annotations.json, class_names.json, qa.json, images/); "
                "ureca score judges it with an LLM (--judge-base-url)", detect, read, "folder")
