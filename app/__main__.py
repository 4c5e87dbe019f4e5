"""``python -m app``: start the Weightsmith studio (or take a screenshot of it, or test the install, and exit).

Start-up order keeps the first pixels early: logging first, then the Qt application with the crash
hooks and the theme, then a window (``app.startup_window``) while torch and the studio's modules load
on a background thread; the studio window then takes its place.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import engine

THEMES = ("dark", "light")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightsmith-gui", description="Weightsmith: a studio for merging models.")
    parser.add_argument("project", nargs="?", help="project (.wsproj) or recipe (.json) to open")
    parser.add_argument("--project", dest="project_opt", metavar="FILE", help="same as the positional argument")
    parser.add_argument("--theme", choices=THEMES, help="colour theme (default: the saved setting)")
    parser.add_argument("--version", action="version", version=f"Weightsmith {engine.__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="offscreen: open the window, merge and evaluate tiny generated models, check the "
                             "numbers; exit code 0 when the installation works")
    shot = parser.add_argument_group("screenshots")
    shot.add_argument("--screenshot", metavar="OUT.png", type=Path,
                      help="open the window, wait until it is idle, save a PNG and exit")
    shot.add_argument("--select", metavar="NODE", help="select this node first (the inspector shows it)")
    shot.add_argument("--window-size", metavar="WxH", default="1600x1000", help="window size of the screenshot")
    shot.add_argument("--run", action="store_true", help="start a run and capture it in progress")
    shot.add_argument("--capture", choices=("window", "inspector", "library"), default="window",
                      help="what to capture (default: the whole window)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from app.logging_setup import setup_logging

    log_path = setup_logging(console=not args.self_test)  # the self-test prints its own lines
    if args.self_test:
        from app.devtools.selftest import main as self_test

        return self_test()

    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.crash import CrashReporter, enable_fault_log
    from app.settings import AppPaths, Settings

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Weightsmith")
    app.setOrganizationName("Weightsmith")
    app.setDesktopFileName("weightsmith")
    app.setWindowIcon(theme.app_icon())
    CrashReporter(log_path, app).install()
    enable_fault_log(log_path.parent)
    paths = AppPaths.default()
    settings = Settings.load(paths)
    if args.theme:
        settings.theme = args.theme
    theme.apply_theme(app, settings.theme)
    project = args.project_opt or args.project
    if args.screenshot:
        return screenshot(app, args, paths, settings, project)
    from app.startup_window import launch

    shell = launch(paths, settings, project)  # noqa: F841 - holds the studio window
    return app.exec()


def screenshot(app, args: argparse.Namespace, paths, settings, project: str | None) -> int:
    """``--screenshot``: build the studio at the asked size (no start-up window), capture it, exit."""
    from app.devtools.screenshot import ScreenshotTaker
    from app.main_window import MainWindow
    from app.startup import open_startup_project

    window = MainWindow(paths, settings)
    width, _, height = args.window_size.partition("x")
    window.resize(int(width), int(height))
    window.show()
    open_startup_project(window, project)
    taker = ScreenshotTaker(window, args.screenshot, select=args.select, run=args.run, part=args.capture)
    taker.start()
    app.exec()
    return taker.exit_code


if __name__ == "__main__":
    sys.exit(main())
