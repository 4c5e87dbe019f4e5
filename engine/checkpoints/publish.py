"""Publishing an output folder safely: never replace what we did not write, never leave a half swap behind.

A writer builds its output in a hidden temporary sibling ``.NAME.tmp-XXXX`` that holds a lock file
(``flock``: the kernel releases it when the owner dies, so a temporary whose lock can be taken is a crash
leftover). Publishing then:

- without ``force``: renames the temporary onto the output path only if nothing exists there at that
  moment (``renameat2(RENAME_NOREPLACE)`` on Linux, else a check right before the rename), so a folder
  that appeared while the merge ran is never replaced;
- with ``force``: replaces only a folder that is a Weightsmith output (our marker file, or safetensors
  with our metadata) and that holds neither the recipe nor an input; the swap is journalled
  (``.NAME.swap.json``: old, new and target names) so a crash between its renames is finished or rolled
  back by the next writer in that folder (or the next open of the missing output), which reports what it
  did; a journal is obeyed only when it names exactly our sibling names, so a planted one moves nothing.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterable

from engine.errors import CheckpointError, EngineInputError

MARKER = ".weightsmith-output.json"
LOCK = ".weightsmith-writing.lock"
_TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{8}")  # our temporaries: .NAME.tmp-XXXXXXXX
_LEGACY_STALE_S = 3600  # a temporary without a lock file (written before locks existed) is stale after an hour


def is_weightsmith_output(folder: Path) -> bool:
    """True for a folder this program wrote: our marker, or a safetensors file with our metadata."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if (folder / MARKER).is_file():
        return True
    from safetensors import safe_open

    for shard in sorted(folder.glob("*.safetensors"))[:1]:
        try:
            with safe_open(str(shard), framework="pt") as f:
                return "weightsmith_version" in (f.metadata() or {})
        except Exception:  # noqa: BLE001 - an unreadable file is simply not ours
            return False
    return False


def check_replaceable(out_dir: Path, protected: Iterable[Path]) -> None:
    """Refuse (with the reason) to replace ``out_dir`` unless it is our output and holds nothing protected."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    resolved = out_dir.resolve()
    for path in protected:
        p = Path(path).expanduser().resolve()
        if p == resolved or resolved in p.parents:
            raise EngineInputError(f"refusing to replace this folder: it holds '{p}', which this run reads",
                                   path=str(out_dir))
    if resolved == Path.home().resolve() or resolved.parent == resolved:
        raise EngineInputError("refusing to replace a home or root folder", path=str(out_dir))
    if not is_weightsmith_output(out_dir):
        raise EngineInputError("refusing to replace a folder that Weightsmith did not write (no output marker); "
                               "choose a new output path or delete it yourself", path=str(out_dir))


def make_temporary(out_dir: Path) -> tuple[Path, int]:
    """Create the hidden temporary sibling with its held lock; returns (folder, lock file descriptor)."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    fd = os.open(tmp / LOCK, os.O_CREAT | os.O_WRONLY, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    return tmp, fd


def release(fd: int | None) -> None:
    """Drop a temporary's lock (closing the descriptor releases the flock)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _owner_alive(folder: Path) -> bool:
    """True while the process that created ``folder`` holds its lock."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even on a planted FIFO
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _is_stale(tmp: Path) -> bool:
    """A temporary whose owner is gone; one without a lock (older versions) only if it looks like ours and is old."""
    if not (tmp / LOCK).exists():
        looks_ours = any(tmp.glob("model*.safetensors"))
        return looks_ours and time.time() - tmp.stat().st_mtime > _LEGACY_STALE_S
    return not _owner_alive(tmp)


