"""The prompt templates every stage that talks to a chat model sends, as versioned text files.

``<name>.txt`` here are ``string.Template`` texts (``$name`` placeholders) in our own words, after the paper's
Tables A-C: ``main_phrase``, ``part_phrase``, ``part_phrase_siblings``, ``paragraph`` (annotate), ``refine``,
``verify`` and ``verify_retry`` (refine: the reminder sent once when the judge answers neither True nor False),
``baseline_<none|contour|crop>`` (caption's Table 2 baselines). ``version.txt`` holds the
set's version; ``load_templates`` adds a hash of the texts, so a record names its prompts exactly
(``ureca-prompts-1+3f2a9c1e``) and ``--prompts DIR`` overrides change it.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UrecaError


@dataclass(frozen=True)
class Templates:
    """Prompt templates (``string.Template``, ``$name`` placeholders) and their version string."""

    texts: dict[str, str]
    version: str

    def render(self, name: str, **values: str) -> str:
        try:
            return string.Template(self.texts[name]).substitute(values)
        except KeyError as e:
            raise UrecaError(f"prompt template {name}.txt uses ${e.args[0]}, which this prompt does not fill") from None
        except ValueError as e:
            raise UrecaError(f"prompt template {name}.txt: {e}") from None


def package_text(name: str) -> str:
    """The packaged template ``<name>.txt`` as it is."""
    return (resources.files(__name__) / f"{name}.txt").read_text(encoding="utf-8")


def load_templates(folder: str | Path | None, names: Iterable[str],
                   placeholders: dict[str, tuple[str, ...]] | None = None) -> Templates:
    """The package's templates ``names``, with any ``<name>.txt`` in ``folder`` (``--prompts DIR``) taking their
    place; ``placeholders`` maps a template to the placeholders it must hold (``{"refine": ("caption",)}``).

    The version is the package's ``version.txt`` plus a hash of the texts, so a record names its prompts
    exactly (``ureca-prompts-1+3f2a9c1e``); overridden templates change the hash.
    """
    if folder is not None and not Path(folder).is_dir():
        raise UrecaError(f"--prompts {folder}: not a folder")
    base = package_text("version").strip()
    texts: dict[str, str] = {}
    for name in names:
        own = Path(folder) / f"{name}.txt" if folder is not None else None
        texts[name] = own.read_text(encoding="utf-8") if own is not None and own.is_file() else package_text(name)
    for name, keys in (placeholders or {}).items():
        for key in keys:
            if f"${key}" not in texts[name] and f"${{{key}}}" not in texts[name]:
                raise UrecaError(f"prompt template {name}.txt has no ${key} placeholder")
    digest = hashlib.sha256("\0".join(f"{k}\0{texts[k]}" for k in sorted(texts)).encode()).hexdigest()[:8]
    return Templates(texts, f"{base}+{digest}")
