"""The main window: Library (left), Graph (centre), Inspector (right), Tasks & Log, Results and Analysis (bottom).

The window owns the ``app.document.Document`` — the one recipe the session edits, the undo stack every
edit goes through, the selection, the job manager that runs merges off the UI thread and live tuning —
and lays out the panels, each built on that document. It wires what is not the document's: library
entries become Checkpoint nodes, validation problems reach the Inspector, job errors become a dialog
and a log line, the results' notes reach the status bar. It also owns the project: New/Open/Save,
recent files, autosave and the recovery offer after a crash.
"""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QModelIndex, QPointF, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QFrame, QHBoxLayout, QLabel, QMainWindow,
                               QMessageBox, QPushButton, QSplitter, QToolBar, QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.about import AboutDialog
from app.analysis import AnalysisPanel
from app.demos import DEMOS, IMAGE, LM, Demo, open_demo
from app.document import Document
from app.formatting import human_count
from app.generation_panel import GenerationPanel
from app.graph import GraphScene, GraphView
from app.graph.items import NodeItem
from app.graph.palette import PaletteEntry, palette_entries
from app.guidance import NoticeBanner, ShortcutsDialog
from app.inspector.panel import InspectorPanel
from app.library import LibraryPanel
from app.library.model import PathRole
from app.log_panel import LogPanel
from app.logging_setup import log_file
from app.project import SUFFIX, Autosave, Project, Recovery
from app.plugin_trust import PluginGate
from app.results import ResultsPanel
from app.results.records import evaluation_records
from app.scrolling import scrollable
from app.settings import AppPaths, Settings
from app.settings_dialog import SettingsDialog
from app.status import StatusFields
from app.tasks_panel import TasksPanel
from app.workers import Job
from engine.errors import EngineInputError
from engine.graph import Recipe, RunResult, nodes_of, run_recipe, validate
from engine.graph.node_kinds import EVALUATE, MERGE, SAVE, node_kind, source_paths
from engine.graph.mergekit import export_mergekit, import_mergekit_file
from engine.methods import get_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphRunOutcome:
    """What Run produced (the Save nodes' outputs and the Evaluate nodes' runs) and the recipe that ran."""

    result: RunResult
    recipe: dict[str, Any]

AUTOSAVE_MS = 15_000
PROJECT_FILTER = (f"Weightsmith projects (*{SUFFIX});;Recipes (*.json);;"
                  "Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;All files (*)")


class RecoveryBanner(QFrame):
    """"Weightsmith did not close properly" with Recover / Discard, shown above the graph."""

    def __init__(self, recovery: Recovery, parent: QWidget | None = None):
        super().__init__(parent, objectName="Banner")
        self.recovery = recovery
        icon = QLabel()
        icon.setPixmap(theme.icon("warning", "warn").pixmap(18, 18))
        text = QLabel(f"Weightsmith did not close properly. Unsaved work can be recovered: {recovery.describe()}.",
                      wordWrap=True)
        self.recover_button = QPushButton("Recover", objectName="Primary")
        self.discard_button = QPushButton("Discard")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 8, 6)
        layout.addWidget(icon)
        layout.addWidget(text, 1)
        layout.addWidget(self.recover_button)
        layout.addWidget(self.discard_button)