def tidy(parent: Path) -> list[str]:
    """Finish or roll back interrupted swaps and remove crash leftovers in ``parent``; what was done, in words.

    Never raises: what cannot be tidied now (permissions, a live owner) is left for a later run."""
    done = []
    for journal in sorted(parent.glob(".*.swap.json")):
        done += _recover(parent, journal)
    try:
        entries = list(parent.iterdir())
    except OSError:
        return done
    for entry in entries:
        if _TEMP_NAME.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            try:
                if _is_stale(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                    done.append(f"removed '{entry.name}', left by a merge that did not finish")
            except OSError:
                continue
    return done


def recover_swap(target: Path) -> list[str]:
    """Finish or roll back an interrupted forced swap onto ``target`` (if its journal is there); what was done."""
    target = Path(target)
    return _recover(target.parent, target.parent / f".{target.name}.swap.json")


def _journal(parent: Path, journal: Path) -> tuple[Path, Path, Path] | None:
    """The (target, new, old) paths a swap journal names, or None unless they are exactly the sibling names
    ``publish`` writes (a planted journal must never point a rename or a delete anywhere else)."""
    try:
        entry = json.loads(journal.read_text(encoding="utf-8"))
        target, new, old = (entry[k] for k in ("target", "new", "old"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(v, str) for v in (target, new, old)) or journal.name != f".{target}.swap.json":
        return None
    if "/" in target or "\0" in target or target in ("", ".", ".."):
        return None
    stem = re.escape(f".{target}")
    if not (re.fullmatch(stem + r"\.tmp-[0-9a-f]{8}", new) and re.fullmatch(stem + r"\.old-[0-9a-f]{8}", old)):
        return None
    return parent / target, parent / new, parent / old


def _recover(parent: Path, journal: Path) -> list[str]:
    names = _journal(parent, journal)
    if names is None:
        return []
    target, new, old = names
    if any(_owner_alive(p) for p in (new, target) if p.exists()):
        return []  # the swapping process is still alive
    done = []
    try:
        if not target.exists() and new.exists():
            os.rename(new, target)
            done.append(f"finished replacing '{target.name}' (a previous run stopped halfway)")
        elif not target.exists() and old.exists():
            os.rename(old, target)
            done.append(f"restored '{target.name}' (a previous run stopped before its new copy was ready)")
        if target.exists() and is_weightsmith_output(old):
            shutil.rmtree(old, ignore_errors=True)
        if (new / LOCK).exists():
            shutil.rmtree(new, ignore_errors=True)
        (target / LOCK).unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
    except OSError:
        pass  # left for a later run
    return done


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst`` only if ``dst`` does not exist (FileExistsError otherwise)."""
    libc_rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if libc_rename is not None:
        if libc_rename(-100, os.fsencode(src), -100, os.fsencode(dst), 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def publish(tmp: Path, out_dir: Path, *, force: bool, protected: Iterable[Path] = ()) -> None:
    """Move the finished temporary ``tmp`` into place as ``out_dir`` (see the module's rules)."""
    (tmp / MARKER).write_text(json.dumps({"written_by": "weightsmith", "time": time.time()}), encoding="utf-8")
    try:
        _rename_noreplace(tmp, out_dir)
        (out_dir / LOCK).unlink(missing_ok=True)
        return
    except FileExistsError:
        if not force:
            kept = out_dir.parent / f"{out_dir.name}.weightsmith-{uuid.uuid4().hex[:6]}"
            os.rename(tmp, kept)
            (kept / LOCK).unlink(missing_ok=True)
            raise EngineInputError(f"the output path was created by something else while the merge ran; it was "
                                   f"left untouched and the merged model was kept at '{kept}'", path=str(out_dir))
    check_replaceable(out_dir, protected)
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    journal = out_dir.parent / f".{out_dir.name}.swap.json"
    journal.write_text(json.dumps({"target": out_dir.name, "new": tmp.name, "old": old.name}), encoding="utf-8")
    try:
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
    except OSError as exc:
        if not out_dir.exists() and old.exists():
            os.rename(old, out_dir)
        journal.unlink(missing_ok=True)
        raise CheckpointError(f"replacing the output failed ({exc.strerror or exc}); the previous folder is intact",
                              path=str(out_dir)) from exc
    journal.unlink(missing_ok=True)
    (out_dir / LOCK).unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
