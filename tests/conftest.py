"""Shared test set-up: headless Qt, and tiny checkpoints written to a temporary folder."""

from __future__ import annotations

import gc
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from safetensors.torch import save_file

# Tests run many small tensor ops; on a 2-core machine one intra-op thread is faster and deterministic.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def own_user_folders(tmp_path_factory, monkeypatch):
    """Every test gets its own user folders (settings, plugin trust list), never the real user's."""
    if "WEIGHTSMITH_HOME" not in os.environ:
        monkeypatch.setenv("WEIGHTSMITH_HOME", str(tmp_path_factory.mktemp("home")))


def make_state_dict(seed: int, layers: int = 3, width: int = 8) -> dict[str, torch.Tensor]:
    """A small Llama-shaped state dict: embeddings, numbered layers, a norm, an int buffer."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(16, width, generator=g)}
    for i in range(layers):
        sd[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(width, width, generator=g)
        sd[f"model.layers.{i}.mlp.up_proj.weight"] = torch.randn(2 * width, width, generator=g)
        sd[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(width) + 0.1 * torch.randn(width, generator=g)
    sd["model.norm.weight"] = torch.ones(width)
    sd["model.position_ids"] = torch.arange(16)
    return sd


def finetune(base: dict[str, torch.Tensor], seed: int, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """A 'fine-tuned' variant: the base plus seeded noise on every float tensor."""
    g = torch.Generator().manual_seed(seed)
    return {n: (t + scale * torch.randn(t.shape, generator=g)) if t.is_floating_point() else t.clone()
            for n, t in base.items()}


def square_models(folder: Path, n_tensors: int, name: str = "layers.{i}.weight") -> dict[str, Path]:
    """A base and two experts of ``n_tensors`` 1024×1024 fp32 tensors (4 MB each): merges that last."""
    g = torch.Generator().manual_seed(0)
    base = {name.format(i=i): torch.randn(1024, 1024, generator=g) for i in range(n_tensors)}
    paths = {"base": folder / "base.safetensors"}
    save_file(base, paths["base"])
    for k in (1, 2):
        paths[f"e{k}"] = folder / f"e{k}.safetensors"
        save_file({n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in base.items()}, paths[f"e{k}"])
    return paths


@pytest.fixture
def tiny_models(tmp_path: Path) -> dict[str, Path]:
    """A base and three experts as single-file safetensors: {'base': path, 'e1': path, ...}."""
    base = make_state_dict(0)
    paths = {"base": tmp_path / "base.safetensors"}
    save_file(base, paths["base"])
    for k in (1, 2, 3):
        paths[f"e{k}"] = tmp_path / f"e{k}.safetensors"
        save_file(finetune(base, k), paths[f"e{k}"])
    return paths


@pytest.fixture
def new_window(qtbot, tmp_path: Path, monkeypatch):
    """Makes main windows with their own settings and data folders, shown; unsaved changes are discarded
    when one closes. Each call is a fresh window (a new session) over the same folders.

    After the test (pytest-qt has closed the windows and scheduled their deletion) the deletions are
    carried out and Python's cycles collected there and then: left to a later test, the collector could
    run inside that test's window construction over half-deleted Qt wrappers (a segfault seen once in CI).
    """
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow
    from app.settings import AppPaths, Settings

    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Discard))

    def make() -> "MainWindow":
        win = MainWindow(AppPaths(tmp_path / "config", tmp_path / "data"), Settings(output_dir=str(tmp_path / "out")))
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        return win

    yield make
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def window(new_window):
    """One main window (see ``new_window``)."""
    return new_window()


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the tiny demo models gain nothing from more; a busy machine loses)."""
    from zoo_helpers import single_thread

    with single_thread():
        yield
