"""``ureca tree PHOTOS --generate-masks``: SAM's automatic masks of any photos, then the same mask trees as
from SA-1B files, so ``tree --generate-masks | annotate | refine`` runs on any folder of images.

Inputs: image files (``.jpg``, ``.jpeg``, ``.png``, any case), folders (their images, sorted; not their
subfolders), globs (their image matches, sorted; ``**`` reaches any depth) and ``-`` (paths on stdin, one a
line), each file once (by its resolved path). A file named on its own is taken whatever its suffix. Image ids
follow the records' rule for images without an SA-1B id (``sam.sa1b.image_id_of``: the file's stem); two photos
of one run with the same id would give colliding records, region ids and ``--write-masks`` files, so the second
fails, naming the first.

One photo is one unit of work: decoded, SAM's automatic mask generation (``sam.generate_mask_file``: a grid of
point prompts, ``points_per_batch`` at a time through SAM's decoder, the predicted-IoU and stability filters,
NMS, crops), the SA-1B dict written to ``--write-masks DIR`` (atomically: ``DIR/<image_id>.json``, which
``ureca tree DIR --images PHOTOS`` reads back) and handed in memory to ``build_tree``. The record's ``source``
is the photo's absolute path (what ``--resume`` matches); its ``generator`` block names the SAM model and the
settings that made the masks.

SAM is loaded once, in this process, on ``device`` (a GPU when one is visible), and photos go through it one
after another. ``--jobs`` above 1 is refused: on a CPU torch already spreads one SAM over every core, so more
processes would only divide them (and hold a SAM each); for several GPUs, run one process per GPU
(``--device cuda:I --shard I/N``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import records as R
from ..errors import UrecaError
from ..sam import DEFAULT_SAM_MODEL, AmgConfig
from ..sam.config import check_sam_dtype
from ..stream import Item, check_output_folder
from .tree import TreeConfig, build_tree, source_key

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class GenerateConfig:
    """How ``tree --generate-masks`` makes masks: the SAM checkpoint (hub id or folder), its device (``None``:
    a GPU when present) and dtype, the automatic-mask-generation settings, and where to keep the masks."""

    sam_model: str = DEFAULT_SAM_MODEL
    device: str | None = None
    dtype: str = "auto"
    amg: AmgConfig = field(default_factory=AmgConfig)
    write_masks: Path | None = None

    def __post_init__(self):
        check_sam_dtype(self.dtype)
        if not isinstance(self.amg, AmgConfig):
            raise TypeError(f"amg: expected an AmgConfig, got {type(self.amg).__name__}")
        check_output_folder("--write-masks", self.write_masks)


# ------------------------------------------------------------------------------------------------- inputs
def _is_photo(path: str) -> bool:
    return Path(path).suffix.lower() in PHOTO_SUFFIXES


def _is_photo_file(path: str) -> bool:
    return _is_photo(path) and Path(path).is_file()


def _photo_folder(path: Path) -> tuple[list[str], str | None]:
    found = sorted(str(p) for p in path.iterdir() if p.is_file() and _is_photo(p.name))
    return found, f"directory holds no images ({', '.join(PHOTO_SUFFIXES)})"


def photo_items(specs: list[str]) -> list[Item]:
    """The photos the inputs name, in order, each file once (see the module docstring; the specs are expanded as
    ``tree_inputs.expand_specs`` does for SA-1B files). A spec that yields nothing, and a photo whose image id an
    earlier one has, become items that fail with a message naming them, so ``--on-error skip`` counts them and
    ``stop`` stops there."""
    from ..sam.sa1b import image_id_of
    from .tree_inputs import expand_specs, failed_item

    items: list[Item] = []
    seen: set[str] = set()
    ids: dict[str, str] = {}
    for spec, path, why in expand_specs(specs, folder=_photo_folder, keep=_is_photo_file,
                                        listed_what="one image path a line",
                                        no_match=f"no image ({', '.join(PHOTO_SUFFIXES)}) matches this pattern"):
        if path is None:
            items.append(failed_item(spec, why or "nothing to read"))
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        image_id = image_id_of(path)
        if image_id in ids:
            items.append(failed_item(path, f"image id {image_id!r} (the file's stem) is already the id of "
                                           f"{ids[image_id]}: the images of one run need different ids (rename "
                                           "one, or run them separately)"))
            continue
        ids[image_id] = path
        items.append(Item(path, path, path.encode()))
    return items


# --------------------------------------------------------------------------------------------------- work
class PhotoTrees:
    """The unit of work: a photo's path -> its image record, with SAM (``seg``, loaded once) making the masks."""

    def __init__(self, seg: Any, cfg: TreeConfig, gcfg: GenerateConfig):
        self.seg, self.cfg, self.gcfg = seg, cfg, gcfg

    def __call__(self, path: str) -> dict:
        from ..sam import generate_mask_file, write_mask_file

        data = generate_mask_file(self.seg, path, self.gcfg.amg, where=path)
        if self.gcfg.write_masks is not None:
            write_mask_file(data, self.gcfg.write_masks)
        return build_tree(path, self.cfg, data=data, image=path)


def run(specs: list[str], cfg: TreeConfig, gcfg: GenerateConfig, scfg: Any, seg: Any = None) -> Any:
    """Build the trees of every photo ``specs`` names (``photo_items``) under the stream contract
    (``stream.run_stage``; ``scfg.jobs`` must be 1). ``seg``: a loaded ``Segmenter``; by default
    ``gcfg.sam_model`` is loaded here once. Returns run_stage's summary."""
    from ..stream import run_stage

    if scfg.jobs != 1:
        raise UrecaError(f"--jobs {scfg.jobs}: with --generate-masks SAM runs once, in this process (torch already "
                         "uses every CPU core); for several GPUs run one process per GPU: --device cuda:I --shard I/N")
    if cfg.images is not None:
        raise UrecaError("--images: not with --generate-masks (the inputs are the images)")
    items = photo_items(specs)
    if seg is None:
        from ..sam import load_sam

        seg = load_sam(gcfg.sam_model, device=gcfg.device, dtype=gcfg.dtype)
    return run_stage("tree", items, PhotoTrees(seg, cfg, gcfg), scfg, input_key=source_key,
                     output_key=lambda rec: rec.get(R.SOURCE), total=len(items), kind="thread")
