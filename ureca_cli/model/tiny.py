"""A tiny random InternVL with a real processor, built offline in well under a second.

`tiny_internvl()` returns an `InternVLForConditionalGeneration` (tiny vision tower, tiny Qwen2 language model,
random weights from a seed) and transformers' own `InternVLProcessor` around a byte-level BPE tokenizer trained
on the fly with `tokenizers` (InternVL's image tokens `<img>`, `</img>`, `<IMG_CONTEXT>`, `<video>`, ChatML
`<|im_start|>`/`<|im_end|>` and a chat template), the stock InternVL image processor (GotOcr2, crop to patches)
and the InternVL video processor. `save_tiny_internvl(folder)` writes both to a folder that
`AutoProcessor.from_pretrained(folder)` and `AutoModelForImageTextToText.from_pretrained(folder)` load offline
and that `transformers serve <folder>` serves. Tests of every stage that talks to a model use it.

The same seed gives the same weights and the same tokenizer, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: InternVL's own image tokens, named as the `-hf` checkpoints' tokenizer_config.json names them.
IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

#: ChatML as InternVL3 uses it: an image part becomes `<IMG_CONTEXT>` (the processor expands it to
#: `<img>` + tokens + `</img>`); a string content is used as is.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_WORDS = (
    "a the an of in on with and to at by from near under over behind beside left right top bottom "
    "red green blue yellow white black brown gray orange pink purple small large tall short round square "
    "dog cat man woman child person car bus truck bicycle tree grass sky cloud road building window door "
    "wall floor table chair cup plate bowl bag shirt hat shoe hand head face eye ear leg arm wheel sign "
    "light water sand rock flower leaf branch roof fence boat bird horse sheep cow region image object part "
    "describe this is are has shows wearing holding standing sitting lying next its their which that "
    "surface edge corner background foreground center side front back upper lower metal wooden striped"
).split()


def _corpus(n_lines: int = 400) -> list[str]:
    """Deterministic pseudo-sentences over `_WORDS` (a fixed linear congruential sequence, no RNG state)."""
    lines, x = [], 12345
    for _ in range(n_lines):
        words = []
        for _ in range(6 + x % 9):
            x = (1103515245 * x + 12345) % (2**31)
            words.append(_WORDS[x % len(_WORDS)])
        lines.append(" ".join(words).capitalize() + ".")
    return lines


def tiny_tokenizer(vocab_size: int = 512):
    """A Qwen2 (byte-level BPE) tokenizer trained on the fly, with InternVL's image tokens and ChatML.

    Returns a `transformers.Qwen2Tokenizer`; `tokenizer.start_image_token`, `.context_image_token`, ... and their
    `_id`s are set as `InternVLProcessor` expects. Deterministic: no randomness is involved.
    """
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[ENDOFTEXT],
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=dict(IMAGE_TOKENS),
        model_max_length=32768,
    )
    tokenizer.add_tokens([IM_START, IM_END], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    vocab_size: int,
    *,
    image_size: int = 56,
    patch_size: int = 14,
    vision_hidden: int = 32,
    text_hidden: int = 64,
    text_layers: int = 2,
    image_token_id: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """An `InternVLConfig` with a 1-layer vision tower and a `text_layers`-layer Qwen2 language model.

    Image tokens per tile: (image_size / patch_size / 2) ** 2 (pixel shuffle with downsample ratio 0.5).
    """
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    if image_size % (2 * patch_size):
        raise ValueError(f"image_size {image_size} must be a multiple of 2 * patch_size ({2 * patch_size})")
    vision = InternVLVisionConfig(
        hidden_size=vision_hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * vision_hidden,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    tokens_per_tile = (image_size // patch_size // 2) ** 2
    return InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )


def tiny_processor(tokenizer=None, *, image_size: int = 56, patch_size: int = 14, max_tiles: int = 12):
    """transformers' `InternVLProcessor` for the tiny model: GotOcr2 image processor cropping to
    `image_size` tiles (1..`max_tiles` plus a thumbnail), InternVL video processor, `tiny_tokenizer()`."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    size = {"height": image_size, "width": image_size}
    image_processor = GotOcr2ImageProcessor(
        size=size, crop_to_patches=True, min_patches=1, max_patches=max_tiles
    )
    video_processor = InternVLVideoProcessor(size=size)
    return InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=(image_size // patch_size // 2) ** 2,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_internvl(
    *,
    seed: int = 0,
    image_size: int = 56,
    patch_size: int = 14,
    max_tiles: int = 12,
    vision_hidden: int = 32,
    text_hidden: int = 64,
    text_layers: int = 2,
    vocab_size: int = 512,
) -> tuple[Any, Any]:
    """(model, processor): a random-weight `InternVLForConditionalGeneration` (eval mode, fp32) and its
    `InternVLProcessor`. `seed` fixes the weights; the tokenizer does not depend on it."""
    import torch
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    processor = tiny_processor(image_size=image_size, patch_size=patch_size, max_tiles=max_tiles)
    tok = processor.tokenizer
    config = tiny_config(
        len(tok),
        image_size=image_size,
        patch_size=patch_size,
        vision_hidden=vision_hidden,
        text_hidden=text_hidden,
        text_layers=text_layers,
        image_token_id=tok.context_image_token_id,
        eos_token_id=tok.convert_tokens_to_ids(IM_END),
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    model.eval()
    return model, processor


def save_tiny_internvl(folder: str | Path, *, seed: int = 0, **kwargs: Any) -> Path:
    """Build `tiny_internvl(seed=seed, **kwargs)` and save model and processor to `folder` (created).

    The folder loads offline with `AutoProcessor.from_pretrained` and
    `AutoModelForImageTextToText.from_pretrained`, and `transformers serve <folder>` serves it. Returns the
    folder as a Path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = tiny_internvl(seed=seed, **kwargs)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def packaged_config(name: str) -> dict[str, Any]:
    """A configuration shipped in `ureca_cli/model/configs/`: "internvl3_1b" (the InternVLConfig of
    OpenGVLab/InternVL3-1B-hf, 938M parameters) or "tiny" (the keyword arguments of `tiny_internvl`)."""
    import json
    from importlib.resources import files

    path = files("ureca_cli.model").joinpath("configs", f"{name}.json")
    if not path.is_file():
        raise ValueError(f"no packaged model config {name!r} (have: internvl3_1b, tiny)")
    return json.loads(path.read_text())


def random_internvl(name: str = "internvl3_1b", *, seed: int = 0, dtype: str = "float32",
                    max_tiles: int = 12) -> tuple[Any, Any]:
    """(model, processor): random weights at the size of a packaged InternVLConfig (no hub needed), and an
    `InternVLProcessor` with the real image processing (tile size and tokens per tile of that config) around
    the tiny BPE tokenizer (whose ids all fall inside the real vocabulary). For benchmarks."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    data = packaged_config(name)
    if name == "tiny":
        return tiny_internvl(seed=seed, **data)
    config = InternVLConfig(**data)
    size = config.vision_config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    patch = config.vision_config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    processor = tiny_processor(image_size=size, patch_size=patch, max_tiles=max_tiles)
    config.image_token_id = processor.tokenizer.context_image_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config).to(getattr(torch, dtype))
    model.eval()
    return model, processor
