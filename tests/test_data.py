"""Training data: our two record forms, the released InternVL chat format, the split, and bad lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ureca_cli.errors import InputError, UrecaError
from ureca_cli.train.data import DataConfig, load_samples, split_by_image
from ureca_cli.train.synthetic import SceneConfig, write_dataset

FIXTURE = Path(__file__).parent / "data" / "internvl_chat"


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("syn"), train=6, test=1, seed=1, cfg=SceneConfig(sizes=((96, 64),)))


def _released_cfg(root=FIXTURE):
    return DataConfig(images_dir=root / "images", masks_dir=root / "masks")


def test_region_and_image_records_give_the_same_samples(syn):
    regions = load_samples([syn["train"]])
    images = load_samples([syn["train_images"]])
    assert [(s.id, s.caption, s.rle) for s in regions] == [(s.id, s.caption, s.rle) for s in images]
    assert all(Path(s.image).is_file() for s in regions)


def test_released_format_loads_from_the_fixture(monkeypatch):
    from ureca_cli.datasets import internvl as D

    reads = []
    real = D.SA1BMasks.load

    def counting(self):
        real(self)
        reads.append(self.files_read)

    monkeypatch.setattr(D.SA1BMasks, "load", counting)
    samples = load_samples([FIXTURE / "train.jsonl"], _released_cfg())
    assert reads == [2]  # two SA-1B files, each read once for all six lines
    assert len(samples) == 6
    assert samples[0].id == "9100001/1000" and samples[0].image_id == "9100001"  # the one image id rule
    assert samples[0].caption == "a green square on the right"
    assert samples[0].question == "Describe this region in the image."
    assert samples[0].rle["size"] == [84, 112]
    assert samples[0].image.endswith("sa_9100001.jpg")


def test_split_is_by_image_and_deterministic(syn):
    samples = load_samples([syn["train"]])
    train, val = split_by_image(samples, 0.3, seed=0)
    assert train and val and len(train) + len(val) == len(samples)
    assert not {s.image_id for s in train} & {s.image_id for s in val}
    assert split_by_image(samples, 0.3, seed=0) == (train, val)
    assert split_by_image(samples, 0.0) == (samples, [])
    _, capped = split_by_image(samples, 0.9, seed=0, val_max_regions=1)
    assert len({s.image_id for s in capped}) == 1


def test_val_cap_limits_scoring_not_the_held_out_images(syn):
    """--val-max-regions caps the regions scored, spread over the held-out images; every held-out image stays
    out of training, however many regions it has."""
    samples = load_samples([syn["train"]])
    train, held = split_by_image(samples, 0.5, seed=0)
    held_images = {s.image_id for s in held}
    assert len(held_images) == 3 and len(held) > 4
    for cap in (1, 2, 3, 4):
        capped_train, val = split_by_image(samples, 0.5, seed=0, val_max_regions=cap)
        assert capped_train == train
        assert len(val) == cap and {s.id for s in val} <= {s.id for s in held}
        assert len({s.image_id for s in val}) == min(cap, len(held_images))
        assert split_by_image(samples, 0.5, seed=0, val_max_regions=cap) == (capped_train, val)
    assert split_by_image(samples, 0.5, seed=0, val_max_regions=len(held)) == (train, held)


def test_region_records_without_image_id_group_by_image_file(syn, tmp_path):
    """No 'image_id' and ids without '/': the regions of one image still share one image id (its file), so
    the split never puts one image on both sides."""
    lines = [json.loads(x) for x in open(syn["train"])]
    rows = [dict({k: v for k, v in r.items() if k != "image_id"}, id=f"r{i}") for i, r in enumerate(lines)]
    rows[0]["image"] = Path(rows[0]["image"]).name  # the same file by a relative name (found via --images)
    samples = load_samples([_write(tmp_path / "no_ids.jsonl", rows)],
                           DataConfig(images_dir=Path(lines[0]["image"]).parent))
    assert len({s.image_id for s in samples}) == len({r["image_id"] for r in lines}) < len(samples)
    assert all(s.image_id == s.image for s in samples)
    train, val = split_by_image(samples, 0.5, seed=0)
    assert train and val and not {s.image for s in train} & {s.image for s in val}


def _write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def test_bad_lines_name_file_and_line(syn, tmp_path):
    good = [json.loads(x) for x in open(syn["train"])][:2]
    no_caption = dict(good[1])
    del no_caption["caption"]
    no_mask = dict(good[1])
    del no_mask["rle"]
    missing_image = dict(good[1], image=str(tmp_path / "nope.png"))
    cases = {
        "without a caption": [good[0], no_caption],
        "without a mask": [good[0], no_mask],
        "does not exist": [good[0], missing_image],
        "not valid JSON": [good[0], "{oops"],
    }
    for words, lines in cases.items():
        path = _write(tmp_path / "bad.jsonl", lines)
        with pytest.raises(InputError) as e:
            load_samples([path])
        assert "bad.jsonl:2: " in str(e.value) and words in str(e.value), str(e.value)
    tree = {"image_id": "x", "image": good[0]["image"], "width": 96, "height": 64,
            "nodes": [{"id": 0, "rle": good[0]["rle"]}]}
    with pytest.raises(InputError, match="no captioned node"):
        load_samples([_write(tmp_path / "tree.jsonl", [tree])])


def test_released_format_bad_lines(tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(FIXTURE, root)
    lines = [json.loads(x) for x in open(root / "train.jsonl")]
    cfg = _released_cfg(root)

    bad = dict(lines[1], mask_id=424242)
    with pytest.raises(InputError, match=r"train.jsonl:2: mask id 424242 is not in .*sa_9100001.json"):
        load_samples([_write(root / "train.jsonl", [lines[0], bad])], cfg)
    no_gpt = dict(lines[1], conversations=lines[1]["conversations"][:1])
    with pytest.raises(InputError, match=r"train.jsonl:2: line without a caption"):
        load_samples([_write(root / "train.jsonl", [lines[0], no_gpt])], cfg)
    no_mask = {k: v for k, v in lines[1].items() if k != "mask_id"}
    with pytest.raises(InputError, match=r"train.jsonl:2: line without a mask"):
        load_samples([_write(root / "train.jsonl", [lines[0], no_mask])], cfg)
    (root / "images" / "sa_9100002.jpg").unlink()
    with pytest.raises(InputError, match=r"train.jsonl:4: image 'sa_9100002' does not exist"):
        load_samples([_write(root / "train.jsonl", lines)], cfg)
    with pytest.raises(InputError, match="pass --masks"):
        load_samples([root / "train.jsonl"], DataConfig(images_dir=root / "images"))
    with pytest.raises(UrecaError, match="no such folder"):
        DataConfig(masks_dir=root / "nowhere")


def test_sa1b_file_shapes_that_cannot_be_read_name_the_file(tmp_path):
    """A list-form file (SAM's automatic mask generator) with polygons has no image size; an 'image' field
    that is not an object has none either: one InputError naming the file, not a traceback."""
    root = tmp_path / "rel"
    shutil.copytree(FIXTURE, root)
    path = root / "masks" / "sa_9100001.json"
    sa1b = json.loads(path.read_text())
    polygon = [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]]
    lines = (root / "train.jsonl").read_text().splitlines()[:1]  # mask id 1000 of sa_9100001
    _write(root / "train.jsonl", lines)
    listed = [dict(a, segmentation=polygon) for a in sa1b["annotations"]]
    for bad, words in ((listed, "polygon"), (dict(sa1b, image="sa_9100001.jpg"), "'image' should be")):
        path.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=words) as e:
            load_samples([root / "train.jsonl"], _released_cfg(root))
        assert str(e.value).startswith(str(path)), str(e.value)
    sized = dict(sa1b, annotations=listed)  # polygons with the image's size are read
    path.write_text(json.dumps(sized))
    samples = load_samples([root / "train.jsonl"], _released_cfg(root))
    assert samples[0].rle["size"] == [84, 112]


def test_masks_follow_the_one_mask_rule(syn, tmp_path, cli):
    """Train took an all-zero mask (and counts that stop short of the image) that caption refuses: the one mask
    rule (masks.rle) now stops loading at the line, before anything is trained or written."""
    import numpy as np

    from ureca_cli import masks as M

    good = [json.loads(x) for x in open(syn["train"])][:2]
    h, w = good[1]["rle"]["size"]
    cases = {
        "mask is empty (no pixel of the region is set)": dict(good[1], rle=M.encode(np.zeros((h, w)))),
        "uncompressed RLE counts do not cover": dict(good[1], rle={"size": [h, w], "counts": [5, 5]}),
        "corrupt RLE counts (runs cover": dict(good[1], rle={"size": [h, w + 1], "counts": good[1]["rle"]["counts"]}),
    }
    for words, bad in cases.items():
        path = _write(tmp_path / "bad.jsonl", [good[0], bad])
        with pytest.raises(InputError) as e:
            load_samples([path])
        assert "bad.jsonl:2" in str(e.value) and words in str(e.value), str(e.value)
    r = cli("train", path, "--out", tmp_path / "run", "--base", "tiny", "--cpu")
    assert r.exit_code == 2 and "bad.jsonl:2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
