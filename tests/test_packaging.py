"""Desktop packaging and first run: the self-test, --version, logging, the crash dialog, About, the
hideable job dialog, and the bundle's static parts (icons, desktop entry). The bundle build itself is
`make bundle-test`, never part of this suite."""

from __future__ import annotations

import configparser
import logging
import logging.handlers
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QMessageBox

import engine
from app import logging_setup
from app.crash import CrashReporter
from app.logging_setup import default_log_dir, log_file, setup_logging

ROOT = Path(__file__).resolve().parent.parent
ICONS = ROOT / "resources" / "icons" / "app"


@pytest.fixture
def clean_logging():
    """Restore the root logger's handlers and level (setup_logging changes process-wide state)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_self_test_passes_in_process(qapp, tmp_path):
    from app.devtools.selftest import run_self_test

    lines: list[str] = []
    assert run_self_test(tmp_path, lines.append), "\n".join(lines)
    steps = [line.split()[0] for line in lines if line.startswith("  ")]
    assert steps == ["window", "merge", "evaluation", "zoo"]
    assert all(" ok " in line for line in lines if line.startswith("  "))
    assert "max |error|" in lines[2] and "merged 1.00/1.00" in lines[3]


def test_hand_ties_matches_the_paper_on_a_small_case():
    import torch

    from app.devtools.selftest import hand_ties

    base = torch.zeros(4)
    a, b = torch.tensor([3.0, -1.0, 0.5, 2.0]), torch.tensor([1.0, 2.0, -0.1, -4.0])
    # density 0.5 keeps [3, _, _, 2] and [_, 2, _, -4]; sum signs + + . -; agreeing means 3, 2, 0, -4
    assert torch.equal(hand_ties(base, [a, b], 0.5, 1.0), torch.tensor([3.0, 2.0, 0.0, -4.0]))


def test_version_flag_prints_the_version_without_loading_torch():
    code = ("import sys\nfrom app.__main__ import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"Weightsmith {engine.__version__}" in out.stdout
    assert "torch not loaded" in out.stdout


def test_logging_writes_a_rotating_file_in_the_log_dir(tmp_path, clean_logging):
    path = setup_logging(tmp_path / "logs", console=False)
    logging.getLogger("app.test").info("hello from the test")
    assert path == tmp_path / "logs" / "weightsmith.log" == log_file()
    assert "hello from the test" in path.read_text(encoding="utf-8")
    setup_logging(tmp_path / "other", console=False)  # a second call moves the file, never duplicates it
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert len(handlers) == 1 and handlers[0].maxBytes == logging_setup.MAX_BYTES


def test_default_log_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTSMITH_HOME", str(tmp_path))
    assert default_log_dir() == tmp_path / "logs"
    monkeypatch.delenv("WEIGHTSMITH_HOME")
    assert "weightsmith" in default_log_dir().parts


def test_unreadable_log_dir_falls_back_to_the_terminal(tmp_path, clean_logging):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = setup_logging(blocker / "logs", console=False)
    assert path == blocker / "logs" / "weightsmith.log" and log_file() is None


def test_crash_hook_logs_and_shows_a_dialog_with_the_log_path(qapp, qtbot, tmp_path, monkeypatch, clean_logging):
    path = setup_logging(tmp_path / "logs", console=False)
    shown: list[QMessageBox] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or 0)
    reporter = CrashReporter(path).install()
    try:
        try:
            raise ValueError("a bug on the UI thread")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        assert len(shown) == 1
        assert "ValueError: a bug on the UI thread" in shown[0].text()
        assert str(path) in shown[0].informativeText()
        assert "Traceback" in shown[0].detailedText()

        def fail() -> None:
            raise RuntimeError("a bug in a worker")

        worker = threading.Thread(target=fail, name="ws-test-worker")
        worker.start()
        worker.join()
        qtbot.waitUntil(lambda: len(shown) == 2)  # queued onto the UI thread
        assert "RuntimeError: a bug in a worker" in shown[1].text()
    finally:
        reporter.uninstall()
    text = path.read_text(encoding="utf-8")
    assert "a bug on the UI thread" in text and "thread 'ws-test-worker'" in text and "Traceback" in text
    assert sys.excepthook is not reporter.excepthook


def test_about_dialog_lists_versions_and_devices(qtbot, tmp_path, clean_logging):
    import PySide6
    import torch
    from PySide6.QtCore import qVersion

    from app.about import AboutDialog

    setup_logging(tmp_path, console=False)
    dialog = AboutDialog()
    qtbot.addWidget(dialog)
    text = dialog.text()
    for expected in (f"Weightsmith: {engine.__version__}", f"torch: {torch.__version__}", f"Qt: {qVersion()}",
                     f"PySide6: {PySide6.__version__}", "cpu:", str(tmp_path / "weightsmith.log")):
        assert expected in text
    dialog.copy_to_clipboard()
    assert QGuiApplication.clipboard().text() == text


def test_job_dialog_hides_while_the_job_runs_and_closes_when_it_ends(qtbot):
    from app.job_dialog import JobProgressDialog
    from app.workers import JobManager, JobState

    release = threading.Event()
    manager = JobManager()
    job = manager.submit("Building the demo zoo", lambda progress, cancel: release.wait(10), kind="zoo")
    dialog = JobProgressDialog(job, "First start: building the demo models.")
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.isModal()
    with qtbot.waitSignal(dialog.hidden):
        dialog.hide_button.click()
    assert not dialog.isVisible() and not job.state.finished
    release.set()
    qtbot.waitUntil(lambda: job.state is JobState.DONE)
    manager.wait(5000)


def test_job_dialog_cancel_stops_the_job(qtbot):
    from app.job_dialog import JobProgressDialog
    from app.workers import JobManager, JobState

    def work(progress, cancel) -> None:
        while not cancel.cancelled:
            threading.Event().wait(0.01)

    manager = JobManager()
    job = manager.submit("Building the demo zoo", work, kind="zoo")
    dialog = JobProgressDialog(job, "First start")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: job.state is JobState.RUNNING)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: job.state is JobState.CANCELLED)
    qtbot.waitUntil(lambda: not dialog.isVisible())
    manager.wait(5000)


def test_app_icon_in_every_format():
    for size in (16, 32, 48, 128, 256, 512):
        image = QImage(str(ICONS / f"weightsmith-{size}.png"))
        assert (image.width(), image.height()) == (size, size)
    assert (ICONS / "weightsmith.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"
    assert (ICONS / "weightsmith.icns").read_bytes()[:4] == b"icns"
    assert (ICONS / "weightsmith.svg").read_text(encoding="utf-8").lstrip().startswith("<svg")


def test_desktop_entry():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "packaging" / "linux" / "weightsmith.desktop", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Exec"].startswith("weightsmith")
    assert section["Icon"] == "weightsmith" and section["Terminal"] == "false"
    assert section["Categories"].endswith(";")
