"""`ureca train` on a tiny random InternVL: what each stage may change, checkpoints, resume, bad input.

Every run is a few optimizer steps on a handful of synthetic regions (112x84 images, 56-pixel tiles).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.checks import one_error_line
from ureca_cli.train.synthetic import SceneConfig, write_dataset


def _free_port() -> int:
    """A loopback port nobody holds now (a fixed one clashes when two test runs share the machine)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "internvl_chat"
TINY = ["--base", "tiny", "--global-batch", "2", "--batch-size", "2", "--lora-r", "4", "--lora-alpha", "8",
        "--logging-steps", "1", "--cpu"]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("syn"), train=4, test=2, seed=5,
                         cfg=SceneConfig(sizes=((112, 84),), objects=(2, 3)))


def _cfg(tmp_path, **kw):
    from ureca_cli.train.config import TrainConfig

    base = dict(out=tmp_path / "out", stage="1", base="tiny", global_batch=2, per_device_batch=2, max_steps=3,
                save_steps=100, logging_steps=1, lora_r=4, lora_alpha=8, cpu=True, validate=False, quiet=True)
    base.update(kw)
    return TrainConfig.from_options(**base)


def _snapshot(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_stage1_changes_only_mask_encoder_and_added_rows(syn, tmp_path):
    from ureca_cli.model import build_tiny_ureca
    from ureca_cli.model.ureca import _embedding_matrices
    from ureca_cli.train.data import load_samples
    from ureca_cli.train.stages import sync_added_rows
    from ureca_cli.train.trainer import train_stage

    model = build_tiny_ureca(seed=0)
    before = _snapshot(model)
    train_stage(_cfg(tmp_path), "1", model, load_samples([syn["train"]]), tmp_path / "out")
    sync_added_rows(model)
    after = {n: p.detach() for n, p in model.named_parameters() if not n.startswith("added_rows.")}
    added = sorted(model.token_ids.added().values())
    changed = [n for n in before if not (before[n] == after[n]).all()]
    assert any(n.startswith("mask_encoder.") for n in changed)
    emb_names = {n for n, p in model.named_parameters() for m in _embedding_matrices(model.internvl)
                 if p is m.weight}
    for n in changed:
        if n.startswith("mask_encoder."):
            continue
        assert n in emb_names, f"stage 1 changed {n}"
        rows = (before[n] != after[n]).any(dim=1).nonzero().flatten().tolist()
        assert rows and set(rows) <= set(added), (n, rows, added)
    assert emb_names & set(changed), "no added-token row was trained"
    assert (tmp_path / "out" / "ureca.json").is_file() and (tmp_path / "out" / "trainable.safetensors").is_file()


def test_stage2_changes_only_lora_weights_on_the_language_model(syn, tmp_path):
    from ureca_cli.model import build_tiny_ureca, load_checkpoint, save_checkpoint
    from ureca_cli.train.data import load_samples
    from ureca_cli.train.trainer import train_stage

    save_checkpoint(build_tiny_ureca(seed=1), tmp_path / "s1")
    model = load_checkpoint(tmp_path / "s1", trainable=True)
    before = _snapshot(model)
    train_stage(_cfg(tmp_path, stage="2", init=tmp_path / "s1"), "2", model, load_samples([syn["train"]]),
              tmp_path / "out")
    after = _snapshot(model)
    lora = [n for n in after if "lora_" in n]
    assert lora and all("language_model" in n for n in lora)
    assert not any("vision" in n for n in lora)
    for n, value in after.items():
        if "lora_" in n:
            continue
        old = before.get(n, before.get(n.replace("base.base_model.model.", "base.").replace(".base_layer.", ".")))
        assert old is not None and (old == value).all(), f"stage 2 changed {n}"
    assert any(float(after[n].abs().sum()) > 0 for n in lora if "lora_B" in n)  # B starts at zero
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()


def test_both_stages_cli_checkpoint_reloads_and_captions(syn, tmp_path, cli):
    from ureca_cli.evaluate.validate import caption_samples
    from ureca_cli.model import load_checkpoint
    from ureca_cli.train.data import load_samples

    out = tmp_path / "run"
    java = shutil.which("java") is not None
    args = ["train", syn["train"], "--out", out, "--stage", "both", "--max-steps", "2", "--val-fraction", "0.5",
            "--no-bertscore", "--val-max-new-tokens", "6", *TINY] + ([] if java else ["--no-validate"])
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "stage 1:" in result.stderr and "trainable of" in result.stderr and "stage 2:" in result.stderr
    assert "samples/s" in result.stderr
    assert (out / "stage1" / "ureca.json").is_file()
    meta = json.loads((out / "ureca.json").read_text())
    assert meta["adapter"] is True
    if java:
        scores = json.loads((out / "val_scores.json").read_text())
        assert "METEOR" in scores and "CIDEr" in scores
        preds = [json.loads(x) for x in open(out / "val_predictions.jsonl")]
        refs = [json.loads(x) for x in open(out / "val_references.jsonl")]
        assert [p["id"] for p in preds] == [r["id"] for r in refs]
        train_images = {json.loads(x)["image_id"] for x in open(syn["train"])}
        assert {r["image_id"] for r in refs} < train_images
    model = load_checkpoint(out)
    samples = load_samples([syn["test"]])[:3]
    caps = caption_samples(model, samples, max_new_tokens=5)
    assert set(caps) == {s.id for s in samples} and all(isinstance(c, str) for c in caps.values())
    assert caption_samples(model, samples, max_new_tokens=5) == caps
    # a finished run is never written over; --resume on it has nothing to do
    stamp = (out / "mask_encoder.safetensors").read_bytes()
    again = cli("train", syn["train"], "--out", out, *TINY, "--no-validate")
    assert again.exit_code == 2 and "already holds a finished" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    done = cli("train", syn["train"], "--out", out, *TINY, "--no-validate", "--resume")
    assert done.exit_code == 0 and "already finished" in done.stderr
    assert (out / "mask_encoder.safetensors").read_bytes() == stamp


def test_stage2_loads_init_in_the_run_precision(syn, tmp_path):
    """A stage-1 checkpoint saved in bf16 trains in fp32 under --precision fp32 (not in the saved dtype)."""
    import torch

    from ureca_cli.model import build_tiny_ureca, save_checkpoint
    from ureca_cli.train.trainer import train_main

    save_checkpoint(build_tiny_ureca(seed=1).to(torch.bfloat16), tmp_path / "s1")
    cfg = _cfg(tmp_path, stage="2", init=tmp_path / "s1", precision="fp32", max_steps=1)
    train_main([syn["train"]], cfg)
    assert json.loads((cfg.out / "ureca.json").read_text())["dtype"] == "float32"


def test_checkpoint_load_device_and_dtype(monkeypatch, tmp_path):
    """Validation of a finished run (--resume) loads on the GPU in bf16 where the run has one; training loads
    on the CPU (the Trainer places each rank's copy); --cpu keeps everything on the CPU."""
    import torch

    from ureca_cli.train import trainer as T

    monkeypatch.setattr(T, "_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = _cfg(tmp_path, cpu=False)
    assert T._load_kwargs(cfg, gpu=True) == {"device": "cuda", "dtype": "bfloat16"}
    assert T._load_kwargs(cfg, gpu=False) == {"device": "cpu", "dtype": "bfloat16"}
    assert T._load_kwargs(replace(cfg, precision="fp32"), gpu=True) == {"device": "cuda", "dtype": "float32"}
    assert T._load_kwargs(replace(cfg, cpu=True), gpu=True) == {"device": "cpu", "dtype": "float32"}


def test_global_batch_is_exact(tmp_path, capsys):
    """--batch-size 6 with --global-batch 16 on one process: 4 per device x 4 steps, not 6 x 2 = 12."""
    from ureca_cli.train import trainer as T

    args, total = T._training_args(_cfg(tmp_path, global_batch=16, per_device_batch=6, quiet=False), tmp_path, 1e-4)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, total) == (4, 4, 16)
    assert "global batch 16 = 4 per device (--batch-size 6 lowered" in capsys.readouterr().err
    assert T.batch_layout(16, 4, 1) == (4, 4) and T.batch_layout(16, 32, 1) == (16, 1)
    assert T.batch_layout(16, 5, 2) == (4, 2) and T.batch_layout(13, 4, 1) == (1, 13)
    assert T.batch_layout(7, 4, 2) == (3, 1)  # 2 processes cannot share 7: the nearest smaller layout (6)


def test_stage2_keeps_and_records_the_init_model(syn, tmp_path, cli):
    """Stage 2 trains the model --init was trained as: train_config.json records its settings, and a model
    option given on the command line that contradicts them is one error line, exit 2, before training."""
    from ureca_cli.model import build_tiny_ureca, save_checkpoint

    s1 = tmp_path / "s1"
    save_checkpoint(build_tiny_ureca(seed=1, num_mask_tokens=4, dynamic_mask=False, max_tiles=6), s1)
    small = [*TINY[2:], "--no-validate"]  # no --base
    out = tmp_path / "never"
    _one_error_line(cli("train", syn["train"], "--stage", "2", "--init", s1, "--out", out, *small,
                        "--mask-tokens", "16", "--dynamic-mask", "--max-tiles", "6"),
                    "--init", "--mask-tokens 16 (it has --mask-tokens 4)", "--dynamic-mask (it has --no-dynamic-mask)")
    _one_error_line(cli("train", syn["train"], "--stage", "2", "--init", s1, "--out", out, *TINY, "--no-validate"),
                    "--base tiny")
    assert not out.exists()
    out = tmp_path / "s2"
    result = cli("train", syn["train"], "--stage", "2", "--init", s1, "--out", out, "--max-steps", "1",
                 "--mask-tokens", "4", *small)  # the same value as --init's is fine
    assert result.exit_code == 0, result.stderr
    used = json.loads((out / "train_config.json").read_text())
    assert (used["mask_tokens"], used["dynamic_mask"], used["max_tiles"]) == (4, False, 6)
    assert used["base"] == str(s1 / "base") and used["mask_projector"] == "linear" and "given" not in used


def test_bf16_autocast_on_cpu(syn, tmp_path):
    import torch

    from ureca_cli.model import build_tiny_ureca
    from ureca_cli.train.data import load_samples
    from ureca_cli.train.trainer import train_stage

    model = build_tiny_ureca(seed=0)
    seen = []
    layer = model.internvl.model.language_model.layers[0].mlp.up_proj
    layer.register_forward_hook(lambda m, a, o: seen.append((o.dtype, torch.is_autocast_enabled("cpu"))))
    trainer = train_stage(_cfg(tmp_path, precision="bf16", max_steps=2), "1", model, load_samples([syn["train"]]),
                        tmp_path / "out")
    assert seen and all(dtype == torch.bfloat16 and on for dtype, on in seen)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(x)) for x in losses)
    assert model.mask_encoder.conv1.weight.dtype == torch.float32  # trainable weights stay fp32


