"""The streaming, atomic safetensors writer: sharded HF layout, planned headers, rename at the end.

``safetensors.torch.save_file`` needs every tensor of a file in memory at once. A streaming merge knows
every output tensor's name, shape and dtype before it computes any of them, so this writer lays out each
shard's header up front (the format's documented layout: an 8-byte little-endian header length, the
JSON header padded with spaces to a multiple of 8, then the raw little-endian tensor bytes) and writes
each tensor at its offset as it arrives. Files are read back with the safetensors library in tests.

Everything goes into a hidden temporary sibling folder that is renamed onto the output at ``commit``
(``engine.checkpoints.publish``: never onto a folder that appeared meanwhile, and with ``force`` only onto
one of our outputs, through a journalled swap); an exception, a full disk or a cancel calls ``abort``,
which removes it, so no partial output is left. A value that overflows fp16 fails the commit by name.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from engine.checkpoints.publish import check_replaceable, make_temporary, publish, release, tidy
from engine.errors import CheckpointError, EngineInputError
from engine.runtime.dtypes import dtype_name

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_CAST_CHUNK = 1 << 20  # elements cast per write step
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def narrows(src: torch.dtype, dst: torch.dtype) -> bool:
    """True when casting floats of ``src`` to ``dst`` can turn finite values into ±inf (a smaller range)."""
    return src.is_floating_point and dst.is_floating_point and torch.finfo(dst).max < torch.finfo(src).max


def inf_threshold(dtype: torch.dtype) -> float:
    """The smallest magnitude that rounds to ±inf in ``dtype``: its max plus half a unit in the last place."""
    info = torch.finfo(dtype)
    return info.max + info.eps * 2.0 ** math.floor(math.log2(info.max)) / 2


def parse_size(text: str | int) -> int:
    """Bytes from ``5GB``, ``500MB``, ``2GiB`` or a plain integer (decimal units, as HF uses)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise EngineInputError(f"cannot read size '{text}' (write e.g. 5GB or 500MB)")
    value, unit, suffix = float(m.group(1)), m.group(2).upper(), (m.group(3) or "")
    base = 1024 if suffix.lower() == "ib" else 1000
    return int(value * base ** "_KMGT".index(unit or "_"))


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor's place: its shard, and its byte range inside that shard's data section."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    shard: int
    begin: int
    end: int


