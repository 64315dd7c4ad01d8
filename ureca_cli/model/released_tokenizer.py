"""The released checkpoint's tokenizer as a fast tokenizer that loads without remote code.

Two language-model families come with two tokenizers:

- Qwen2 (the 1B and 4B bases): a byte-level BPE (`vocab.json` + `merges.txt` or `tokenizer.json`) that
  transformers' own `Qwen2Tokenizer` reads; the released `tokenizer_config.json` adds InternVL's and URECA's
  tokens, which it reads too.
- InternLM2 (the 8B base): a sentencepiece BPE model (`tokenizer.model`) behind the checkpoint's own Python class
  `InternLM2Tokenizer`. We never run that class: `sentencepiece_to_fast` reads the model file (a protobuf
  message, parsed here field by field, so neither `sentencepiece` nor `protobuf` is needed) and builds the same
  tokenizer with the `tokenizers` library: BPE over the same pieces with byte fallback, merges ranked by the
  merged piece's score, sentencepiece's dummy prefix ("▁" before every stretch of text between added tokens) as a
  normaliser, and `<s>` in front (InternLM2Tokenizer's `add_bos_token`). The added tokens of
  `tokenizer_config.json` (`added_tokens_decoder`) and `added_tokens.json` keep their ids.

Any other tokenizer class is refused with one line naming the file: it would need the checkpoint's code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UrecaError

#: InternVL's image tokens as transformers' InternVL names them (the released chat() uses the same strings).
IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>"}
QWEN2_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
INTERNLM2_CLASSES = ("InternLM2Tokenizer", "InternLM2TokenizerFast")

# sentencepiece's SentencePiece.Type and TrainerSpec.ModelType (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2


# ------------------------------------------------------------------------------------------ protobuf
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of one protobuf message: ints for varints, bytes for everything else."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated message")
        out.append((number, value))
    return out


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class SentencePieceModel:
    """What a sentencepiece `.model` file holds that tokenization depends on."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = 1  # UNIGRAM unless the file says otherwise
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def read_sentencepiece(path: Path) -> SentencePieceModel:
    """Parse a sentencepiece model file (ModelProto) -> SentencePieceModel; a malformed file is a UrecaError."""
    try:
        data = path.read_bytes()
        model = SentencePieceModel()
        for number, value in _fields(data):
            if number == 1 and isinstance(value, bytes):  # SentencePiece
                piece, score, kind = "", 0.0, _NORMAL
                for n, v in _fields(value):
                    if n == 1 and isinstance(v, bytes):
                        piece = v.decode("utf-8")
                    elif n == 2 and isinstance(v, bytes):
                        score = struct.unpack("<f", v)[0]
                    elif n == 3 and isinstance(v, int):
                        kind = v
                model.pieces.append((piece, score, kind))
            elif number == 2 and isinstance(value, bytes):  # TrainerSpec
                for n, v in _fields(value):
                    if not isinstance(v, int):
                        continue
                    if n == 3:
                        model.model_type = v
                    elif n == 24:
                        model.treat_whitespace_as_suffix = bool(v)
                    elif n == 35:
                        model.byte_fallback = bool(v)
                    elif n == 40:
                        model.unk_id = _int32(v)
                    elif n == 41:
                        model.bos_id = _int32(v)
                    elif n == 42:
                        model.eos_id = _int32(v)
            elif number == 3 and isinstance(value, bytes):  # NormalizerSpec
                for n, v in _fields(value):
                    if n == 1 and isinstance(v, bytes):
                        model.normalizer_name = v.decode("utf-8")
                    elif n == 2 and isinstance(v, bytes):
                        model.precompiled_charsmap = v
                    elif n == 3 and isinstance(v, int):
                        model.add_dummy_prefix = bool(v)
                    elif n == 4 and isinstance(v, int):
                        model.remove_extra_whitespaces = bool(v)
                    elif n == 5 and isinstance(v, int):
                        model.escape_whitespaces = bool(v)
    except OSError as e:
        raise UrecaError(f"{path}: unreadable ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise UrecaError(f"{path}: not a sentencepiece model ({e})") from None
    if not model.pieces:
        raise UrecaError(f"{path}: not a sentencepiece model (no pieces)")
    return model


# ------------------------------------------------------------------------------------------ added tokens
def read_added_tokens(folder: Path) -> dict[int, dict[str, Any]]:
    """id -> {"content", "special", ...} from tokenizer_config.json's `added_tokens_decoder` and
    added_tokens.json (token -> id; those count as special, as the slow tokenizer saved them)."""
    added: dict[int, dict[str, Any]] = {}
    path = folder / "added_tokens.json"
    if path.is_file():
        data = _json(path)
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise UrecaError(f"{path}: expected a JSON object of token -> id")
        for token, idx in data.items():
            added[idx] = {"content": token, "special": True}
    config = tokenizer_config(folder)
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise UrecaError(f"{folder / 'tokenizer_config.json'}: added_tokens_decoder should be an object")
    for idx, tok in decoder.items():
        try:
            added[int(idx)] = dict(tok) if isinstance(tok, dict) else {"content": str(tok), "special": True}
        except ValueError:
            raise UrecaError(f"{folder / 'tokenizer_config.json'}: added token id {idx!r} is not an integer") from None
        if "content" not in added[int(idx)]:
            raise UrecaError(f"{folder / 'tokenizer_config.json'}: added token {idx} has no content")
    return added


def tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    data = _json(path)
    if not isinstance(data, dict):
        raise UrecaError(f"{path}: expected a JSON object")
    return data


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UrecaError(f"{path}: unreadable JSON ({e})") from None


def added_token_ids(folder: Path) -> dict[str, int]:
    """token -> id of the released tokenizer's added tokens, read from its files only (no tokenizer built)."""
    return {tok["content"]: idx for idx, tok in read_added_tokens(folder).items()}


# ------------------------------------------------------------------------------------------ conversion
def _merges(spm: SentencePieceModel, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that reproduce sentencepiece's BPE: every split of a normal piece into two pieces of the
    vocabulary, ranked by the merged piece's score (higher first), then by the parts' ids."""
    normal = {p for p, _s, kind in spm.pieces if kind == _NORMAL}
    ranked = []
    for piece, score, kind in spm.pieces:
        if kind != _NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, vocab[piece], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_k, left, right in ranked]


def sentencepiece_to_fast(folder: Path, *, add_bos: bool | None = None, add_eos: bool | None = None):
    """The InternLM2 tokenizer of a released folder (`tokenizer.model` + tokenizer_config.json) as a
    transformers fast tokenizer (`PreTrainedTokenizerFast`): same pieces, ids, added tokens and BOS."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    path = folder / "tokenizer.model"
    if not path.is_file():
        raise UrecaError(f"{folder}: the InternLM2 tokenizer needs tokenizer.model, which is missing")
    spm = read_sentencepiece(path)
    where = str(path)
    if spm.model_type != _BPE:
        raise UrecaError(f"{where}: a sentencepiece model of type {spm.model_type} (ureca converts BPE, type 2, "
                         "as InternLM2 uses)")
    if not spm.byte_fallback:
        raise UrecaError(f"{where}: sentencepiece model without byte fallback; ureca converts InternLM2's, which has it")
    if spm.precompiled_charsmap or spm.remove_extra_whitespaces or spm.treat_whitespace_as_suffix \
            or not spm.escape_whitespaces:
        raise UrecaError(f"{where}: sentencepiece normaliser {spm.normalizer_name!r} with options ureca cannot "
                         "reproduce (it converts InternLM2's identity normaliser)")
    config = tokenizer_config(folder)
    add_bos = bool(config.get("add_bos_token", True)) if add_bos is None else add_bos
    add_eos = bool(config.get("add_eos_token", False)) if add_eos is None else add_eos

    vocab = {piece: i for i, (piece, _s, _k) in enumerate(spm.pieces)}
    if len(vocab) != len(spm.pieces):
        raise UrecaError(f"{where}: repeated pieces")
    unk = spm.pieces[spm.unk_id][0] if 0 <= spm.unk_id < len(spm.pieces) else "<unk>"
    bpe = BPE(vocab=vocab, merges=_merges(spm, vocab), unk_token=unk, fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    steps = [normalizers.Prepend("▁")] if spm.add_dummy_prefix else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "▁")])
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if spm.add_dummy_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)

    # sentencepiece's own special pieces, then the added tokens of tokenizer_config.json at their ids
    specials = {i: {"content": p, "special": kind in (_CONTROL, _UNKNOWN)}
                for i, (p, _s, kind) in enumerate(spm.pieces) if kind in (_CONTROL, _UNKNOWN, _USER_DEFINED)}
    added = read_added_tokens(folder)
    size = len(spm.pieces)
    for idx in sorted(added):
        content = added[idx]["content"]
        if idx < size and spm.pieces[idx][0] != content:
            raise UrecaError(f"{folder / 'tokenizer_config.json'}: added token {content!r} has id {idx}, where "
                             f"tokenizer.model has {spm.pieces[idx][0]!r}")
    beyond = sorted(i for i in added if i >= size)
    if beyond != list(range(size, size + len(beyond))):
        raise UrecaError(f"{folder / 'tokenizer_config.json'}: added tokens past the sentencepiece vocabulary "
                         f"({size} pieces) must take the next ids in order, got {beyond}")
    specials.update(added)
    for idx in sorted(specials):
        t = specials[idx]
        token = AddedToken(t["content"], special=bool(t.get("special", True)), normalized=False,
                           lstrip=bool(t.get("lstrip", False)), rstrip=bool(t.get("rstrip", False)),
                           single_word=bool(t.get("single_word", False)))
        if idx < size:
            tok.add_special_tokens([token]) if token.special else tok.add_tokens([token])
        else:
            got = tok.add_special_tokens([token]) if token.special else tok.add_tokens([token])
            if got != 1 or tok.token_to_id(t["content"]) != idx:
                raise UrecaError(f"{folder / 'tokenizer_config.json'}: added token {t['content']!r} would not get "
                                 f"id {idx}")
    bos = spm.pieces[spm.bos_id][0] if add_bos and 0 <= spm.bos_id < size else None
    eos = spm.pieces[spm.eos_id][0] if 0 <= spm.eos_id < size else None
    end = eos if add_eos else None
    single = [f"{t}:0" for t in (bos,) if t] + ["$A:0"] + [f"{t}:0" for t in (end,) if t]
    pair = single + [f"{t}:1" for t in (bos,) if t] + ["$B:1"] + [f"{t}:1" for t in (end,) if t]
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair), special_tokens=[(t, vocab[t]) for t in {bos, end} if t])
    pad = config.get("pad_token", eos)
    pad = pad.get("content") if isinstance(pad, dict) else pad
    longest = config.get("model_max_length")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spm.pieces[spm.bos_id][0] if 0 <= spm.bos_id < size else None,
        eos_token=eos, unk_token=unk, pad_token=pad, clean_up_tokenization_spaces=False,
        model_max_length=longest if isinstance(longest, int) and 0 < longest < 10**9 else 32768,
    )
    return fast


