"""`ureca tree`: containment trees node by node, the released rule on its fixtures, roles, inputs, render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.tree_fixtures import ann, blob_file, rect, write_sa1b
from ureca_cli.curate.tree import TreeConfig, build_parents, build_tree, load_mask_file
from ureca_cli.errors import UrecaError
from ureca_cli.masks.runs import BadCounts, RunSet

DATA = Path(__file__).parent / "data" / "tree"
H, W = 100, 100  # hand-built files: 10,000 pixels, so the 0.007 floor is 70 pixels


def r(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    return rect(H, W, y0, y1, x0, x1)


def tree_of(tmp_path: Path, masks: list[np.ndarray], rule: str = "tightest", **cfg) -> dict:
    """id -> node of the tree built from ``masks`` (ids 1, 2, ... in file order)."""
    path = write_sa1b(tmp_path, "t", masks)
    rec = build_tree(path, TreeConfig(parent_rule=rule, **cfg))
    return {n["id"]: n for n in rec["nodes"]}


def parents(nodes: dict) -> dict:
    return {i: n["parent"] for i, n in nodes.items()}


# ------------------------------------------------------------------------------------------------ RLE
def test_runset_agrees_with_pycocotools_and_rejects_corrupt_counts():
    """Areas, pixel boxes and pairwise intersections read from the runs equal pycocotools' on random masks."""
    from pycocotools import mask as mu

    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        masks = [np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)]
        masks += [(rng.random((h, w)) < rng.random()).astype(np.uint8) for _ in range(4)]
        rles = [mu.encode(np.asfortranarray(m)) for m in masks]
        rs = RunSet.from_counts([r["counts"] for r in rles], h, w)
        assert rs.areas.tolist() == [int(m.sum()) for m in masks]
        assert np.array_equal(rs.boxes, mu.toBbox(rles))
        a, b = (x.ravel() for x in np.meshgrid(np.arange(6), np.arange(6), indexing="ij"))
        contain = np.where(rs.areas[a] > 0, rs.intersections(a, b) / np.maximum(rs.areas[a], 1), 0.0)
        assert np.array_equal(contain.reshape(6, 6), mu.iou(rles, rles, [1] * 6))  # [a, b] = |a∩b|/|a|, same floats
    good = mu.encode(np.asfortranarray(rect(10, 10, 2, 5, 3, 7)))["counts"]
    for bad in (b"", b"zzzz", good[:-1] + b"~", good + b"1", b"P", good[:-2]):
        with pytest.raises(BadCounts) as err:
            RunSet.from_counts([good, bad], 10, 10)
        assert err.value.index == 1


# --------------------------------------------------------------------------------- tightest, node by node
def test_static_fixture_both_rules():
    """tests/data/tree/nest.json: a cup-like chain, a sibling that is smaller than its neighbour, a duplicate."""
    path = DATA / "nest.json"
    rec = build_tree(path, TreeConfig())
    nodes = {n["id"]: n for n in rec["nodes"]}
    assert parents(nodes) == {10: None, 11: 10, 12: 10, 13: 12, 14: 13, 15: 14, 16: None, 17: 16, 18: None, 19: 17}
    assert {i: n["role"] for i, n in nodes.items()} == {
        10: "main", 11: "part", 12: "part", 13: "part", 14: "part", 15: "dropped",
        16: "dropped", 17: "dropped", 18: "dropped", 19: "dropped",
    }
    assert {i: n.get("drop_reason") for i, n in nodes.items() if n["role"] == "dropped"} == {
        15: "small", 16: "not-main: shallow", 17: "inside-dropped", 18: "empty", 19: "inside-dropped",
    }
    assert [nodes[i]["depth"] for i in (10, 12, 13, 14, 15)] == [1, 2, 3, 4, 5]
    assert nodes[10]["children"] == [11, 12] and nodes[15]["children"] == []
    # the file's own box (SA-1B: one pixel short), not the pixels' box
    assert nodes[10]["bbox"] == [0.0, 0.0, 59.0, 59.0] and nodes[10]["area"] == 3600
    assert rec["image_id"] == "7" and rec["schema"] >= 1 and rec["source"] == str(path.resolve())
    assert rec["image"] == str((DATA / "nest.png").resolve())
    # the released greedy descent goes into 11 first (the first child of 10 that holds 13)
    first = build_tree(path, TreeConfig(parent_rule="first"))
    assert {n["id"]: n["parent"] for n in first["nodes"]}[13] == 11


