"""Captioning held-out regions with a model in memory, and the validation pass that ends ``ureca train``.

``caption_samples`` groups regions by image so that each image is encoded once and its prompt prefix prefilled
once (``UrecaModel.generate_shared``); without masks (the ablation's baseline) one caption is generated per
image and question, since nothing else tells its regions apart. ``Validator`` is the validation pass, which
``ureca train`` (``commands/train.py``) hands to ``train.trainer.train_main`` as its callback: it checks up
front that scoring can run, and at the end writes, next to the checkpoint, ``val_predictions.jsonl`` and
``val_references.jsonl`` (region records ``{"id", "image_id", "caption"}``, which ``ureca score`` reads) and
``val_scores.json`` (the score module's summary, 0-100).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig, ValConfig
from ..train.data import Sample, encode_sample, load_image_and_mask


def _decode(tokenizer, ids) -> str:
    return " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())


def caption_samples(model, samples: list[Sample], *, use_mask: bool = True, max_new_tokens: int = 64,
                    batch_size: int = 8, amp: str = "fp32") -> dict[str, str]:
    """Greedy captions ``{sample id: caption}`` for ``samples`` from ``model`` (a UrecaModel with .processor)."""
    import torch

    proc = model.processor
    gen = {"max_new_tokens": max_new_tokens, "do_sample": False}
    groups: dict[tuple[str, str | None], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.image, s.question)].append(s)
    out: dict[str, str] = {}
    cuda = model.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and amp == "bf16" else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast:
        for group in groups.values():
            first = group[0]
            if not use_mask or first.rle is None:
                enc = encode_sample(proc, first, use_mask=False, with_answer=False)
                new = model.generate(enc["input_ids"], enc["attention_mask"], pixel_values=enc["pixel_values"], **gen)
                text = _decode(proc.tokenizer, new[0])
                out.update({s.id: text for s in group})
                continue
            enc = encode_sample(proc, first, with_answer=False)
            tiles = [enc["mask_tiles"]]
            for s in group[1:]:
                _, mask = load_image_and_mask(s)
                tiles.append(torch.from_numpy(proc.mask_tiles(mask)))
            new = model.generate_shared(enc["input_ids"], enc["pixel_values"], tiles, batch_size=batch_size, **gen)
            out.update({s.id: _decode(proc.tokenizer, t) for s, t in zip(group, new, strict=True)})
    if was_training:
        model.train()
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from ..stream import dumps

    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        for r in rows:
            fh.write(dumps(r))
    tmp.replace(path)


def score_captions(preds: dict[str, str], samples: list[Sample], scfg) -> dict[str, Any]:
    """The score module's summary (0-100) of ``preds`` against the samples' captions, grouped by image."""
    from .readers import Matched
    from .score import score

    m = Matched(ids=[s.id for s in samples], predictions=[preds.get(s.id, "") or "-" for s in samples],
                references=[[s.caption] for s in samples], groups=[s.image_id for s in samples])
    with contextlib.redirect_stdout(sys.stderr):
        return score(m, scfg).summary


def score_config(val: ValConfig) -> Any:
    """The ``ScoreConfig`` of a training run's validation settings (BERTScore off: the n-gram metrics)."""
    from .score import METRICS, NGRAM_METRICS, ScoreConfig

    return ScoreConfig(metrics=METRICS if val.bertscore else NGRAM_METRICS,
                       **({"bertscore_model": val.bertscore_model} if val.bertscore_model else {}),
                       bertscore_layers=val.bertscore_layers)


class Validator:
    """The validation pass of one ``ureca train`` run (``train.trainer.Validation``)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.scfg = score_config(cfg.val)

    def check(self) -> None:
        """Fail before training when scoring could not run: no BERTScore model, no Java for METEOR."""
        from .score import check_ready

        check_ready(self.scfg)

    def __call__(self, model: Any, val: list[Sample], out: Path) -> dict[str, Any]:
        """Caption the held-out regions, score them, and write the three ``val_*`` files into ``out``."""
        from ..train.trainer import _amp, _log

        cfg = self.cfg
        _log(cfg, f"validation: captioning {len(val)} held-out regions")
        preds = caption_samples(model, val, use_mask=cfg.use_mask, max_new_tokens=cfg.val.max_new_tokens,
                                amp=_amp(cfg))
        _write_jsonl(out / "val_predictions.jsonl",
                     [{"id": s.id, "image_id": s.image_id, "caption": preds[s.id]} for s in val])
        _write_jsonl(out / "val_references.jsonl",
                     [{"id": s.id, "image_id": s.image_id, "image": s.image, "rle": s.rle, "caption": s.caption}
                      for s in val])
        summary = score_captions(preds, val, self.scfg)
        (out / "val_scores.json").write_text(json.dumps(summary, indent=2) + "\n")
        figures = ", ".join(f"{k} {v:.2f}" for k, v in summary.items()
                            if isinstance(v, float) and not k.endswith("chance"))
        _log(cfg, f"validation ({len(val)} regions): {figures}; written to {out / 'val_scores.json'}")
        return summary
