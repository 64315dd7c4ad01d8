"""safetensors files read and written one tensor at a time, with plain file reads and writes.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON (`{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}`), then the tensors' bytes. `read_header` parses and checks
the header (known dtypes, offsets inside the file, byte counts that match the shapes) without reading any data;
`read_tensor` reads one tensor into fresh memory with `readinto` (no memory map, so the file's pages do not
count in the process's memory); `ShardWriter` writes a header planned from (name, dtype, shape) and then the
tensors in that order, so writing a shard never holds more than the tensor at hand. Nothing here unpickles.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UrecaError

#: safetensors dtype name -> (torch dtype name, bytes per element)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
}
_BY_TORCH = {torch_name: name for name, (torch_name, _size) in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file: dtype (safetensors name), shape, byte range in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, DTYPES[self.dtype][0])


@dataclass(frozen=True)
class Header:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    size: int  # file size in bytes


def read_header(path: Path) -> Header:
    """The checked header of a safetensors file; a truncated or malformed file is a UrecaError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise UrecaError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise UrecaError(f"{path}: not a safetensors file (header length {n} for a file of {size} bytes)")
            raw = fh.read(n)
    except FileNotFoundError:
        raise UrecaError(f"{path}: no such file") from None
    except OSError as e:
        raise UrecaError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UrecaError(f"{path}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(data, dict):
        raise UrecaError(f"{path}: not a safetensors file (header is not an object)")
    base = 8 + n
    tensors: dict[str, TensorInfo] = {}
    metadata = data.pop("__metadata__", None) or {}
    for name, entry in data.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UrecaError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPES:
            raise UrecaError(f"{path}: tensor {name!r} has dtype {dtype!r}, which ureca does not read")
        want = math.prod(shape) * DTYPES[dtype][1]
        if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end - begin != want:
            raise UrecaError(f"{path}: tensor {name!r} of shape {list(shape)} {dtype} needs {want} bytes, its "
                             f"offsets say {end - begin if isinstance(end, int) and isinstance(begin, int) else '?'}")
        if base + end > size:
            raise UrecaError(f"{path}: truncated (tensor {name!r} ends at byte {base + end}, the file has {size})")
        tensors[name] = TensorInfo(dtype, shape, base + begin, base + end)
    return Header(path, tensors, {str(k): str(v) for k, v in dict(metadata).items()}, size)


def read_tensor(fh, info: TensorInfo):
    """Read one tensor from an open file (binary) into a new CPU tensor."""
    import torch

    out = torch.empty(info.shape, dtype=info.torch_dtype)
    view = out.view(-1).view(torch.uint8).numpy() if info.nbytes else None
    fh.seek(info.start)
    if view is not None and fh.readinto(memoryview(view)) != info.nbytes:
        raise UrecaError(f"{getattr(fh, 'name', 'file')}: truncated while reading a tensor")
    return out


def safetensors_dtype(torch_dtype) -> str:
    name = str(torch_dtype).removeprefix("torch.")
    if name not in _BY_TORCH:
        raise ValueError(f"dtype {name} cannot be written to safetensors here")
    return _BY_TORCH[name]


class ShardWriter:
    """Write a safetensors file whose tensors are announced first: `ShardWriter(path, [(name, dtype, shape)],
    metadata)`, then `write(name, tensor)` for each, in the announced order; `close()` checks all came."""

    def __init__(self, path: Path, entries: list[tuple[str, Any, tuple[int, ...]]], metadata: dict[str, str] | None = None):
        self.path = Path(path)
        header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
        offset = 0
        self._order: list[tuple[str, str, tuple[int, ...], int]] = []
        for name, dtype, shape in entries:
            st = safetensors_dtype(dtype)
            nbytes = math.prod(shape) * DTYPES[st][1]
            header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._order.append((name, st, tuple(shape), nbytes))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.nbytes = offset

    def write(self, name: str, tensor) -> None:
        want, st, shape, nbytes = self._order[self._next]
        if name != want or tuple(tensor.shape) != shape or safetensors_dtype(tensor.dtype) != st:
            raise ValueError(f"{self.path}: expected {want} {list(shape)} {st}, got {name} {list(tensor.shape)} "
                             f"{tensor.dtype}")
        import torch

        data = tensor.detach().to("cpu").contiguous()
        if nbytes:
            self._fh.write(memoryview(data.view(-1).view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> None:
        self._fh.close()
        if self._next != len(self._order):
            raise ValueError(f"{self.path}: {len(self._order) - self._next} announced tensors were not written")

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()


def load_state_strict(module, state: dict[str, Any], source: Path) -> None:
    """`module.load_state_dict(state)` that names missing keys, unexpected keys and shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if shapes:
        problems.append("shape mismatch: " + ", ".join(shapes))
    if problems:
        raise UrecaError(f"{source}: does not match the model ({'; '.join(problems)})")
    module.load_state_dict(state, strict=True)
