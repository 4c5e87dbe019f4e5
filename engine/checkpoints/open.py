"""``open_checkpoint``: recognise a path's format and return its lazy reader."""

from __future__ import annotations

import stat
from pathlib import Path

from engine.checkpoints.base import Checkpoint
from engine.checkpoints.lora_reader import LoraCheckpoint
from engine.checkpoints.publish import recover_swap
from engine.checkpoints.safetensors_reader import SafetensorsCheckpoint, read_index
from engine.checkpoints.torch_reader import TorchCheckpoint
from engine.errors import CheckpointError

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint lazily (headers and index only).

    Accepts a Hugging Face model folder (single or sharded safetensors, or ``pytorch_model*.bin``), a
    PEFT LoRA adapter folder, a single ``.safetensors`` file, or a ``.bin/.pt/.pth/.ckpt`` file.
    """
    p = Path(path).expanduser()
    try:
        kind = p.stat().st_mode
    except FileNotFoundError:
        return _reopen_after_recovery(p)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise CheckpointError(f"cannot access ({getattr(exc, 'strerror', None) or exc})", path=_short(p)) from None
    if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
        raise CheckpointError("not a regular file or folder (a FIFO, device or socket); nothing was read", path=str(p))
    if p.is_file():
        if p.suffix == ".safetensors":
            return SafetensorsCheckpoint(p)
        if p.suffix in TORCH_SUFFIXES:
            return TorchCheckpoint(p)
        if p.name.endswith(".index.json"):
            return open_checkpoint(p.parent)
        raise CheckpointError("unknown checkpoint format (expected .safetensors, .bin, .pt, .pth or a model folder)",
                              path=str(p))
    if (p / "adapter_config.json").is_file():
        return LoraCheckpoint(p)
    if (p / "model.safetensors.index.json").is_file():
        return SafetensorsCheckpoint(p, weight_map=read_index(p / "model.safetensors.index.json"))
    if (p / "model.safetensors").is_file():
        return SafetensorsCheckpoint(p / "model.safetensors")
    st_files = sorted(p.glob("*.safetensors"))
    irregular = [f for f in st_files if not f.is_file()]
    if irregular:
        raise CheckpointError("not a regular file (a FIFO, device or socket); nothing was read", path=str(irregular[0]))
    if st_files:
        return SafetensorsCheckpoint(p, files=st_files)
    if (p / "pytorch_model.bin.index.json").is_file():
        return TorchCheckpoint(p, weight_map=read_index(p / "pytorch_model.bin.index.json"))
    torch_files = sorted(f for f in p.iterdir() if f.suffix in TORCH_SUFFIXES and f.is_file())
    if len(torch_files) == 1:
        return TorchCheckpoint(torch_files[0])
    if torch_files:
        raise CheckpointError(f"folder holds {len(torch_files)} PyTorch files but no index to say how they fit",
                              path=str(p))
    raise CheckpointError("folder holds no model weights (*.safetensors, pytorch_model.bin, adapter_config.json)",
                          path=str(p))


def _reopen_after_recovery(p: Path) -> Checkpoint:
    """A missing output may be the target of a forced swap a crash interrupted: finish or roll it back (the
    checkpoint's notes say which) and open it; otherwise the path simply does not exist."""
    done = recover_swap(p)
    if not done or not p.exists():
        raise CheckpointError("no such file or folder", path=str(p))
    ckpt = open_checkpoint(p)
    ckpt.notes[:0] = done
    return ckpt


def _short(p: Path) -> str:
    """A path for a message, shortened in the middle when it is absurdly long."""
    text = str(p)
    return text if len(text) <= 200 else f"{text[:100]}…{text[-60:]}"