def load_released_tokenizer(folder: Path, family: str):
    """The tokenizer of a released folder as a fast tokenizer (with InternVL's image tokens, checked), without
    running the folder's code.

    family: "qwen2" or "internlm2" (from config.json). UrecaError when the folder's tokenizer cannot be had
    without its code (another tokenizer class) or its files are missing."""
    config = tokenizer_config(folder)
    cls = config.get("tokenizer_class")
    where = folder / "tokenizer_config.json"
    if cls in INTERNLM2_CLASSES or (cls is None and family == "internlm2" and (folder / "tokenizer.model").is_file()):
        tok = sentencepiece_to_fast(folder)
    elif cls in QWEN2_CLASSES or (cls is None and family == "qwen2"):
        from transformers import Qwen2Tokenizer

        if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
            raise UrecaError(f"{folder}: the Qwen2 tokenizer needs tokenizer.json or vocab.json + merges.txt, "
                             "which are missing")
        try:
            tok = Qwen2Tokenizer.from_pretrained(str(folder))
        except Exception as e:  # noqa: BLE001 - transformers raises many types for bad files
            raise UrecaError(f"{folder}: cannot read the Qwen2 tokenizer ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
    else:
        remote = config.get("auto_map")
        raise UrecaError(f"{where}: tokenizer_class {cls!r}"
                         + (f" needs the checkpoint's own code ({json.dumps(remote)})" if remote else "")
                         + " and ureca cannot convert it (it converts Qwen2Tokenizer and InternLM2Tokenizer); "
                         "ureca never runs code from a checkpoint")
    vocab = tok.get_vocab()
    missing = [t for t in IMAGE_TOKENS.values() if t not in vocab]
    if missing:
        raise UrecaError(f"{where}: the tokenizer lacks InternVL's image tokens {', '.join(missing)}")
    return tok