def test_equal_areas_hang_in_file_order_and_the_later_one_is_tighter(tmp_path):
    a, b, inner = r(10, 60, 10, 60), r(10, 60, 10, 60), r(20, 30, 20, 30)
    other = r(70, 80, 0, 50)  # same area as... nothing; a disjoint root
    twin = r(70, 80, 50, 100)  # same area as `other`, disjoint: both roots
    nodes = tree_of(tmp_path, [inner, b, a, other, twin])
    assert parents(nodes) == {1: 3, 2: None, 3: 2, 4: None, 5: None}


@pytest.mark.parametrize("inside,expected_parent", [(81, 1), (80, 1), (79, None)])
def test_containment_just_above_and_below_the_threshold(tmp_path, inside, expected_parent):
    container = r(0, 10, 0, 12)  # 120 pixels
    m = np.zeros((H, W), np.uint8)
    ys, xs = np.nonzero(container)
    m[ys[:inside], xs[:inside]] = 1
    m[50, : 100 - inside] = 1  # the rest far away: 100 pixels in all
    assert m.sum() == 100
    nodes = tree_of(tmp_path, [container, m])
    assert nodes[2]["parent"] == expected_parent


def test_empty_masks_are_roots_that_hold_nothing(tmp_path):
    empty = np.zeros((H, W), np.uint8)
    nodes = tree_of(tmp_path, [empty, r(0, 50, 0, 50), empty, r(10, 20, 10, 20)])
    assert parents(nodes) == {1: None, 2: None, 3: None, 4: 2}
    assert nodes[1]["children"] == [] and nodes[1]["drop_reason"] == "empty" and nodes[1]["area"] == 0


def test_a_mask_larger_than_its_would_be_parent_becomes_its_parent(tmp_path):
    small = r(0, 9, 0, 10)  # 90 pixels
    big = np.zeros((H, W), np.uint8)
    big[0:8, 0:10] = 1
    big[8, 0:5] = 1  # 85 pixels inside `small`
    big[50, 0:15] = 1  # 100 pixels: contain(big, small) = 0.85, but big comes first
    assert big.sum() == 100
    nodes = tree_of(tmp_path, [small, big])
    assert parents(nodes) == {1: 2, 2: None}  # contain(small, big) = 85/90


def test_several_roots_and_a_deep_chain(tmp_path):
    chain = [r(k, 100 - k, k, 100 - k) for k in range(0, 45, 6)]  # 8 nested squares
    masks = chain + [rect(H, W, 0, 3, 0, 3)]  # a 9-pixel square also inside the first three
    nodes = tree_of(tmp_path, masks, main_max_area=1.0)
    assert [nodes[i]["parent"] for i in range(1, 9)] == [None, 1, 2, 3, 4, 5, 6, 7]
    assert [nodes[i]["depth"] for i in range(1, 9)] == list(range(1, 9))
    assert nodes[9]["parent"] == 1 and nodes[9]["depth"] == 2
    assert nodes[1]["role"] == "main" and nodes[8]["role"] == "part"  # 8: 12x12 = 144 >= 70 pixels
    assert nodes[9]["role"] == "dropped" and nodes[9]["drop_reason"] == "small"
    several = tree_of(tmp_path / "b", [r(0, 10, 0, 10), r(20, 30, 20, 30), r(50, 60, 0, 100)])
    assert parents(several) == {1: None, 2: None, 3: None}


def test_roles_follow_depth_and_area_bounds(tmp_path):
    chain = [r(0, 40, 0, 40), r(0, 30, 0, 30), r(0, 20, 0, 20), r(0, 10, 0, 10)]  # depth 4, 16% of the image
    shallow = [r(50, 90, 50, 90), r(50, 70, 50, 70), r(50, 60, 50, 60)]  # depth 3
    tiny = [r(95, 97, 0, 30)]  # 60 pixels: under 0.007 of the image
    nodes = tree_of(tmp_path, chain + shallow + tiny)
    assert [nodes[i]["role"] for i in range(1, 5)] == ["main", "part", "part", "part"]
    assert nodes[5]["drop_reason"] == "not-main: shallow" and nodes[6]["drop_reason"] == "inside-dropped"
    assert nodes[8]["drop_reason"] == "not-main: area"
    # the bounds are settings: a depth of 3 suffices when asked; 16% is too large under a 0.1 ceiling
    nodes = tree_of(tmp_path / "b", chain + shallow + tiny, main_min_depth=3, main_max_area=0.1)
    assert nodes[5]["role"] == "dropped" and nodes[1]["drop_reason"] == "not-main: area"
    nodes = tree_of(tmp_path / "c", chain + shallow + tiny, main_min_depth=3)
    assert nodes[5]["role"] == "main" and nodes[7]["role"] == "part"