def test_released_format_trains(tmp_path, cli):
    out = tmp_path / "rel"
    result = cli("train", FIXTURE / "train.jsonl", "--images", FIXTURE / "images", "--masks", FIXTURE / "masks",
                 "--out", out, "--stage", "1", "--max-steps", "1", "--no-validate", "--val-fraction", "0", *TINY)
    assert result.exit_code == 0, result.stderr
    assert "6 training regions" in result.stderr
    assert (out / "ureca.json").is_file()


def _one_error_line(result, *words):
    one_error_line(result, *words, prefix="ureca train: error: ")


def test_bad_input_one_line_exit_2_nothing_written(syn, tmp_path, cli):
    lines = [json.loads(x) for x in open(syn["train"])][:3]
    bad = tmp_path / "bad.jsonl"
    no_caption = {k: v for k, v in lines[1].items() if k != "caption"}
    bad.write_text("\n".join(json.dumps(x) for x in (lines[0], no_caption)) + "\n")
    out = tmp_path / "never"
    _one_error_line(cli("train", bad, "--out", out, *TINY), "bad.jsonl:2", "caption")
    no_mask = {k: v for k, v in lines[1].items() if k != "rle"}
    bad.write_text("\n".join(json.dumps(x) for x in (lines[0], no_mask)) + "\n")
    _one_error_line(cli("train", bad, "--out", out, *TINY), "bad.jsonl:2", "mask")
    bad.write_text(json.dumps(dict(lines[0], image=str(tmp_path / "gone.png"))) + "\n")
    _one_error_line(cli("train", bad, "--out", out, *TINY), "bad.jsonl:1", "does not exist")
    rel = tmp_path / "rel.jsonl"
    row = json.loads((FIXTURE / "train.jsonl").read_text().splitlines()[0])
    rel.write_text(json.dumps(dict(row, mask_id=777)) + "\n")
    _one_error_line(cli("train", rel, "--images", FIXTURE / "images", "--masks", FIXTURE / "masks", "--out", out,
                        *TINY), "rel.jsonl:1", "mask id 777")
    not_ckpt = tmp_path / "not_ckpt"
    not_ckpt.mkdir()
    _one_error_line(cli("train", syn["train"], "--stage", "2", "--init", not_ckpt, "--out", out, *TINY),
                    "not a URECA checkpoint")
    assert not out.exists()


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "ureca_cli", "train", str(data), "--out", str(out), "--stage", "1",
            "--no-validate", *TINY, *extra]