class MainWindow(QMainWindow):
    """The Weightsmith studio window. ``paths`` and ``settings`` default to the user's own."""

    runFinished = Signal(object)  # the Job of a run, after it ended (any way)

    def __init__(self, paths: AppPaths | None = None, settings: Settings | None = None):
        super().__init__()
        self.paths = paths or AppPaths.default()
        self.settings = settings or Settings.load(self.paths)
        self.project_path: Path | None = None
        self.error_box: QMessageBox | None = None
        self.notice: NoticeBanner | None = None
        self.run_job: Job | None = None
        self._autosaved_revision = 0
        self._recovered = False
        self._unreadable: dict[str, tuple[int, str]] = {}  # checkpoint path → (mtime, why it cannot be read)
        self.setWindowIcon(theme.app_icon())
        self.setDockNestingEnabled(True)

        self.document = Document(device=self.settings.device, parent=self)
        self.recipe = self.document.recipe
        self.undo_stack = self.document.undo_stack
        self.jobs = self.document.jobs
        self.scene = GraphScene(self.document, self)
        self.view = GraphView(self.scene)
        self.library = LibraryPanel(self.jobs)
        self.inspector = InspectorPanel(self.document, describe_checkpoint=self._describe_checkpoint,
                                        layers_of=self._layers_of)
        self.tasks = TasksPanel(self.document)
        self.results_panel = ResultsPanel(self.document)
        self.analysis_panel = AnalysisPanel(self.document)
        self.generation_panel = GenerationPanel(self.document, records=lambda: [  # completions join these runs
            *self.document.results, *self.results_panel.trail.records(),
            *([self.results_panel.model.live] if self.results_panel.model.live is not None else [])])
        self.log_panel = LogPanel()
        self.log_panel.attach()

        self._build_central()
        self._build_docks()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self.status = StatusFields(self.statusBar())
        self.status.set_device(self.settings.device)
        self.latency = QLabel("slider → plot –")
        self.latency.setToolTip("Time from the last slider value to the redrawn results plot")
        self.statusBar().addPermanentWidget(self.latency)

        self.document.nodeAdded.connect(self._library_follow_graph)
        self.document.paramsChanged.connect(self._on_params_changed)
        self.document.recipeReplaced.connect(self._library_follow_graph)
        self.scene.problemsChanged.connect(self.inspector.set_problems)
        self.scene.connectionRefused.connect(self._on_connection_refused)
        self.library.errorOccurred.connect(self.show_error)
        self.library.inspectFailed.connect(self._on_checkpoint_unreadable)
        self.library.addToGraphRequested.connect(self.add_checkpoints_to_graph)
        self.library.model.dataChanged.connect(self._refresh_checkpoint_inspector)
        self.inspector.sweepRequested.connect(self._sweep_parameter)
        self.results_panel.latencyChanged.connect(lambda ms: self.latency.setText(f"slider → plot {ms:.0f} ms"))
        self.results_panel.statusMessage.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.undo_stack.cleanChanged.connect(self._update_title)
        self.jobs.busyChanged.connect(self._on_busy_changed)

        self.autosave = Autosave(self.paths.autosave_dir)
        self._autosave_timer = QTimer(self, interval=AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave_now)
        self._autosave_timer.start()
        self.plugin_gate = PluginGate(self)  # asks before a plugin task's code may run

        self.resize(1500, 920)
        self._restore_window_state()
        self._update_title()
        self._on_busy_changed(False)

    # ---- construction ----------------------------------------------------------------------------
    def _build_central(self) -> None:
        self.banner_area = QVBoxLayout()
        self.banner_area.setContentsMargins(6, 0, 6, 0)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(self.banner_area)
        layout.addWidget(self.view, 1)
        self.setCentralWidget(central)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self, objectName=name)
        dock.setWidget(scrollable(widget))
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                         | QDockWidget.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def bottom_docks(self) -> list[QDockWidget]:
        """The docks of the bottom area (tasks, results, analysis)."""
        return [d for d in self.findChildren(QDockWidget) if self.dockWidgetArea(d) == Qt.BottomDockWidgetArea]

    def toggle_bottom_panel(self) -> None:
        """Collapse the bottom panel (its docks hide; the graph and inspector get the height) or bring it back."""
        docks = self.bottom_docks()
        show = not any(d.isVisible() for d in docks)
        for dock in docks:
            dock.setVisible(show)
        if show and docks:
            self.results_dock.raise_()

    def _build_docks(self) -> None:
        self.library_dock = self._dock("Library", "LibraryDock", self.library, Qt.LeftDockWidgetArea)
        self.inspector_dock = self._dock("Inspector", "InspectorDock", self.inspector, Qt.RightDockWidgetArea)
        split = QSplitter(Qt.Horizontal, childrenCollapsible=False)
        split.addWidget(self.tasks)
        split.addWidget(self.log_panel)
        split.setSizes([500, 700])
        self.tasks_dock = self._dock("Tasks && Log", "TasksDock", split, Qt.BottomDockWidgetArea)
        self.results_dock = self._dock("Results", "ResultsDock", self.results_panel, Qt.BottomDockWidgetArea)
        self.analysis_dock = self._dock("Analysis", "AnalysisDock", self.analysis_panel, Qt.BottomDockWidgetArea)
        self.analysis_dock.visibilityChanged.connect(self.analysis_panel.set_shown)
        self.tabifyDockWidget(self.tasks_dock, self.results_dock)
        self.generation_dock = self._dock("Generation", "GenerationDock", self.generation_panel,
                                          Qt.BottomDockWidgetArea)
        self.generation_dock.visibilityChanged.connect(self.generation_panel.set_shown)
        self.tabifyDockWidget(self.results_dock, self.analysis_dock)
        self.tabifyDockWidget(self.analysis_dock, self.generation_dock)
        self.results_dock.raise_()
        self.resizeDocks([self.library_dock, self.inspector_dock], [480, 400], Qt.Horizontal)
        self.resizeDocks([self.tasks_dock], [230], Qt.Vertical)

    def _act(self, text: str, slot, shortcut: QKeySequence | str | None = None, icon: str | None = None,
             role: str = "icon", tip: str | None = None) -> QAction:
        act = QAction(text, self)
        if icon:
            act.setIcon(theme.icon(icon, role))
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        act.setToolTip(tip or text.replace("&", "").rstrip("…"))
        act.setStatusTip(tip or "")
        act.triggered.connect(lambda _checked=False: slot())
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.new_action = self._act("&New Project", self.new_project, K.New, "new")
        self.open_action = self._act("&Open…", self.open_project, K.Open, "open", tip="Open a project or recipe")
        self.save_action = self._act("&Save", self.save_project, K.Save, "save")
        self.save_as_action = self._act("Save &As…", self.save_project_as, K.SaveAs)
        self.add_files_action = self.library.add_files_action
        self.add_files_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.add_folder_action = self.library.add_folder_action
        self.settings_action = self._act("Se&ttings…", self.edit_settings, K.Preferences, "settings")
        self.quit_action = self._act("&Quit", self.close, K.Quit)
        self.about_action = self._act("&About Weightsmith", self.show_about, icon="info",
                                      tip="Versions of Weightsmith, torch and Qt, the compute devices, the log file")
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        self.log_folder_action = self._act("Open &Log Folder", self.open_log_folder, icon="log",
                                           tip="Show the folder of the log file (attach it to bug reports)")
        self.undo_action = self.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcut(K.Undo)
        self.undo_action.setIcon(theme.icon("undo"))
        self.redo_action = self.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcut(K.Redo)
        self.redo_action.setIcon(theme.icon("redo"))
        self.delete_action = self._act("&Delete", self.delete_selection, K.Delete, "delete")
        self.copy_action = self._act("&Copy", self.view.copy_to_clipboard, K.Copy, "copy")
        self.paste_action = self._act("&Paste", self.view.paste_from_clipboard, K.Paste, "paste")
        self.select_all_action = self._act("Select &All", self.select_all_nodes, K.SelectAll, "select-all")
        self.fit_action = self._act("Zoom to &Fit", self.view.zoom_to_fit, "Ctrl+0", "zoom-fit")
        self.zoom_in_action = self._act("Zoom &In", self.view.zoom_in, K.ZoomIn, "zoom-in")
        self.zoom_out_action = self._act("Zoom &Out", self.view.zoom_out, K.ZoomOut, "zoom-out")
        self.palette_action = self._act("Add &Node…", lambda: self.view.open_palette(), None, "add",
                                        tip="Add a node (Tab or double-click in the graph)")
        self.run_action = self._act("&Run", self.run_graph, "F5", "run", "ok",
                                    tip="Run the graph: write every Save node (F5)")
        self.cancel_action = self._act("&Cancel Run", self.cancel_run, "Esc", "stop", "err",
                                       tip="Cancel the running task (Esc)")
        self.validate_action = self._act("&Check Graph", self.check_graph, "F7", "check",
                                         tip="Check the graph, reading every checkpoint's header (F7)")
        self.bottom_panel_action = self._act("&Bottom Panel", self.toggle_bottom_panel, "Ctrl+J",
                                             tip="Show or hide the Tasks, Results and Analysis panels (Ctrl+J)")
        self.auto_layout_action = self._act("Auto-&layout", self.auto_layout, "Ctrl+Shift+L", "zoom-fit",
                                            tip="Arrange the nodes by depth, inputs left of what they feed (undoable)")
        self.import_yaml_action = self._act("&Import mergekit YAML…", self.import_mergekit_yaml,
                                            tip="Open a mergekit YAML config as a new recipe")
        self.export_yaml_action = self._act("&Export mergekit YAML…", self.export_mergekit_yaml,
                                            tip="Write this recipe as a mergekit YAML config")
        self.shortcuts_action = self._act("&Keyboard Shortcuts", self.show_shortcuts, "Ctrl+/",
                                          tip="Every keyboard shortcut")
        self.docs_action = self._act("&Documentation", self.open_docs, "F1", "info",
                                     tip="Open Weightsmith's documentation")
        self.zoo_folder_action = self._act("Show Demo &Zoo Folder", self.open_zoo_folder, icon="open",
                                           tip="Open the folder holding the demo model zoo and its recipes")
        self.demo_actions = {demo.key: self._act(demo.title, lambda _c=False, d=demo: open_demo(self, d), icon="open",
                                                 tip=f"Open the {demo.title.replace('&', '').lower()}, building it "
                                                     "first if needed (no download)")
                             for demo in DEMOS}
        self.dark_action = self._act("&Dark", lambda: self.set_theme("dark"))
        self.light_action = self._act("&Light", lambda: self.set_theme("light"))
        for act in (self.dark_action, self.light_action):
            act.setCheckable(True)
        self.dark_action.setChecked(self.settings.theme == "dark")
        self.light_action.setChecked(self.settings.theme == "light")

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action])
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addMenu("Open &Demo").addActions(list(self.demo_actions.values()))
        file_menu.addActions([self.save_action, self.save_as_action])
        file_menu.addSeparator()
        file_menu.addActions([self.import_yaml_action, self.export_yaml_action])
        file_menu.addSeparator()
        file_menu.addActions([self.add_files_action, self.add_folder_action])
        file_menu.addSeparator()
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        edit = bar.addMenu("&Edit")
        edit.addActions([self.undo_action, self.redo_action])
        edit.addSeparator()
        edit.addActions([self.copy_action, self.paste_action, self.delete_action, self.select_all_action])

        graph = bar.addMenu("&Graph")
        graph.addAction(self.palette_action)
        add_menu = graph.addMenu("Add")
        merge_menu, groups = None, {}
        for entry in palette_entries():
            kind = node_kind(entry.node_type)
            if kind.method_param:
                merge_menu = merge_menu or add_menu.addMenu(theme.icon(kind.icon), kind.label)
                group = get_method(str(entry.params[kind.method_param])).group
                groups[group] = groups.get(group) or merge_menu.addMenu(group)
                target, label = groups[group], entry.label.split("▸")[-1].strip()
            else:
                target, label = add_menu, entry.label
            act = target.addAction(label)
            act.setToolTip(entry.help)
            act.triggered.connect(lambda _c=False, e=entry: self.add_node(e))
        graph.addAction(self.auto_layout_action)
        graph.addSeparator()
        graph.addActions([self.validate_action, self.run_action, self.cancel_action])

        view = bar.addMenu("&View")
        view.addActions([self.fit_action, self.zoom_in_action, self.zoom_out_action])
        view.addSeparator()
        for dock in (self.library_dock, self.inspector_dock, self.tasks_dock, self.results_dock, self.analysis_dock,
                     self.generation_dock):
            view.addAction(dock.toggleViewAction())
        view.addAction(self.bottom_panel_action)
        view.addSeparator()
        themes = view.addMenu("&Theme")
        themes.addActions([self.dark_action, self.light_action])

        help_menu = bar.addMenu("&Help")
        help_menu.addActions([self.docs_action, self.shortcuts_action, self.zoo_folder_action])
        help_menu.addSeparator()
        help_menu.addActions([self.log_folder_action, self.about_action])

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main", objectName="MainToolbar", movable=False)
        bar.setToolButtonStyle(Qt.ToolButtonIconOnly)
        bar.addActions([self.new_action, self.open_action, self.save_action])
        bar.addSeparator()
        bar.addActions([self.undo_action, self.redo_action])
        bar.addSeparator()
        bar.addActions([self.palette_action, self.fit_action])
        bar.addSeparator()
        run = QToolButton(objectName="RunButton")
        run.setDefaultAction(self.run_action)
        run.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        bar.addWidget(run)
        bar.addAction(self.cancel_action)
        spacer = QWidget()
        spacer.setSizePolicy(spacer.sizePolicy().horizontalPolicy().Expanding,
                             spacer.sizePolicy().verticalPolicy().Preferred)
        bar.addWidget(spacer)
        bar.addAction(self.settings_action)
        self.addToolBar(Qt.TopToolBarArea, bar)

    # ---- messages --------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        """A readable, non-blocking error dialog, and the same text in the log; the app keeps working."""
        log.error("%s: %s", title, message)
        if self.error_box is not None and self.error_box.isVisible():
            self.error_box.setText(f"{self.error_box.text()}\n\n{title}: {message}")
            return
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setWindowModality(Qt.WindowModal)
        box.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box.open()
        self.error_box = box

    # ---- graph -----------------------------------------------------------------------------------
    def _view_centre(self) -> QPointF:
        return self.view.mapToScene(self.view.viewport().rect().center())

    def add_node(self, entry: PaletteEntry) -> str:
        """Add a palette entry's node at the view's centre (a Save node starts from the settings)."""
        if entry.node_type == SAVE.name:
            out = Path(self.settings.output_dir) / f"{self.recipe.name}-merged"
            entry = PaletteEntry(entry.label, SAVE.name, {"path": str(out), "dtype": self.settings.save_dtype,
                                                          **entry.params}, entry.help)
        return self.view.add_entry(entry)

    def auto_layout(self) -> None:
        """Arrange every node by depth (one undo step) and show them all."""
        if self.scene.auto_layout_all():
            self.view.zoom_to_fit()

    def add_checkpoints_to_graph(self, paths: list[str]) -> list[str]:
        """One Checkpoint node per library path, placed in the middle of the view."""
        return self.scene.add_checkpoints_at(paths, self._view_centre() - QPointF(100, 40))

    def delete_selection(self) -> None:
        if self.library.table.hasFocus():
            self.library.remove_selected()
        else:
            self.scene.delete_selected()

    def select_all_nodes(self) -> None:
        for item in self.scene.items():
            if isinstance(item, NodeItem):
                item.setSelected(True)

    def check_graph(self) -> Job:
        """Validate the graph with every checkpoint's header opened (in a worker); problems go to the
        nodes (red, with the reason as tooltip), the log and the status bar."""
        snapshot, revision = self.recipe.copy(), self.document.revision
        self.statusBar().showMessage("Checking the graph (reading the checkpoints' headers)…")
        job = self.jobs.submit("Check graph", lambda _progress, _cancel: validate(snapshot, open_files=True),
                               kind="inspect", visible=False, heavy=False)
        job.succeeded.connect(lambda problems: self._on_graph_checked(problems, revision))
        job.failed.connect(lambda msg: self.statusBar().showMessage(f"Could not check the graph: {msg}", 8000))
        return job

    def _on_graph_checked(self, problems: list, revision: int) -> None:
        if revision != self.document.revision:
            self.statusBar().showMessage("The graph changed while it was checked; press F7 again", 6000)
            return
        structural = set(validate(self.recipe, open_files=False))
        found: dict[str, list[str]] = {}
        for p in problems:
            log.warning("%s%s", f"[{p.node_id}] " if p.node_id else "", p.message)
            if p.node_id in self.recipe.nodes and p not in structural:
                found.setdefault(p.node_id, []).append(p.message)
        for nid in list(self.scene.file_problems) + list(found):
            self.scene.set_file_problems(nid, found.get(nid, []))
        self.statusBar().showMessage(f"{len(problems)} problem(s) in the graph; see the log and the red nodes"
                                     if problems else "The graph is ready to run", 8000)

    def _on_checkpoint_unreadable(self, path: str, message: str) -> None:
        """A checkpoint the graph uses could not be read: mark its nodes and say so, without a dialog."""
        try:
            self._unreadable[path] = (Path(path).stat().st_mtime_ns, message)
        except OSError:
            pass
        nodes = self.scene.nodes_using(path)
        for nid in nodes:
            self.scene.set_file_problems(nid, [f"cannot read {path}: {message}"])
        if nodes:
            log.warning("Cannot read %s (used by %s): %s", path, ", ".join(nodes), message)
            self.statusBar().showMessage(f"Cannot read {Path(path).name}: {message}", 8000)

    def _on_params_changed(self, node_id: str, _key: str) -> None:
        """A checkpoint node's new file joins the library; a plugin file newly named by an Evaluate node
        is asked about (once the edit has settled)."""
        if node_id in source_paths(self.recipe):
            self._library_follow_graph()
        node = self.recipe.nodes.get(node_id)
        if node is not None and node.kind is EVALUATE:
            QTimer.singleShot(0, self._confirm_plugins_now)

    def _library_follow_graph(self, *_node_id: str) -> None:
        """Checkpoints used in the graph appear in the library too (inspected there)."""
        listed = set(self.library.model.paths())
        missing = []
        for nid, written in source_paths(self.recipe).items():
            path = self.recipe.resolve_path(written).resolve()
            if str(path) in listed or not path.exists() or str(path) in missing:
                continue
            known = self._unreadable.get(str(path))
            if known is not None and known[0] == path.stat().st_mtime_ns:  # read before: mark, don't re-read
                QTimer.singleShot(0, lambda n=nid, m=f"cannot read {path}: {known[1]}":
                                  self.scene.set_file_problems(n, [m]))
            else:
                missing.append(str(path))
        if missing:
            self.library.add_paths(missing, report=False)

    def _describe_checkpoint(self, path: str) -> str | None:
        entry = self.library.model.entry(str(Path(path).resolve()))
        if entry is None or entry.inspection is None:
            return None
        s = entry.inspection.summary
        text = html.escape(f"{s.format} · {human_count(s.num_params)} parameters · {s.num_layers} layers")
        if entry.compat is not None and not entry.compat.compatible:
            why = html.escape(f"Does not fit the library's base: {entry.compat.reason()}")
            text += f'<br><span style="color:{theme.color("warn").name()}">{why}</span>'
        return text

    def _layers_of(self, path: str) -> int:
        entry = self.library.model.entry(str(Path(path).resolve()))
        return entry.inspection.summary.num_layers if entry is not None and entry.inspection else 0

    def _sweep_parameter(self, node_id: str, path: str) -> None:
        """"Sweep this parameter…" from the Inspector: the Results panel asks for the range."""
        self.results_panel.sweep_parameter(node_id, path)
        self.results_dock.raise_()

    def _on_connection_refused(self, reason: str) -> None:
        self.statusBar().showMessage(f"Cannot connect: {reason}", 6000)

    def _refresh_checkpoint_inspector(self, top_left: QModelIndex, *_rest) -> None:
        """A shown Checkpoint node's description follows its library entry (inspected, fit checked)."""
        node = self.recipe.nodes.get(self.inspector.node_id)
        path = source_paths(self.recipe).get(node.id) if node is not None else None
        if path is None:
            return
        if top_left.data(PathRole) == str(self.recipe.resolve_path(path).resolve()):
            self.inspector.show_node(node.id)

    # ---- running ---------------------------------------------------------------------------------
    def run_graph(self) -> Job | None:
        """Write every Save node and score every Evaluate node of the graph in a worker; progress shows
        in the Tasks panel and evaluation results go into the results history."""
        if self.jobs.busy:
            self.statusBar().showMessage("Wait for the running task to finish (or cancel it with Esc)", 4000)
            return None
        problems = validate(self.recipe, open_files=False)
        if problems:
            self.show_error("The graph cannot run yet",
                            "\n".join(f"• {p.node_id + ': ' if p.node_id else ''}{p.message}" for p in problems))
            return None
        saves = [self.recipe.nodes[nid] for nid in nodes_of(self.recipe, SAVE)]
        evaluates = [self.recipe.nodes[nid] for nid in nodes_of(self.recipe, EVALUATE)]
        if not saves and not evaluates:
            self.show_error("Nothing to run", "Add a Save or an Evaluate node and connect a model to it.")
            return None
        existing = [self.recipe.resolve_path(n.params["path"]) for n in saves
                    if self.recipe.resolve_path(n.params["path"]).exists()]
        force = False
        if existing:
            answer = QMessageBox.question(self, "Replace existing output?",
                                          "These output folders exist and will be replaced:\n"
                                          + "\n".join(str(p) for p in existing),
                                          QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel)
            if answer != QMessageBox.Yes:
                return None
            force = True
        self.plugin_gate.confirm(self.recipe.to_json(), self.recipe.base_dir)
        snapshot = self.recipe.copy()
        device = self.settings.device
        title = " + ".join(filter(None, (
            ("Merge → " + ", ".join(Path(str(n.params["path"])).name for n in saves)) if saves else "",
            ("Evaluate " + ", ".join(n.id for n in evaluates)) if evaluates else "")))

        def work(progress, cancel) -> GraphRunOutcome:
            from engine.evaluation import EvaluationService

            result = run_recipe(snapshot, device=device, progress=progress, cancel=cancel, force=force,
                                scorer=EvaluationService(device=device))
            return GraphRunOutcome(result, snapshot.to_json())

        job = self.jobs.submit(title, work, kind="merge")
        job.succeeded.connect(self._on_run_succeeded)
        job.failed.connect(lambda msg: self.show_error("The run failed", msg))
        job.cancelled.connect(lambda: log.info("Run cancelled; no output was written"))
        job.stateChanged.connect(lambda _s, j=job: j.state.finished and self.runFinished.emit(j))
        self.run_job = job
        log.info("Running %s on %s", title, self.status.device.label.text())
        self.tasks_dock.raise_()
        return job

    def _on_run_succeeded(self, outcome: "GraphRunOutcome") -> None:
        result = outcome.result
        if result.outputs:
            self.status.set_last_run(result.seconds)
        for w in result.warnings:
            log.warning(w)
        for save_id, out in result.outputs.items():
            log.info("Saved %s → %s", save_id, out)
        added = 0
        if result.evaluations:
            for record in evaluation_records({"runs": result.evaluations}, outcome.recipe):
                added += bool(self.results_panel.add_run(record))
            for run in result.evaluations:
                log.info("Evaluated %s: average accuracy %.4f", run["name"], run["average"].get("accuracy", float("nan")))
            self.results_dock.raise_()
        written = len(result.outputs)
        self.statusBar().showMessage(f"Done: {written} model(s) written, {added} run(s) added to the results", 8000)
        if written:
            out = next(iter(result.outputs.values()))
            self.show_notice(f"Run finished in {result.seconds:.1f} s: {written} model(s) written to {out}",
                             [("Open output folder", lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(out))))],
                             icon="check")

    def cancel_run(self) -> None:
        """Cancel the newest running or queued task."""
        active = self.jobs.active()
        if active:
            active[-1].cancel()
            self.statusBar().showMessage(f"Cancelling {active[-1].title}…", 4000)

    def _on_busy_changed(self, busy: bool) -> None:
        self.cancel_action.setEnabled(busy)
        self.run_action.setEnabled(not busy)

    # ---- projects --------------------------------------------------------------------------------
    def project_state(self) -> Project:
        """The open project as it would be saved."""
        centre = self._view_centre()
        layout = {"graph": {"zoom": self.view.zoom(), "centre": [centre.x(), centre.y()]},
                  "docks": base64.b64encode(bytes(self.saveState())).decode("ascii")}
        return Project(self.recipe.to_json(), layout, self.library.to_json(), list(self.document.results),
                       dict(self.document.generation))

    def apply_project(self, project: Project, path: Path | None, *, recovered: bool = False) -> None:
        """Replace the open project (the undo history starts afresh)."""
        self.project_path = path
        self._recovered = recovered
        self.document.generation = dict(project.generation)
        self.document.open(Recipe.from_json(project.recipe, path.parent if path else None), project.results)
        graph_paths = [str(self.recipe.resolve_path(p)) for p in source_paths(self.recipe).values()]
        library = {**project.library, "base": project.library.get("base") or self._graph_base()}
        self.library.load_json(library, graph_paths)
        self.inspector.show_node("")
        docks = project.layout.get("docks")
        if docks:
            self.restoreState(QByteArray(base64.b64decode(docks)))
        graph = project.layout.get("graph")
        if graph:
            self.view.set_zoom(float(graph.get("zoom", 1.0)))
            self.view.centerOn(*graph.get("centre", (0, 0)))
        else:
            QTimer.singleShot(0, self.view.zoom_to_fit)
        self._autosaved_revision = self.document.revision
        self._update_title()

    def _graph_base(self) -> str | None:
        """The checkpoint on the first merge's base input: the natural base for the library's fits."""
        sources = source_paths(self.recipe)
        for nid in nodes_of(self.recipe, MERGE):
            base = self.recipe.inputs(nid, "base")
            if base and base[0] in sources:
                return str(self.recipe.resolve_path(sources[base[0]]))
        return None

    def new_project(self) -> None:
        if self.maybe_save():
            self.apply_project(Project(Recipe("untitled").to_json()), None)

    def open_project(self, path: str | Path | None = None) -> bool:
        """Open a ``.wsproj`` project or a recipe ``.json`` (asks for a file when ``path`` is None); a
        checkpoint file or folder goes to the library instead."""
        if path is None:
            chosen, _ = QFileDialog.getOpenFileName(self, "Open project, recipe or checkpoint", "", PROJECT_FILTER)
            if not chosen:
                return False
            path = chosen
        path = Path(path).resolve()
        if path.is_dir() or path.suffix not in (SUFFIX, ".json") or path.name.endswith(".index.json"):
            self.library.add_paths([path])
            return True
        if not self.maybe_save():
            return False
        try:
            project = Project.load(path)
            self.plugin_gate.confirm(project.recipe, path.parent)  # before anything could load a plugin
            self.apply_project(project, path if path.suffix == SUFFIX else None)
        except EngineInputError as exc:
            self.show_error("Cannot open the project", str(exc))
            return False
        self.settings.add_recent(path)
        log.info("Opened %s", path)
        return True

    def save_project(self) -> bool:
        if self.project_path is None:
            return self.save_project_as()
        return self._write_project(self.project_path)

    def save_project_as(self) -> bool:
        start = str(self.project_path or Path.home() / f"{self.recipe.name}{SUFFIX}")
        chosen, _ = QFileDialog.getSaveFileName(self, "Save project", start, PROJECT_FILTER)
        if not chosen:
            return False
        path = Path(chosen)
        if path.suffix != SUFFIX:
            path = path.with_suffix(SUFFIX)
        return self._write_project(path)

    def _write_project(self, path: Path) -> bool:
        try:
            self.project_state().save(path)
        except OSError as exc:
            self.show_error("Cannot save the project", f"{path}: {exc.strerror or exc}")
            return False
        self.project_path = path.resolve()
        self.recipe.base_dir = self.project_path.parent
        self.undo_stack.setClean()
        self._recovered = False
        self.settings.add_recent(self.project_path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    @property
    def modified(self) -> bool:
        return not self.undo_stack.isClean() or self._recovered

    def show_about(self) -> None:
        AboutDialog(self).exec()

    def open_log_folder(self) -> None:
        path = log_file()
        if path is None:
            self.statusBar().showMessage("There is no log file: logging goes to the terminal only", 6000)
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))

    def show_shortcuts(self) -> ShortcutsDialog:
        dialog = ShortcutsDialog(self.findChildren(QAction), self)
        dialog.show()
        return dialog

    def open_docs(self) -> None:
        """Open the README (which links the docs/ folder) of this copy, if it has one."""
        readme = Path(__file__).resolve().parent.parent / "README.md"
        if readme.is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(readme)))
        else:
            self.statusBar().showMessage("This copy has no documentation files; see README.md in the source", 8000)

    def open_zoo_folder(self) -> None:
        zoo = self.paths.zoo_dir
        if zoo.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(zoo)))
        else:
            self.statusBar().showMessage(f"The demo zoo is not built yet (it goes to {zoo})", 8000)

    def show_notice(self, text: str, buttons=(), icon: str = "info") -> NoticeBanner:
        """A dismissible notice above the graph (replacing the previous one)."""
        if self.notice is not None:
            self.notice.dismiss()
        self.notice = NoticeBanner(text, buttons, icon)
        self.notice.destroyed.connect(lambda *_a, n=self.notice: self.notice is n and setattr(self, "notice", None))
        self.banner_area.addWidget(self.notice)
        self.notice.show()
        return self.notice

    def show_demo_hint(self, demo: Demo = IMAGE) -> None:
        """On a demo project: select its merge node and say what to try; the image demo's hint offers the
        language-model demo."""
        merges = nodes_of(self.recipe, MERGE)
        if not merges:
            return
        merge = self.recipe.nodes[merges[0]]
        self.scene.select_node(merge.id)
        experts = len(self.recipe.inputs(merge.id, "models"))
        buttons = [("Language-model demo", lambda: open_demo(self, LM))] if demo is IMAGE else []
        self.show_notice(f"This is the demo: {experts} experts merged by '{merge.id}' (selected). {demo.hint}; F5 "
                         "runs the merge and the full evaluation; File ▸ Add Checkpoint Files… brings your own "
                         "models." + (" A language-model demo is one click away (File ▸ Open Demo)."
                                      if demo is IMAGE else ""), buttons)
        self.statusBar().showMessage("Try moving λ in the Inspector on the right", 15_000)

    def import_mergekit_yaml(self, path: str | Path | None = None) -> bool:
        """Open a mergekit YAML config as a new, unsaved recipe."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import mergekit YAML", "", "mergekit YAML (*.yml *.yaml)")
            if not path:
                return False
        if not self.maybe_save():
            return False
        try:
            recipe = import_mergekit_file(path)
        except EngineInputError as exc:
            self.show_error("Cannot import the mergekit config", str(exc))
            return False
        self.apply_project(Project(recipe), None)
        log.info("Imported %s", path)
        return True

    def export_mergekit_yaml(self, path: str | Path | None = None) -> bool:
        """Write the recipe as a mergekit YAML config (when mergekit can express it)."""
        try:
            text = export_mergekit(self.recipe.to_json())
        except EngineInputError as exc:
            self.show_error("This recipe has no mergekit equivalent", str(exc))
            return False
        if path is None:
            start = str(Path.home() / f"{self.recipe.name}.yml")
            path, _ = QFileDialog.getSaveFileName(self, "Export mergekit YAML", start, "mergekit YAML (*.yml *.yaml)")
            if not path:
                return False
        try:
            Path(path).write_text(text, encoding="utf-8")
        except OSError as exc:
            self.show_error("Cannot write the mergekit config", f"{path}: {exc.strerror or exc}")
            return False
        self.statusBar().showMessage(f"Exported {path}", 6000)
        return True

    def maybe_save(self) -> bool:
        """Ask to save unsaved changes; False when the user cancels."""
        if not self.modified:
            return True
        answer = QMessageBox.question(self, "Unsaved changes", "Save the changes to this project first?",
                                      QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        if answer == QMessageBox.Save:
            return self.save_project()
        return answer == QMessageBox.Discard

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.settings.recent_files if Path(p).exists()]
        for p in recent:
            act = self.recent_menu.addAction(Path(p).name)
            act.setToolTip(p)
            act.triggered.connect(lambda _c=False, p=p: self.open_project(p))
        if not recent:
            self.recent_menu.addAction("No recent projects").setEnabled(False)

    def _update_title(self, *_clean) -> None:
        name = self.project_path.name if self.project_path else f"{self.recipe.name} (unsaved)"
        self.setWindowTitle(f"{name}[*] — Weightsmith")
        self.setWindowModified(self.modified)

    # ---- autosave and recovery -------------------------------------------------------------------
    def autosave_now(self) -> None:
        """Write the autosave if the recipe changed since the last one."""
        if self.document.revision == self._autosaved_revision:
            return
        try:
            self.autosave.write(self.project_state(), self.project_path)
        except OSError as exc:
            log.warning("autosave failed: %s", exc)
            return
        self._autosaved_revision = self.document.revision

    def _confirm_plugins_now(self) -> None:
        if self.plugin_gate.confirm(self.recipe.to_json(), self.recipe.base_dir):
            self.document.live.follow_default()  # the live session may now load the trusted tasks

    def offer_recovery(self) -> RecoveryBanner | None:
        """Show a banner when an earlier session left an autosave behind (it crashed)."""
        recoveries = self.autosave.recoveries()
        for note in self.autosave.set_aside:
            log.warning(note)
            self.statusBar().showMessage(note, 15000)
        if not recoveries:
            return None
        newest, older = recoveries[0], recoveries[1:]
        for r in older:
            self.autosave.forget(r)
        banner = RecoveryBanner(newest)
        banner.recover_button.clicked.connect(lambda: self._recover(banner))
        banner.discard_button.clicked.connect(lambda: self._dismiss_recovery(banner))
        self.banner_area.addWidget(banner)
        return banner

    def _recover(self, banner: RecoveryBanner) -> None:
        r = banner.recovery
        origin = Path(r.origin) if r.origin else None
        try:
            self.plugin_gate.confirm(r.project.recipe, origin.parent if origin else None)
            self.apply_project(r.project, origin, recovered=True)
        except EngineInputError as exc:
            self.show_error("Cannot recover the autosave", str(exc))
        self._dismiss_recovery(banner)
        self.statusBar().showMessage("Recovered the unsaved work; save it to keep it", 8000)

    def _dismiss_recovery(self, banner: RecoveryBanner) -> None:
        self.autosave.forget(banner.recovery)
        banner.hide()
        banner.deleteLater()

    # ---- settings and theme ----------------------------------------------------------------------
    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.settings = dialog.result_settings()
            self.status.set_device(self.settings.device)
            self.document.live.device = self.settings.device  # from the next live session on
            self.set_theme(self.settings.theme)
            self.settings.save(self.paths)

    def set_theme(self, name: str) -> None:
        self.settings.theme = name
        theme.apply_theme(QApplication.instance(), name)
        self.dark_action.setChecked(name == "dark")
        self.light_action.setChecked(name == "light")
        for w in self.findChildren(QWidget):
            w.update()
        self.results_panel.restyle()
        self.analysis_panel.restyle()

    def _restore_window_state(self) -> None:
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray(base64.b64decode(self.settings.window_geometry)))
        if self.settings.window_state:
            self.restoreState(QByteArray(base64.b64decode(self.settings.window_state)))

    # ---- closing ---------------------------------------------------------------------------------
    def confirm_cancel_jobs(self) -> bool:
        """With a merge or zoo build running, ask whether to cancel it and quit; True when none runs or
        on Yes (quick work such as analyses and inspections is cancelled without asking)."""
        active = [j for j in self.jobs.active() if j.kind in ("merge", "zoo")]
        if not active:
            return True
        what = "A merge is running" if any(j.kind == "merge" for j in active) else "The demo zoo is being built"
        answer = QMessageBox.question(self, "Quit Weightsmith?",
                                      f"{what}: cancel it and quit?\n\n" + "\n".join(j.title for j in active),
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self.confirm_cancel_jobs() or not self.maybe_save():
            event.ignore()
            return
        self.document.shutdown(10_000)  # only now: a cancelled quit keeps live tuning running
        self.autosave.discard()
        self.settings.window_geometry = base64.b64encode(bytes(self.saveGeometry())).decode("ascii")
        self.settings.window_state = base64.b64encode(bytes(self.saveState())).decode("ascii")
        try:
            self.settings.save(self.paths)
        except OSError as exc:
            log.warning("cannot save settings: %s", exc)
        self.log_panel.detach()
        self.scene.detach()
        event.accept()