def test_tightest_is_the_smallest_container_and_first_the_released_descent(tmp_path):
    """On ragged blobs, both rules equal a brute-force reading of their definitions on full bitmaps."""
    from pycocotools import mask as mu

    path = blob_file(tmp_path, "blobs", objects=5, seed=3)
    mf = load_mask_file(path, TreeConfig())
    bits = [mu.decode({"size": [mf.height, mf.width], "counts": c}).astype(bool) for c in mf.counts]
    areas = np.array([b.sum() for b in bits])
    order = sorted(range(len(bits)), key=lambda i: (-areas[i], i))

    def contain(a, b):
        return (bits[a] & bits[b]).sum() / areas[a] if areas[a] else 0.0

    tight = {}
    for pos, i in enumerate(order):
        cands = [j for j in order[:pos] if contain(i, j) >= 0.8]
        tight[i] = cands[-1] if cands else -1
    kids: dict = {-1: []}
    first = {}
    for i in order:
        node = -1
        while True:
            nxt = next((c for c in kids[node] if contain(i, c) >= 0.8), None)
            if nxt is None:
                break
            node = nxt
        kids[node].append(i)
        kids[i] = []
        first[i] = node
    got_t = build_parents(mf.runs, 0.8, "tightest")
    got_f = build_parents(mf.runs, 0.8, "first")
    assert got_t == [tight[i] for i in range(len(bits))]
    assert got_f == [first[i] for i in range(len(bits))]
    assert got_t != got_f  # the blobs are built so that the two rules disagree somewhere


def test_first_reproduces_the_released_trees(shared_data):
    trees = shared_data / "trees"
    expected = json.loads((trees / "released_parents.json").read_text())["trees"]
    assert len(expected) == 24
    differ = 0
    for name, want in expected.items():
        got = build_tree(trees / f"{name}.json", TreeConfig(parent_rule="first"))
        assert {str(n["id"]): n["parent"] for n in got["nodes"]} == want, name
        tight = build_tree(trees / f"{name}.json", TreeConfig())
        differ += sum(want[str(n["id"])] != n["parent"] for n in tight["nodes"])
    assert differ > 0  # the fixtures tell the two rules apart


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_inputs_paths_dirs_globs_stdin_and_sam_output(cli, tmp_path):
    d = tmp_path / "sa"
    for k in range(3):
        blob_file(d, f"sa_{k}", objects=2, seed=k, image_id=k)
    out = tmp_path / "a.jsonl"
    assert cli("tree", d, "-o", out).exit_code == 0
    recs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [rec["image_id"] for rec in recs] == ["0", "1", "2"]
    by_glob = cli("tree", str(d / "sa_*.json"))
    assert by_glob.exit_code == 0 and by_glob.stdout.encode() == out.read_bytes()
    listed = "\n".join(str(d / f"sa_{k}.json") for k in (2, 0)) + "\n"
    by_stdin = cli("tree", "-", input=listed)
    assert [orjson.loads(line)["image_id"] for line in by_stdin.stdout.splitlines()] == ["2", "0"]
    # SAM automatic-mask-generator output: a list of masks, no ids, no image info; the image is found by stem
    sam = tmp_path / "sam"
    sam.mkdir()
    (sam / "photo.png").write_bytes((d / "sa_0.png").read_bytes())
    anns = [ann(m, None) for m in (rect(240, 320, 0, 100, 0, 100), rect(240, 320, 10, 50, 10, 50))]
    (sam / "photo.json").write_bytes(orjson.dumps(anns))
    res = cli("tree", sam / "photo.json")
    rec = orjson.loads(res.stdout)
    assert rec["image_id"] == "photo" and (rec["width"], rec["height"]) == (320, 240)
    assert [(n["id"], n["parent"]) for n in rec["nodes"]] == [(0, None), (1, 0)]
    # --images DIR: the JSON in one place, the image in another
    (tmp_path / "json_only").mkdir()
    (tmp_path / "json_only" / "sa_1.json").write_bytes((d / "sa_1.json").read_bytes())
    res = cli("tree", tmp_path / "json_only" / "sa_1.json", "--images", d)
    assert res.exit_code == 0 and orjson.loads(res.stdout)["image"] == str(d / "sa_1.png")