class CheckpointWriter:
    """Writes a planned set of tensors into ``out_dir`` as (sharded) safetensors, atomically.

    Use as a context manager: leaving the block with an exception aborts; ``commit()`` publishes.
    """

    def __init__(self, out_dir: str | Path, plan: Sequence[tuple[str, tuple[int, ...], torch.dtype]], *,
                 shard_size: int | str = "5GB", metadata: dict[str, str] | None = None, force: bool = False,
                 protected: Sequence[Path] = ()):
        self.out_dir = Path(out_dir).expanduser().resolve()
        self.notes = tidy(self.out_dir.parent)  # what tidying the output's folder did (interrupted swaps, leftovers)
        if self.out_dir.exists() and not force:
            done = f" (first: {'; '.join(self.notes)})" if self.notes else ""
            raise EngineInputError("the output folder already exists; choose another or allow overwriting (--force)"
                                   + done, path=str(self.out_dir))
        if force:
            check_replaceable(self.out_dir, protected)
        self.force = force
        self.protected = list(protected)
        self.overflowed: list[str] = []  # tensors whose finite values became inf in the output dtype
        self._overflow_dtype = torch.float16
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self._plan, self._shard_sizes = self._layout(plan, parse_size(shard_size))
        n = self._model_shards = len(self._shard_sizes)
        self.shard_names = ["model.safetensors"] if n == 1 else [
            f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._shard_metadata: dict[int, dict[str, str]] = {}  # files added by add_tensor_file
        self._written: set[str] = set()
        self._buffers: dict[torch.dtype, torch.Tensor] = {}
        self._files: list = []
        self._data_start: list[int] = []
        self._lock: int | None = None
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-unmade"
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir, self._lock = make_temporary(self.out_dir)
            for i in range(n):
                self._open_shard(i)
        except OSError as exc:
            self.abort()
            raise CheckpointError(f"cannot create the output ({exc.strerror or exc})", path=str(self.out_dir)) from exc

    @staticmethod
    def _layout(plan, shard_size: int):
        placed: dict[str, PlannedTensor] = {}
        sizes = [0]
        for name, shape, dtype in plan:
            if dtype not in _ST_DTYPES:
                raise EngineInputError(f"cannot save dtype {dtype}", tensor=name)
            nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
            if sizes[-1] and sizes[-1] + nbytes > shard_size:
                sizes.append(0)
            placed[name] = PlannedTensor(name, tuple(shape), dtype, len(sizes) - 1, sizes[-1], sizes[-1] + nbytes)
            sizes[-1] += nbytes
        return placed, sizes

    def _open_shard(self, i: int) -> None:
        header: dict[str, object] = {"__metadata__": self._shard_metadata.get(i, self.metadata)}
        for t in self._plan.values():
            if t.shard == i:
                header[t.name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [t.begin, t.end]}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        f = open(self.tmp_dir / self.shard_names[i], "wb")
        self._files.append(f)
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        self._data_start.append(8 + len(raw))

    @property
    def planned(self) -> dict[str, PlannedTensor]:
        return self._plan

    def add_tensor_file(self, filename: str, plan: Sequence[tuple[str, tuple[int, ...], torch.dtype]],
                        metadata: dict[str, str]) -> None:
        """Plan one more safetensors file in the output, beside the model's shards and outside their index
        (a method's per-task parts); its tensors are written with ``write`` and checked at ``commit`` like
        the model's. Call before writing anything."""
        if filename in self.shard_names or not filename.endswith(".safetensors") or "/" in filename:
            raise CheckpointError(f"cannot add the tensor file '{filename}'", path=str(self.out_dir))
        placed, _ = self._layout(plan, math.inf)
        clash = next((name for name in placed if name in self._plan), None)
        if clash is not None:
            raise CheckpointError(f"tensor '{clash}' is planned twice", path=str(self.out_dir), tensor=clash)
        index = len(self.shard_names)
        self._plan.update({name: replace(t, shard=index) for name, t in placed.items()})
        self.shard_names.append(filename)
        self._shard_metadata[index] = {k: str(v) for k, v in metadata.items()}
        try:
            self._open_shard(index)
        except OSError as exc:
            self.abort()
            raise CheckpointError(f"cannot create '{filename}' ({exc.strerror or exc})",
                                  path=str(self.out_dir)) from exc

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write one tensor (cast to its planned dtype, moved to the CPU) at its planned place."""
        slot = self._plan.get(name)
        if slot is None:
            raise CheckpointError(f"tensor '{name}' is not in the output plan", path=str(self.out_dir), tensor=name)
        if tuple(tensor.shape) != slot.shape:
            raise CheckpointError(f"tensor '{name}' has shape {list(tensor.shape)}, planned {list(slot.shape)}",
                                  path=str(self.out_dir), tensor=name)
        src = tensor.detach()
        if narrows(src.dtype, slot.dtype):
            self._check_overflow(name, src, slot.dtype)
        if src.device.type != "cpu":
            src = src.to(slot.dtype).cpu()
        src = src.contiguous().reshape(-1)
        f = self._files[slot.shard]
        try:
            f.seek(self._data_start[slot.shard] + slot.begin)
            if src.dtype == slot.dtype:
                f.write(memoryview(src.view(torch.uint8).numpy()))
            else:  # cast chunk by chunk through one reused buffer: no full-size temporary
                buf = self._cast_buffer(slot.dtype)
                for start in range(0, src.numel(), buf.numel()):
                    part = buf[: min(buf.numel(), src.numel() - start)]
                    part.copy_(src[start:start + part.numel()])
                    f.write(memoryview(part.view(torch.uint8).numpy()))
        except OSError as exc:
            raise CheckpointError(f"writing tensor '{name}' failed ({exc.strerror or exc})",
                                  path=str(self.tmp_dir / self.shard_names[slot.shard]), tensor=name) from exc
        self._written.add(name)

    def _check_overflow(self, name: str, src: torch.Tensor, dtype: torch.dtype) -> None:
        """Record ``name`` when a finite value would round to ±inf in ``dtype`` (one min/max pass when none does)."""
        limit = inf_threshold(dtype)
        lo, hi = (float(v) for v in torch.aminmax(src))
        if max(-lo, hi) < limit:  # False for NaN/inf too: those take the exact test below
            return
        if bool((src.abs() >= limit).logical_and_(torch.isfinite(src)).any()):
            self.overflowed.append(name)
            self._overflow_dtype = dtype

    def _cast_buffer(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self._buffers:
            self._buffers[dtype] = torch.empty(_CAST_CHUNK, dtype=dtype)
        return self._buffers[dtype]

    def add_file(self, src: Path, name: str | None = None) -> None:
        """Copy a non-weight file (config.json, tokenizer files…) into the output."""
        shutil.copy2(src, self.tmp_dir / (name or Path(src).name))

    def add_text(self, name: str, text: str) -> None:
        """Write a text file (the model card, the recipe) into the output."""
        (self.tmp_dir / name).write_text(text, encoding="utf-8")

    def commit(self) -> Path:
        """Check completeness, flush to disk and move the folder into place; returns the output path."""
        missing = [n for n in self._plan if n not in self._written]
        if missing:
            self.abort()
            raise CheckpointError(f"{len(missing)} planned tensor(s) were never written, e.g. '{missing[0]}'",
                                  path=str(self.out_dir), tensor=missing[0])
        if self.overflowed:
            self.abort()
            shown = ", ".join(f"'{n}'" for n in self.overflowed[:5])
            more = f" and {len(self.overflowed) - 5} more" if len(self.overflowed) > 5 else ""
            dtype = self._overflow_dtype
            wider = "bf16 or fp32 (--dtype bf16 / fp32)" if dtype == torch.float16 else "fp32 (--dtype fp32)"
            raise EngineInputError(f"{len(self.overflowed)} tensor(s) overflow {dtype_name(dtype)} (values beyond "
                                   f"±{torch.finfo(dtype).max:g} would be saved as inf): {shown}{more}; save as "
                                   f"{wider} or lower the coefficients; nothing was written",
                                   path=str(self.out_dir), tensor=self.overflowed[0])
        try:
            for f in self._files:
                f.flush()
                os.fsync(f.fileno())
                f.close()
            if self._model_shards > 1:
                model = [t for t in self._plan.values() if t.shard < self._model_shards]
                index = {"metadata": {"total_size": sum(t.end - t.begin for t in model)},
                         "weight_map": {t.name: self.shard_names[t.shard] for t in model}}
                self.add_text("model.safetensors.index.json", json.dumps(index, indent=2))
            publish(self.tmp_dir, self.out_dir, force=self.force, protected=self.protected)
        except OSError as exc:
            self.abort()
            raise CheckpointError(f"finishing the output failed ({exc.strerror or exc})", path=str(self.out_dir)) from exc
        except EngineInputError:
            self.abort()
            raise
        release(self._lock)
        self._lock = None
        return self.out_dir

    def abort(self) -> None:
        """Close and delete the temporary folder; the output path is left as it was."""
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass
        self._files = []
        if self.tmp_dir.name.startswith(f".{self.out_dir.name}.tmp-"):
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        release(self._lock)
        self._lock = None

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
