"""Benchmark: `ureca convert` of a released checkpoint at InternVL2.5-1B size (random bf16 weights), from one run.

Writes a checkpoint in the paper's released layout (config.json of InternVL2.5-1B + URECA's mask encoder:
InternViT-300M, Qwen2.5-0.5B, 8 mask tokens; the state dict split over --shards safetensors files; a tiny BPE
tokenizer with the added tokens, whose ids all fall inside the vocabulary), then runs `ureca convert SRC OUT`
in a child process and prints, side by side: its wall time, its peak RSS, the baseline (peak RSS of a child that
only imports what convert imports, the released tokenizer and the meta-device model included), and the largest
shard. Target: peak RSS below the baseline + 1.5 x the largest shard (the converter holds one tensor at a time,
so it should need about the largest tensor, not a shard and never the model). Then checks that the output loads
(`load_checkpoint`) and holds every tensor bit for bit.

    .venv/bin/python bench/convert.py               # about 1.9 GB of weights, 4 shards; a minute or two on CPU
    .venv/bin/python bench/convert.py --shards 8
    .venv/bin/python bench/convert.py --size tiny   # a seconds-long smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {  # InternVL2.5-1B: InternViT-300M-448px + Qwen2.5-0.5B-Instruct (vocab with URECA's three tokens)
    "1b": dict(v_hidden=1024, v_ff=4096, v_layers=24, v_heads=16, tile=448, l_hidden=896, l_ff=4864, l_layers=24,
               l_heads=14, l_kv=2, vocab=151677, mask_tokens=8),
    "tiny": dict(v_hidden=32, v_ff=64, v_layers=2, v_heads=2, tile=56, l_hidden=64, l_ff=128, l_layers=2,
                 l_heads=4, l_kv=2, vocab=4096, mask_tokens=8),
}
PATCH = 14


def released_shapes(s: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the released state dict (Qwen2 base, InternViT with LayerNorm and qkv bias)."""
    v, d, f = "vision_model.", s["v_hidden"], s["v_ff"]
    shapes = {v + "embeddings.class_embedding": (1, 1, d),
              v + "embeddings.position_embedding": (1, (s["tile"] // PATCH) ** 2 + 1, d),
              v + "embeddings.patch_embedding.weight": (d, 3, PATCH, PATCH), v + "embeddings.patch_embedding.bias": (d,)}
    for i in range(s["v_layers"]):
        p = f"{v}encoder.layers.{i}."
        shapes.update({p + "ls1": (d,), p + "ls2": (d,), p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
                       p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,), p + "mlp.fc1.weight": (f, d),
                       p + "mlp.fc1.bias": (f,), p + "mlp.fc2.weight": (d, f), p + "mlp.fc2.bias": (d,),
                       p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
    h, ff, kvd = s["l_hidden"], s["l_ff"], s["l_kv"] * (s["l_hidden"] // s["l_heads"])
    shapes.update({"mlp1.0.weight": (4 * d,), "mlp1.0.bias": (4 * d,), "mlp1.1.weight": (h, 4 * d), "mlp1.1.bias": (h,),
                   "mlp1.3.weight": (h, h), "mlp1.3.bias": (h,)})
    m = "language_model.model."
    shapes[m + "embed_tokens.weight"] = (s["vocab"], h)
    for i in range(s["l_layers"]):
        p = f"{m}layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
                       p + "self_attn.k_proj.weight": (kvd, h), p + "self_attn.k_proj.bias": (kvd,),
                       p + "self_attn.v_proj.weight": (kvd, h), p + "self_attn.v_proj.bias": (kvd,),
                       p + "self_attn.o_proj.weight": (h, h), p + "mlp.gate_proj.weight": (ff, h),
                       p + "mlp.up_proj.weight": (ff, h), p + "mlp.down_proj.weight": (h, ff),
                       p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)})
    shapes.update({m + "norm.weight": (h,), "language_model.lm_head.weight": (s["vocab"], h)})
    k = s["mask_tokens"]
    shapes.update({"mask_encoder.0.weight": (k, 1, 3, 3), "mask_encoder.0.bias": (k,),
                   "mask_encoder.2.weight": (k, k, 3, 3), "mask_encoder.2.bias": (k,),
                   "mask_linear.weight": (h, (s["tile"] // 4) ** 2), "mask_linear.bias": (h,)})
    return shapes


def released_config(s: dict) -> dict:
    llm = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": s["l_hidden"],
           "intermediate_size": s["l_ff"], "num_hidden_layers": s["l_layers"], "num_attention_heads": s["l_heads"],
           "num_key_value_heads": s["l_kv"], "vocab_size": s["vocab"], "hidden_act": "silu",
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    vision = {"architectures": ["InternVisionModel"], "hidden_size": s["v_hidden"], "intermediate_size": s["v_ff"],
              "num_hidden_layers": s["v_layers"], "num_attention_heads": s["v_heads"], "image_size": s["tile"],
              "patch_size": PATCH, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
              "layer_norm_eps": 1e-6, "hidden_act": "gelu"}
    return {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat", "vision_config": vision,
            "llm_config": llm, "force_image_size": s["tile"], "downsample_ratio": 0.5, "ps_version": "v2",
            "select_layer": -1, "template": "internvl2_5", "num_mask_token": s["mask_tokens"],
            "dynamic_image_size": True, "use_thumbnail": True, "max_dynamic_patch": 12, "torch_dtype": "bfloat16"}


def write_source(folder: Path, size: str, shards: int) -> tuple[int, int]:
    """The released layout with random bf16 weights, shards of about equal size written one at a time.
    Returns (total bytes of weights, largest shard file in bytes)."""
    import torch

    from ureca_cli.model.shards import ShardWriter
    from ureca_cli.model.tiny import tiny_tokenizer

    s = SIZES[size]
    folder.mkdir(parents=True)
    tok = tiny_tokenizer()
    tok.add_tokens(["<mask>", "</mask>", "<MASK_CONTEXT>"], special_tokens=True)
    tok.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps(released_config(s), indent=2))
    shapes = released_shapes(s)
    total = sum(2 * _numel(sh) for sh in shapes.values())
    groups, current, filled = [], [], 0
    for name, shape in shapes.items():  # consecutive tensors, a new shard past total / shards bytes
        if current and filled + 2 * _numel(shape) > total / shards and len(groups) < shards - 1:
            groups.append(current)
            current, filled = [], 0
        current.append(name)
        filled += 2 * _numel(shape)
    groups.append(current)
    weight_map = {}
    gen = torch.Generator().manual_seed(0)
    for i, names in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        with ShardWriter(folder / file, [(n, torch.bfloat16, shapes[n]) for n in names], {"format": "pt"}) as w:
            for n in names:
                w.write(n, (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16))
                weight_map[n] = file
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    largest = max((folder / f).stat().st_size for f in set(weight_map.values()))
    return total, largest


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# Each measured child reports its own high-water RSS (VmHWM of /proc/self/status) when it ends: rusage's
# ru_maxrss would also count the parent's memory, which a child spawned from it starts with until exec.
CHILD = """
import sys
sys.path.insert(0, {root!r})
try:
{body}
finally:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    with open({report!r}, "w") as out:
        out.write(str(peak))
"""
BASELINE = """
    from pathlib import Path
    import safetensors.torch, transformers, ureca_cli.cli, ureca_cli.model.convert
    from ureca_cli.model.released import expected_shapes, internvl_config, read_released, released_tokens
    from ureca_cli.model.released_tokenizer import load_released_tokenizer
    spec = read_released(Path({src!r}))
    tok = load_released_tokenizer(spec.folder, spec.family)
    ids = released_tokens(tok, spec.folder)
    expected_shapes(internvl_config(spec, ids.image_context, ids.end_of_turn, ids.pad), spec)
"""
CONVERT = """
    from ureca_cli.cli import app
    app(["convert", {src!r}, {out!r}, "--quiet"])
"""


def child_peak(body: str, report: Path) -> tuple[float, float]:
    """(seconds, peak RSS in bytes) of a child Python running `body` (indented code)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), body=body, report=str(report))],
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        err = proc.stderr.strip()
        sys.exit(f"child failed ({proc.returncode}): {err.splitlines()[-1] if err else ''}")
    return seconds, int(report.read_text())


def check_output(src: Path, out: Path) -> int:
    """Load the converted checkpoint and compare every released tensor with what it became (bit for bit).
    Returns the number of released tensors compared; exits on a difference."""
    import torch
    from safetensors import safe_open

    from ureca_cli.model import load_checkpoint
    from ureca_cli.model.released import MASK_PREFIX, plan_tensor, read_released

    spec = read_released(src)
    model = load_checkpoint(out)
    ours = {**model.internvl.state_dict(), **{MASK_PREFIX + k: v for k, v in model.mask_encoder.state_dict().items()}}
    n = 0
    for shard in spec.shards:
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                for t in plan_tensor(key, tuple(tensor.shape), spec.family, spec.attention_shape()):
                    want = t.take(tensor) if t.take else tensor
                    if not torch.equal(ours[t.key].to(want.dtype), want):
                        sys.exit(f"{key} -> {t.key}: differs after conversion")
                n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = Path(tmp) / "released", Path(tmp) / "converted"
        t = time.perf_counter()
        total, largest = write_source(src, args.size, args.shards)
        print(f"source: {args.size}, {total / 2**30:.2f} GiB of bf16 weights in {args.shards} shards "
              f"(written in {time.perf_counter() - t:.1f} s)", file=sys.stderr, flush=True)
        _s, baseline = child_peak(BASELINE.format(src=str(src)), Path(tmp) / "baseline.rss")
        seconds, peak = child_peak(CONVERT.format(src=str(src), out=str(out)), Path(tmp) / "convert.rss")

        compared = check_output(src, out)

    mib = 2**20
    ratio = (peak - baseline) / largest
    print(f"convert {args.size}: {seconds:.1f} s, {total / seconds / mib:.0f} MiB/s of weights")
    print(f"  peak RSS {peak / mib:.0f} MiB = baseline {baseline / mib:.0f} MiB + {(peak - baseline) / mib:.0f} MiB; "
          f"largest shard {largest / mib:.0f} MiB; (peak - baseline) / largest shard = {ratio:.2f} (target < 1.5: "
          f"{'met' if ratio < 1.5 else 'NOT met'})")
    print(f"  output loads with load_checkpoint; all {compared} released tensors equal bit for bit after mapping")


if __name__ == "__main__":
    main()