def _tree_ids(*args, cwd: Path | None = None) -> tuple[list[str], list[str]]:
    """Image ids and sources of `ureca tree ARGS`, run in a subprocess (a glob that never ends fails the test
    instead of hanging it)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "ureca_cli", "tree", *map(str, args)], capture_output=True,
                         timeout=120, cwd=cwd)
    assert res.returncode == 0, res.stderr.decode()
    recs = [orjson.loads(line) for line in res.stdout.splitlines()]
    return [r["image_id"] for r in recs], [r["source"] for r in recs]


def test_each_file_once_through_symlink_loops_folders_and_repeats(tmp_path):
    """`tree 'd/**/*.json'` over a symlink loop never ended, and with one loop level wrote 41 copies of one
    image; a folder or a file named twice was read twice."""
    d = tmp_path / "d"
    a = blob_file(d, "sa_a", objects=1, seed=1, image_id="a")
    b = blob_file(d / "sub", "sa_b", objects=1, seed=2, image_id="b")
    (d / "loop").symlink_to(d)  # one level: d/loop/loop/... is d
    (d / "sub" / "up").symlink_to(tmp_path)  # a longer loop, through the folder above d
    (tmp_path / "same").symlink_to(d)
    ids, sources = _tree_ids(d / "**" / "*.json")
    assert ids == ["a", "b"] and sources == [str(a), str(b)]
    assert _tree_ids("d/**/*.json", cwd=tmp_path)[0] == ["a", "b"]
    assert _tree_ids(d, d, d / "loop", tmp_path / "same")[0] == ["a"]
    assert _tree_ids(a, b, a, d / "loop" / "sa_a.json", str(d / "*.json"))[0] == ["a", "b"]
    # where the inputs name a file twice, the first place it is named is the one the record keeps
    assert _tree_ids(tmp_path / "same" / "sa_a.json", a)[1] == [str(tmp_path / "same" / "sa_a.json")]


def test_recursive_glob_matches_glob_where_there_is_no_loop(tmp_path, monkeypatch):
    import glob

    from ureca_cli.curate.tree_inputs import recursive_glob

    for rel in ("a.json", "x/b.json", "x/y/c.json", "x/y/c.txt", ".h/d.json", "x/.e.json", "z.json/f.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    (tmp_path / "x" / "link").symlink_to(tmp_path / "x" / "y")  # followed, as glob follows it
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.json", "x/**/*.json", "**", "x/**/*", "**/y/*", "**/.e.json", ".*/**/*.json", "x/**/c.*",
                    str(tmp_path / "**" / "*.json")):
        assert recursive_glob(pattern) == sorted(glob.glob(pattern, recursive=True)), pattern


def test_repeated_inputs_resume_to_what_an_uninterrupted_run_writes(cli, tmp_path):
    """`ureca tree A B A -o out --resume` after A was written wrote fewer lines than a run without a stop."""
    d = tmp_path / "d"
    a = blob_file(d, "sa_a", objects=1, seed=1, image_id="a")
    b = blob_file(d, "sa_b", objects=1, seed=2, image_id="b")
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    assert cli("tree", a, b, a, "-o", whole).exit_code == 0
    part.write_bytes(whole.read_bytes().splitlines(keepends=True)[0])
    res = cli("tree", a, b, a, "-o", part, "--resume")
    assert res.exit_code == 0, res.stderr
    assert part.read_bytes() == whole.read_bytes()
    assert [orjson.loads(x)["image_id"] for x in whole.read_bytes().splitlines()] == ["a", "b"]


def test_shards_split_the_inputs(cli, tmp_path):
    d = tmp_path / "sa"
    for k in range(5):
        blob_file(d, f"sa_{k}", objects=1, seed=k, image_id=k)
    ids = []
    for i in range(2):
        res = cli("tree", d, "--shard", f"{i}/2")
        ids.append([orjson.loads(line)["image_id"] for line in res.stdout.splitlines()])
    assert ids == [["0", "2", "4"], ["1", "3"]]


def test_render_draws_regions_beside_the_tree(cli, tmp_path):
    from PIL import Image

    from ureca_cli.visual.render import PALETTE

    out = tmp_path / "png"
    res = cli("tree", DATA / "nest.json", "--render", out)
    assert res.exit_code == 0
    with Image.open(out / "7.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[1] > 480 + 200  # the image panel (enlarged to 480 px) and the tree beside it
    panel = pixels[:, :480]
    for depth in (1, 2, 3, 4):  # outlines in the colour of each depth that has a kept region
        assert (panel == PALETTE[depth - 1]).all(axis=-1).sum() > 20, depth


def test_settings_are_checked():
    for bad in ({"threshold": 0.0}, {"parent_rule": "nearest"}, {"main_min_area": 0.5, "main_max_area": 0.2},
                {"main_min_depth": 0}, {"part_min_area": 2.0}):
        with pytest.raises(UrecaError):
            TreeConfig(**bad)


@pytest.mark.slow
def test_demo_masks_nest_into_main_objects(tmp_path):
    """scripts/make_demo_masks.py (what `make demo` runs first) gives masks deep enough for main objects."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "scripts" / "make_demo_masks.py"), str(tmp_path)], check=True,
                   capture_output=True)
    rec = build_tree(tmp_path / "coffee.json", TreeConfig())
    roles = [n["role"] for n in rec["nodes"]]
    assert roles.count("main") >= 2 and roles.count("part") >= 10
    assert max(n["depth"] for n in rec["nodes"]) >= 4


