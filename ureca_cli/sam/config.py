"""Settings of automatic mask generation, kept apart from the code that runs it so that the CLI can build
and check them without loading numpy or torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UrecaError

DEFAULT_SAM_MODEL = "facebook/sam-vit-base"  # --sam-model
EDGE_TOLERANCE = 20.0  # px: SAM's atol for "a box touches the crop edge"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # --sam-dtype; auto: float32 on the CPU, bfloat16 on a GPU


def check_sam_dtype(dtype: str, option: str = "--sam-dtype") -> str:
    """``dtype`` when it is one of ``DTYPES``; otherwise one ``UrecaError`` naming ``option`` (no torch needed)."""
    if dtype not in DTYPES:
        raise UrecaError(f"{option} {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype


@dataclass(frozen=True)
class AmgConfig:
    """Settings of automatic mask generation (SAM's defaults). Areas in pixels; thresholds in [0, 1]."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_area: int = 1  # masks with fewer pixels are dropped (1: only empty ones)

    def __post_init__(self):
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UrecaError(f"--{name.replace('_', '-')} {getattr(self, name)}: needs a whole number >= 1")
        for name in ("crop_n_layers", "min_area"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UrecaError(f"--{name.replace('_', '-')} {getattr(self, name)}: needs a whole number >= 0")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UrecaError(f"--{name.replace('_', '-')} {getattr(self, name)}: needs a value in [0, 1]")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise UrecaError(f"--crop-overlap-ratio {self.crop_overlap_ratio}: needs a value in [0, 1)")
        if not self.stability_score_offset > 0.0:
            raise UrecaError(f"--stability-score-offset {self.stability_score_offset}: needs a value above 0")
        if self.points_per_side // self.crop_n_points_downscale_factor ** self.crop_n_layers < 1:
            raise UrecaError(f"--points-per-side {self.points_per_side}: the deepest crop layer would get no "
                             f"points (downscale factor {self.crop_n_points_downscale_factor}, "
                             f"{self.crop_n_layers} layers)")

    def settings(self) -> dict:
        """The settings, for the records that say how masks were made."""
        return asdict(self)