@pytest.mark.slow
def test_resume_after_kill_continues_from_the_saved_step(syn, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = tmp_path / "crash"
    steps = ["--max-steps", "10", "--save-steps", "2", "--save-total-limit", "0"]
    proc = subprocess.Popen(_train_cmd(syn["train"], out, *steps), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-4" / "trainer_state.json").is_file():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "ureca.json").is_file()
    saved = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert 4 <= saved < 10
    refused = subprocess.run(_train_cmd(syn["train"], out, *steps), env=env, cwd=ROOT, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "interrupted run" in refused.stderr
    resumed = subprocess.run(_train_cmd(syn["train"], out, *steps, "--resume"), env=env, cwd=ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at step {saved}/10" in resumed.stderr
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    # the same run without the crash ends with the same weights: optimizer, scheduler, RNG and data order resumed
    clean = tmp_path / "clean"
    subprocess.run(_train_cmd(syn["train"], clean, *steps), env=env, cwd=ROOT, check=True, capture_output=True)
    assert (out / "trainable.safetensors").read_bytes() == (clean / "trainable.safetensors").read_bytes()


def _torchrun_train(syn, out, *args: str) -> subprocess.CompletedProcess:
    """`ureca train` on the tiny base in two CPU processes (gloo) under torchrun; asserts it exits 0."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "ureca_cli", "train", str(syn["train"]), "--out", str(out), "--max-steps", "2", "--no-validate",
           "--base", "tiny", "--global-batch", "4", "--batch-size", "2", "--cpu", "--logging-steps", "1", *args]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_process_cpu_run_with_torchrun(syn, tmp_path):
    out = tmp_path / "ddp"
    result = _torchrun_train(syn, out, "--stage", "1", "--save-steps", "2")
    assert "2 processes" in result.stderr
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (out / "ureca.json").is_file()
    assert result.stderr.count("stage 1: done") == 1  # one report, from rank 0


@pytest.mark.slow
def test_two_process_both_stages_with_torchrun(syn, tmp_path):
    """Stage 2 on every rank loads the stage-1 checkpoint that rank 0 wrote: the ranks wait for it."""
    out = tmp_path / "ddp"
    result = _torchrun_train(syn, out, "--stage", "both", "--save-steps", "100", "--lora-r", "4", "--lora-alpha", "8")
    assert (out / "stage1" / "ureca.json").is_file()
    assert json.loads((out / "ureca.json").read_text())["adapter"] is True
    assert result.stderr.count("stage 2: done") == 1


def test_config_checks(syn, tmp_path, cli, monkeypatch):
    from ureca_cli.errors import UrecaError
    from ureca_cli.train.config import TrainConfig

    with pytest.raises(UrecaError, match="--init"):
        TrainConfig(out=Path("x"), stage="2")
    # options named as the CLI spells them; a bad one stops the run before the data is read
    _one_error_line(cli("train", syn["train"], "--out", tmp_path / "o", "--batch-size", "0"), "--batch-size")
    _one_error_line(cli("train", syn["train"], "--out", tmp_path / "o", "--scheduler", "cosyne"),
                    "--scheduler 'cosyne'", "cosine_with_restarts")
    for flag in ("--lr-stage1", "--lr-stage2", "--epochs", "--weight-decay"):  # nan and inf were taken
        for value in ("nan", "inf"):
            _one_error_line(cli("train", tmp_path / "never_read.jsonl", "--out", tmp_path / "o", flag, value),
                            f"{flag} {value}: ", "finite")
    import torch

    from ureca_cli.train import trainer as T

    monkeypatch.setattr(T, "_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UrecaError, match="--precision bf16: this GPU"):
        T.train_main([str(tmp_path / "never_read.jsonl")], _cfg(tmp_path, precision="bf16", cpu=False))
    assert T._amp(_cfg(tmp_path, precision="bf16")) == "bf16"  # --cpu: bf16 autocast on the CPU
    with pytest.raises(UrecaError, match="fp16"):
        from ureca_cli.train.trainer import _amp

        _amp(replace(TrainConfig(out=Path("x"), stage="1"), precision="fp16", cpu=True))
    # FSDP over several processes would save one rank's shards: refused before anything is read or written
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UrecaError, match="FSDP over several processes"):
        T.train_main([str(tmp_path / "never_read.jsonl")], _cfg(tmp_path))
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert T._weights_dtype(_cfg(tmp_path)) == "float32"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_that_another_run_or_model_owns_is_refused(syn, tmp_path, cli):
    """`train --out` pointed at a URECA checkpoint without train_config.json, or at a Hugging Face model folder,
    replaced its ureca.json, safetensors and tokenizer.json. Refused, with or without --resume; nothing written."""
    ckpt = tmp_path / "ckpt"  # as `ureca convert` or the released model leaves it: no train_config.json
    ckpt.mkdir()
    for name in ("ureca.json", "mask_encoder.safetensors", "tokenizer.json"):
        (ckpt / name).write_text(f"keep {name}")
    hf = tmp_path / "hf"
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (hf / name).write_text(f"keep {name}")
    for folder, why in ((ckpt, "holds a URECA checkpoint that no ureca train run left here (no train_config.json)"),
                        (hf, "is not empty and holds no ureca train run (config.json, model.safetensors, "
                             "tokenizer.json)")):
        before = _files(folder)
        for stage in ("1", "both"):
            for resume in ([], ["--resume"]):
                _one_error_line(cli("train", syn["train"], "--out", folder, "--stage", stage, *TINY, *resume,
                                    "--no-validate"), f"--out {folder}: {why}", "choose a new or empty folder")
        assert _files(folder) == before


def test_resume_with_nothing_to_resume_is_refused(syn, tmp_path, cli):
    """`train --resume` where OUT holds no checkpoint started a fresh run without a word."""
    for out in (tmp_path / "none", tmp_path / "empty", tmp_path / "nostep"):
        if out.name != "none":
            out.mkdir()
        if out.name == "nostep":  # an interrupted `--stage both` that saved no step yet
            (out / "stage1" / "checkpoint-2").mkdir(parents=True)
        for stage in ("1", "both"):
            _one_error_line(cli("train", syn["train"], "--out", out, "--stage", stage, *TINY, "--resume",
                                "--no-validate"),
                            f"--resume: {out} holds no checkpoint to go on from",
                            "a fresh run is the same command without --resume")
    assert not (tmp_path / "none").exists() and not any((tmp_path / "empty").iterdir())


def test_out_states(tmp_path):
    """Which folders a run may write into: new or empty ones, its own interrupted one (with --resume), and
    its finished one (with --resume: nothing to do)."""
    from ureca_cli.train.trainer import _check_out

    root = tmp_path
    assert _check_out(root / "new", False, "x") == "new"
    (root / "empty").mkdir()
    (root / "empty" / ".nfs0001").write_text("")  # hidden files do not count
    assert _check_out(root / "empty", False, "x") == "new"
    run = root / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (run / "checkpoint-4" / "trainable.safetensors").write_text("")
    assert _check_out(run, True, "x") == "resume"
    both = root / "both"
    (both / "stage1" / "checkpoint-2").mkdir(parents=True)  # --stage both, stopped in stage 1: OUT is its run
    assert _check_out(both, True, "x") == "new"
    (run / "ureca.json").write_text("{}")
    (run / "train_config.json").write_text("{}")
    assert _check_out(run, True, "x") == "done"


def test_base_never_unpickled(syn, tmp_path, cli):
    """--base DIR whose weights are a pickle only: one line saying how to convert it, before the data is read;
    the pickle is never unpickled, nor even opened."""
    from tests.pickles import never_opened, plant_pickle
    from ureca_cli.model.tiny import save_tiny_internvl

    folder = save_tiny_internvl(tmp_path / "vl")
    planted = plant_pickle(folder)
    args = [a for a in TINY if a not in ("--base", "tiny")]
    with never_opened(planted):
        result = cli("train", tmp_path / "never_read.jsonl", "--out", tmp_path / "o", *args, "--base", folder)
    _one_error_line(result, str(planted), "never unpickles", "save_pretrained")
    assert not (folder / "UNPICKLED").exists() and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def interrupted(syn, tmp_path_factory):
    """A stage-1 run stopped after its checkpoint-2 was saved (the finished model's files removed)."""
    from ureca_cli.train.trainer import train_main

    out = tmp_path_factory.mktemp("interrupted") / "run"
    train_main([str(syn["train"])], _cfg(out.parent, out=out, max_steps=2, save_steps=2, save_total_limit=0))
    for name in ("ureca.json", "train_config.json"):
        (out / name).unlink()
    return out


def test_resume_from_a_damaged_checkpoint_names_the_file(syn, tmp_path, cli, interrupted):
    """--resume from a checkpoint with a damaged trainable.safetensors, optimizer.pt, scheduler.pt,
    rng_state.pth or trainer_state.json: one line naming the file and what is wrong, exit 2."""
    def resume(damage, *words):
        out = tmp_path / "run"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(interrupted, out)
        path = out / "checkpoint-2" / damage[0]
        damage[1](path)
        result = cli("train", syn["train"], "--out", out, "--stage", "1", "--no-validate", *TINY, "--max-steps",
                     "2", "--save-steps", "2", "--resume")
        _one_error_line(result, str(path), *words)

    def truncate(path):
        path.write_bytes(path.read_bytes()[:200])

    def flip(path):  # one byte of the first stored tensor changed: the archive's CRC no longer matches
        import struct
        import zipfile

        with zipfile.ZipFile(path) as z:
            info = next(i for i in z.infolist() if "/data/" in i.filename)
        data = bytearray(path.read_bytes())
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF  # the local header's extra pads the data
        path.write_bytes(bytes(data))

    resume(("trainable.safetensors", truncate), "not a safetensors file")
    resume(("optimizer.pt", truncate), "not a PyTorch archive")
    resume(("optimizer.pt", flip), "CRC")
    resume(("scheduler.pt", lambda p: p.write_bytes(b"garbage\n")), "not a PyTorch archive")
    resume(("rng_state.pth", truncate), "not a PyTorch archive")
    resume(("trainer_state.json", lambda p: p.write_text('{"global_step": ')), "not valid JSON")
    resume(("trainer_state.json", lambda p: p.write_text('["a list"]')), "global_step")


def test_damaged_base_folder_names_the_file(syn, tmp_path, cli):
    """--base DIR with a truncated or malformed model.safetensors, a broken config.json, or another kind of
    model: one line naming the file and what is wrong, before the data is read."""
    from ureca_cli.model.tiny import save_tiny_internvl

    good = save_tiny_internvl(tmp_path / "vl")
    args = [a for a in TINY if a not in ("--base", "tiny")]

    def base(name, damage, *words):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        path = damage(folder)
        _one_error_line(cli("train", tmp_path / "never_read.jsonl", "--out", tmp_path / "o", *args, "--base", folder),
                        str(path), *words)
        assert not (tmp_path / "o").exists()

    def truncate(folder):
        path = folder / "model.safetensors"
        path.write_bytes(path.read_bytes()[:5000])
        return path

    def bad_header(folder):
        path = folder / "model.safetensors"
        data = path.read_bytes()
        path.write_bytes(data[:8] + b"{" * (len(data) - 8))
        return path

    def bad_config(folder):
        (folder / "config.json").write_text('{"model_type": ')
        return folder / "config.json"

    def dinov2(folder):
        (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
        return folder / "config.json"

    base("truncated", truncate, "truncated")
    base("header", bad_header, "not a safetensors file")
    base("config", bad_config, "not valid JSON")
    base("dinov2", dinov2, "'dinov2'", "internvl")


def test_resume_from_the_last_step_trains_no_more(syn, tmp_path, cli, interrupted):
    """A run killed after its final checkpoint was saved, but before the finished model was written: --resume
    writes the model from that checkpoint and trains no step beyond the plan (--max-steps, or the steps that
    --epochs makes of this data); a plan that reaches further trains on from it."""
    def resume(name, *plan):
        out = tmp_path / name
        shutil.copytree(interrupted, out)
        result = cli("train", syn["train"], "--out", out, "--stage", "1", "--no-validate", *TINY, *plan,
                     "--save-steps", "2", "--resume")
        assert result.exit_code == 0, result.stderr
        return out, result.stderr

    for name, plan in (("steps", ("--max-steps", "2")), ("epochs", ("--epochs", "0.1"))):
        out, err = resume(name, *plan)
        assert "resumed at step 2/2: training was complete" in err, err
        assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
        assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
        assert (out / "trainable.safetensors").read_bytes() == (out / "checkpoint-2" / "trainable.safetensors").read_bytes()
        assert (out / "ureca.json").is_file() and (out / "train_config.json").is_file()
    for name, plan in (("more-steps", ("--max-steps", "4")), ("more-epochs", ("--epochs", "3"))):
        out, err = resume(name, *plan)
        assert "resumed at step 2/" in err and "training was complete" not in err, err
        assert max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")) > 2