# ------------------------------------------------------------------------------------- ids and file names
def test_render_names_stay_inside_the_folder_and_apart(cli, tmp_path):
    """`tree --render` wrote ../../x.png outside its folder for an image_id of "../../x", and failed with an
    unexpected error for "" or "."; every id now makes one distinct file inside the folder."""
    d = tmp_path / "in" / "deep"
    ids = ["../../x", ".", "..", "a/b", "a%2Fb", "a_b", "sa_1"]
    for k, image_id in enumerate(ids):
        blob_file(d, f"f{k}", objects=1, seed=k, image_id=image_id)
    out = tmp_path / "in" / "deep" / "png"
    res = cli("tree", d, "--render", out)
    assert res.exit_code == 0, res.stderr
    assert [orjson.loads(line)["image_id"] for line in res.stdout.splitlines()] == ids
    made = sorted(p for p in tmp_path.rglob("*.png") if p.parent == out)
    assert len(made) == len(ids)  # one each, none shared
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "in" / "x.png").exists()
    assert sorted(p for p in tmp_path.rglob("*.png") if p.parent != d) == made  # nothing written elsewhere
    empty = blob_file(tmp_path / "e", "e", objects=1, image_id="")
    res = cli("tree", empty, "--render", out)
    assert res.exit_code == 2 and "image.image_id" in res.stderr and "unexpected" not in res.stderr


def test_image_ids_follow_the_one_rule(cli, tmp_path):
    """SA-1B's image_id where the file gives one; else the stem, with SA-1B's sa_ prefix dropped before a
    number (SAM output saved as sa_900003.json names its image 900003, as SA-1B's own JSON would)."""
    d = tmp_path / "sam"
    d.mkdir()
    anns = [ann(m, None) for m in (rect(40, 60, 0, 30, 0, 50), rect(40, 60, 5, 20, 5, 20))]
    for stem in ("sa_900003", "sa_x7", "photo"):
        (d / f"{stem}.json").write_bytes(orjson.dumps(anns))
        (d / f"{stem}.png").write_bytes(b"")
    from tests.tree_fixtures import write_image

    for stem in ("sa_900003", "sa_x7", "photo"):
        write_image(d / f"{stem}.png", 60, 40)
    res = cli("tree", d)
    assert res.exit_code == 0, res.stderr
    assert [orjson.loads(line)["image_id"] for line in res.stdout.splitlines()] == ["photo", "900003", "sa_x7"]
    given = write_sa1b(tmp_path / "given", "sa_5", [rect(40, 60, 0, 30, 0, 50)], image_id=77)
    assert build_tree(given, TreeConfig())["image_id"] == "77"


def test_photos_are_expanded_as_mask_files_are_each_photo_once_through_a_loop(tmp_path):
    """`tree 'd/**/*.jpg' --generate-masks` walked its glob with glob(recursive=True), which never ends on a
    symlink loop: photos go through the same expansion as SA-1B files (tree_inputs.expand_specs)."""
    import signal

    from ureca_cli.curate.tree_photos import photo_items

    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for rel in ("a.jpg", "sub/b.png", "sub/notes.txt"):
        (d / rel).write_bytes(b"x")
    (d / "loop").symlink_to(d)
    (d / "sub" / "up").symlink_to(tmp_path)
    signal.alarm(30)  # the loop made this endless: fail, don't hang
    try:
        items = photo_items([str(d / "**" / "*.*"), str(d / "a.jpg"), str(d / "loop" / "a.jpg")])
    finally:
        signal.alarm(0)
    assert [i.value for i in items] == [str(d / "a.jpg"), str(d / "sub" / "b.png")]
    (bad,) = photo_items([str(tmp_path / "none" / "*.jpg")])
    assert bad.error is not None and "no image (" in str(bad.error)
